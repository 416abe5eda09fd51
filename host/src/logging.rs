//! Where `vgpu-host` logs: to the journal with structured fields when systemd connected its
//! stderr to the journal (`JOURNAL_STREAM` names stderr), else as text on stderr.
//!
//! In the journal every field of a line is a journal field of its own, upper-cased and without
//! prefix: a worker's lines carry its client's `CLIENT` (token, hex), `REGION` and `PID` (from
//! the span `worker.rs` enters), the supervisor's lines about a client the same, so
//! `journalctl -u vgpu-host@vm1 CLIENT=…` or `PID=…` picks one client's lines.

use std::os::fd::AsRawFd;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The journal's name for the host's lines (`SYSLOG_IDENTIFIER`).
const IDENTIFIER: &str = "vgpu-host";

/// Installs the logger with `filter` (a tracing directive; `info` when it does not parse).
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = std::env::var("JOURNAL_STREAM")
        .ok()
        .filter(|v| names_descriptor(v, std::io::stderr().as_raw_fd()))
        .and_then(|_| tracing_journald::layer().ok());
    match journal {
        Some(layer) => tracing_subscriber::registry()
            .with(filter)
            .with(
                layer
                    .with_field_prefix(None)
                    .with_syslog_identifier(IDENTIFIER.to_owned()),
            )
            .init(),
        None => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter)
            .init(),
    }
}

/// Whether `journal_stream` (`DEVICE:INODE`, as systemd sets `JOURNAL_STREAM`) names the file
/// open on `fd`: then that descriptor goes to the journal (systemd's own test, sd_journal
/// `sd_journal_stream_fd`'s documentation).
fn names_descriptor(journal_stream: &str, fd: i32) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into a live, writable stat; a closed `fd` fails with EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn journal_stream_must_name_the_descriptor() {
        let path = std::env::temp_dir().join(format!("vgpu-logging-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("create");
        let meta = file.metadata().expect("metadata");
        let fd = file.as_raw_fd();
        assert!(names_descriptor(
            &format!("{}:{}", meta.dev(), meta.ino()),
            fd
        ));
        assert!(!names_descriptor(
            &format!("{}:{}", meta.dev(), meta.ino() + 1),
            fd
        ));
        assert!(!names_descriptor("garbage", fd));
        assert!(!names_descriptor("1:2", -1));
        std::fs::remove_file(&path).ok();
    }
}
