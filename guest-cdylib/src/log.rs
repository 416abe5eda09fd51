//! A tiny stderr logger. The level comes from `VGPU_LOG` (off, error, warn, info, debug; default
//! warn) and is read on first use, never in a constructor. Each line is
//! `<prefix>[<pid>]: <level>: <message>`, written in a single write.

use std::io::Write;
use std::sync::OnceLock;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    Off,
    /// Failures the application will see.
    Error,
    /// Unsupported calls, configuration problems, missing host facts.
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

    /// The name printed in a log line.
    pub fn label(self) -> &'static str {
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

/// One library's logger: its line prefix, and the level read from `VGPU_LOG` on first use.
///
/// ```
/// static LOGGER: guest_cdylib::log::Logger = guest_cdylib::log::Logger::new("vgpu-cuda");
/// LOGGER.emit(guest_cdylib::log::Level::Debug, format_args!("not shown at the default level"));
/// ```
#[derive(Debug)]
pub struct Logger {
    prefix: &'static str,
    level: OnceLock<Level>,
}

impl Logger {
    /// A logger whose lines start with `prefix` (`vgpu-cuda`, `vgpu-nvml`).
    pub const fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            level: OnceLock::new(),
        }
    }

    /// The configured level (`VGPU_LOG`, read once).
    pub fn level(&self) -> Level {
        *self.level.get_or_init(|| {
            std::env::var("VGPU_LOG")
                .ok()
                .and_then(|v| Level::parse(&v))
                .unwrap_or(DEFAULT_LEVEL)
        })
    }

    /// Whether a message at `at` would be printed.
    pub fn enabled(&self, at: Level) -> bool {
        at != Level::Off && at <= self.level()
    }

    /// Prints one line to stderr, in a single write, if `at` is enabled. Write errors are
    /// ignored: the application's stderr is not ours to fail on.
    pub fn emit(&self, at: Level, message: std::fmt::Arguments<'_>) {
        if !self.enabled(at) {
            return;
        }
        let line = self.line(std::process::id(), at, message);
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    /// The line `emit` writes: `<prefix>[<pid>]: <level>: <message>\n`.
    fn line(&self, pid: u32, at: Level, message: std::fmt::Arguments<'_>) -> String {
        format!("{}[{pid}]: {}: {message}\n", self.prefix, at.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse(" debug "), Some(Level::Debug));
        assert_eq!(Level::parse(" Debug "), Some(Level::Debug));
        assert_eq!(Level::parse("warning"), Some(Level::Warn));
        assert_eq!(Level::parse("trace"), Some(Level::Debug));
        assert_eq!(Level::parse("0"), Some(Level::Off));
        assert_eq!(Level::parse("off"), Some(Level::Off));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Debug);
        assert!(Level::Warn < Level::Info);
    }

    #[test]
    fn lines_carry_prefix_pid_and_level() {
        let logger = Logger::new("vgpu-nvml");
        assert_eq!(
            logger.line(42, Level::Warn, format_args!("no host {}", "facts")),
            "vgpu-nvml[42]: warn: no host facts\n"
        );
    }

    #[test]
    fn off_is_never_printed_and_levels_filter() {
        let logger = Logger::new("vgpu-cuda");
        logger.level.set(Level::Info).expect("fresh logger");
        assert!(logger.enabled(Level::Error));
        assert!(logger.enabled(Level::Info));
        assert!(!logger.enabled(Level::Debug));
        assert!(!logger.enabled(Level::Off));
    }
}
