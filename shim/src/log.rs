//! The shim's stderr logger: `vgpu-cuda[<pid>]: <level>: <message>`, filtered by `VGPU_LOG`
//! (off, error, warn, info, debug; default warn), read on first use, never in a constructor. The
//! logger itself is shared with the NVML facade ([`guest_cdylib::log`]).

pub use guest_cdylib::log::{Level, DEFAULT_LEVEL};

/// The shim's logger.
pub static LOGGER: guest_cdylib::log::Logger = guest_cdylib::log::Logger::new("vgpu-cuda");

/// The configured level.
pub fn level() -> Level {
    LOGGER.level()
}

/// `log!(Level::Warn, "format", args…)`
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log::LOGGER.emit($level, format_args!($($arg)+))
    };
}
pub(crate) use log;
