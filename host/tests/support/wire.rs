//! Raw wire frames for tests that speak the protocol without the shim.

use protocol::handshake::{Hello, PROTOCOL_VERSION};
use protocol::{special, RequestHeader};

/// A HELLO request from this process and thread.
pub fn hello_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    Hello {
        protocol_version: PROTOCOL_VERSION,
        signature_fingerprint: shim_macros::signature_fingerprint!(),
        word_size: std::mem::size_of::<usize>() as u8,
        pid: std::process::id(),
        // SAFETY: gettid takes no arguments and cannot fail.
        tid: unsafe { libc::syscall(libc::SYS_gettid) } as u32,
    }
    .encode(&mut RequestHeader::start(&mut frame, special::HELLO, 0));
    frame
}
