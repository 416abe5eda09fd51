//! The facade's stderr logger: `vgpu-nvml[<pid>]: <level>: <message>`, filtered by `VGPU_LOG`
//! (`off`, `error`, `warn` (default), `info`, `debug`), read on first use. The logger itself is
//! shared with the shim ([`guest_cdylib::log`]).

pub use guest_cdylib::log::Level;

/// The facade's logger.
pub static LOGGER: guest_cdylib::log::Logger = guest_cdylib::log::Logger::new("vgpu-nvml");

/// `log!(Level::Warn, "format", args…)`
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log::LOGGER.emit($level, format_args!($($arg)+))
    };
}
pub(crate) use log;
