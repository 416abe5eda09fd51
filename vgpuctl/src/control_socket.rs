//! Reading `vgpu-host`'s control socket (`vgpu-host --control PATH`): one connection, one line
//! of JSON (a [`HostReport`]), then end of file.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use host_report::{HostReport, REPORT_VERSION};

use crate::Error;

/// Where `vgpuctl host install`'s unit puts an instance's control socket (`%i`: the instance).
pub const INSTANCE_TEMPLATE: &str = "/run/vgpu-host/%i/control.sock";

/// How long the host has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest answer read (a report of many clients is some tens of KiB).
const MAX_ANSWER: u64 = 64 << 20;

/// The control socket of instance `name` of the installed unit.
pub fn instance_path(name: &str) -> PathBuf {
    PathBuf::from(INSTANCE_TEMPLATE.replace("%i", name))
}

/// Asks the host behind `path` for its report.
///
/// # Errors
/// [`Error::Io`] when the socket cannot be reached or read; [`Error::Refused`] for an answer
/// that is not a report of this version.
pub fn read_report(path: &Path) -> Result<HostReport, Error> {
    let stream = UnixStream::connect(path).map_err(|e| Error::io("connect to", path, e))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| Error::io("read", path, e))?;
    let mut text = String::new();
    stream
        .take(MAX_ANSWER)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("read", path, e))?;
    parse(&text).map_err(|why| Error::Refused(format!("{}: {why}", path.display())))
}

/// A report from its JSON.
///
/// # Errors
/// Why the text is not a report this `vgpuctl` reads.
pub fn parse(text: &str) -> Result<HostReport, String> {
    let version = serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| format!("not a vgpu-host report ({e})"))?
        .get("version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(REPORT_VERSION)) {
        return Err(format!(
            "report version {version:?}, this vgpuctl reads version {REPORT_VERSION}"
        ));
    }
    serde_json::from_str(text).map_err(|e| format!("not a vgpu-host report ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_version_is_refused_by_name() {
        let err = parse(r#"{"version": 99}"#).unwrap_err();
        assert!(err.contains("version Some(99)"), "{err}");
        assert!(parse("garbage")
            .unwrap_err()
            .contains("not a vgpu-host report"));
        assert_eq!(
            instance_path("vm1"),
            PathBuf::from("/run/vgpu-host/vm1/control.sock")
        );
    }
}
