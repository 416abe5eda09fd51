//! `--control PATH`: a Unix socket that answers every connection with the report as one line
//! of JSON, then closes it. It reads nothing from the peer. The socket is made readable and
//! writable by its owner only (mode 0600), and removed when the host stops.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::report::Reporter;

/// How long a reader has to take the answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The bound control socket.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// Removes the socket file when dropped (when the host stops).
#[derive(Debug)]
pub struct ControlGuard {
    path: PathBuf,
}

impl Drop for ControlGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds `path`. A socket file left there by a host that is gone is replaced; one another
    /// host answers on, or a file that is not a socket, is refused.
    ///
    /// # Errors
    /// Why the path cannot be bound.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another host answers on it",
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// Answers connections on a thread of its own (`vgpu-control`); the guard removes the
    /// socket file.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(self, reporter: Arc<Reporter>) -> std::io::Result<ControlGuard> {
        let guard = ControlGuard {
            path: self.path.clone(),
        };
        std::thread::Builder::new()
            .name("vgpu-control".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if let Err(e) = answer(stream, &reporter) {
                                tracing::debug!("control request failed: {e}");
                            }
                        }
                        Err(e) => {
                            tracing::warn!("control accept: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(guard)
    }
}

fn answer(mut stream: UnixStream, reporter: &Reporter) -> std::io::Result<()> {
    stream.set_write_timeout(Some(PEER_TIMEOUT))?;
    let mut json = serde_json::to_vec(&reporter.report()).map_err(std::io::Error::other)?;
    json.push(b'\n');
    stream.write_all(&json)?;
    stream.flush()
}
