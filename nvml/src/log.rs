//! One-line stderr messages, `vgpu-nvml[<pid>]: <level>: <message>`, filtered by `VGPU_LOG`
//! (`off`, `error`, `warn` (default), `info`, `debug`), read on first use.

use std::io::Write;
use std::sync::OnceLock;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    Off,
    /// Failures the application will see.
    Error,
    /// Configuration problems and missing host facts.
    Warn,
    /// One-time events.
    Info,
    /// Detail.
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

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        std::env::var("VGPU_LOG")
            .ok()
            .and_then(|v| Level::parse(&v))
            .unwrap_or(Level::Warn)
    })
}

/// Prints one line in a single write if `at` is enabled; write errors are ignored.
pub fn emit(at: Level, message: std::fmt::Arguments<'_>) {
    if at == Level::Off || at > level() {
        return;
    }
    let line = format!(
        "vgpu-nvml[{}]: {}: {message}\n",
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
        assert_eq!(Level::parse(" Debug "), Some(Level::Debug));
        assert_eq!(Level::parse("off"), Some(Level::Off));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Warn < Level::Info);
    }
}
