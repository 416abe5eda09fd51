//! `--metrics ADDR`: a minimal HTTP responder on a std `TcpListener` for Prometheus scrapes.
//! `GET /metrics` answers the report in the OpenMetrics text format; anything else gets 404.
//! One connection at a time, each bounded by a timeout, so a slow or silent peer costs one
//! thread for at most that long and nothing more.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::prometheus::render;
use super::report::Reporter;

/// How long one scrape may take to send its request or read the answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read (a scrape's is a few hundred bytes).
const MAX_HEAD: usize = 8192;
/// The exposition's content type (OpenMetrics text, which Prometheus reads).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The bound metrics endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`MetricsServer::local_addr`]).
    ///
    /// # Errors
    /// The bind error.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves scrapes on a thread of its own (`vgpu-metrics`) for the life of the process.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(self, reporter: Arc<Reporter>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("vgpu-metrics".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if let Err(e) = answer(stream, &reporter) {
                                tracing::debug!("metrics request failed: {e}");
                            }
                        }
                        Err(e) => {
                            tracing::warn!("metrics accept: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
            .map(drop)
    }
}

/// The request line's method and target, once the head is read.
fn request_target(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    Some((words.next()?, words.next()?))
}

fn answer(mut stream: TcpStream, reporter: &Reporter) -> std::io::Result<()> {
    stream.set_read_timeout(Some(PEER_TIMEOUT))?;
    stream.set_write_timeout(Some(PEER_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body, kind) = match request_target(&head) {
        Some(("GET" | "HEAD", target)) if target.split('?').next() == Some("/metrics") => {
            ("200 OK", render(&reporter.report()), CONTENT_TYPE)
        }
        Some(("GET" | "HEAD", "/")) => (
            "200 OK",
            "vgpu-host: the metrics are at /metrics\n".to_owned(),
            "text/plain; charset=utf-8",
        ),
        Some(_) => (
            "404 Not Found",
            "not found\n".to_owned(),
            "text/plain; charset=utf-8",
        ),
        None => (
            "400 Bad Request",
            "bad request\n".to_owned(),
            "text/plain; charset=utf-8",
        ),
    };
    let head_only = request_target(&head).is_some_and(|(m, _)| m == "HEAD");
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::request_target;

    #[test]
    fn the_request_line_gives_method_and_target() {
        assert_eq!(
            request_target(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_target(b"\xff\xfe"), None);
        assert_eq!(request_target(b"GET"), None);
    }
}
