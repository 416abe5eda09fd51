//! A tiny stderr logger. The level comes from `VGPU_LOG` (off, error, warn, info, debug; default
//! warn) and is read on first use, never in a constructor.

use std::io::Write;
use std::sync::OnceLock;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    Off,
    /// Failures the application will see.
    Error,
    /// Unsupported calls and configuration problems.
    Warn,
    /// One-time events.
    Info,
    /// Per-call detail.
    Debug,
}

impl Level {
    /// Parses a `VGPU_LOG` value; `None` for anything unknown.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value.trim().to_ascii_lowercase().as_str() {
            "off" | "0" | "none" => Self::Off,
            "error" => Self::Error,
            "warn" | "warning" => Self::Warn,
            "info" => Self::Info,
            "debug" | "trace" => Self::Debug,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

/// The level used when `VGPU_LOG` is unset or unreadable.
pub const DEFAULT_LEVEL: Level = Level::Warn;

static LEVEL: OnceLock<Level> = OnceLock::new();

/// The configured level.
pub fn level() -> Level {
    *LEVEL.get_or_init(|| {
        std::env::var("VGPU_LOG")
            .ok()
            .and_then(|v| Level::parse(&v))
            .unwrap_or(DEFAULT_LEVEL)
    })
}

/// Whether a message at `at` would be printed.
pub fn enabled(at: Level) -> bool {
    at != Level::Off && at <= level()
}

/// Prints one line to stderr, in a single write, if `at` is enabled. Write errors are ignored: the
/// application's stderr is not ours to fail on.
pub fn emit(at: Level, message: std::fmt::Arguments<'_>) {
    if !enabled(at) {
        return;
    }
    let line = format!(
        "vgpu-cuda[{}]: {}: {message}\n",
        std::process::id(),
        at.label()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// `log!(Level::Warn, "format", args…)`
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log::emit($level, format_args!($($arg)+))
    };
}
pub(crate) use log;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse(" debug "), Some(Level::Debug));
        assert_eq!(Level::parse("off"), Some(Level::Off));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Debug);
    }
}
