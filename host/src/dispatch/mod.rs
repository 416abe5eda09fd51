//! Running one guest request on the real driver: the handshake, the generated marshalling of
//! every fully classifiable function, and the hand-written handlers.
//!
//! The worker process (see `worker.rs`) owns one [`ClientContext`] per guest process and one
//! [`ThreadSession`] per guest thread (channel), and calls [`ThreadSession::handle`] for every
//! request frame. Everything CUDA-specific lives below this module.

mod callbacks;
mod contexts;
pub mod gate;
mod generated;
mod handlers;
pub mod ipc_seal;
pub mod posted;
pub mod primary;
pub mod processes;
pub mod quota;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cuda_headers::CUresult;
use protocol::handshake::{Hello, Welcome, PROTOCOL_VERSION};
use protocol::{special, CallId, DecodeError, Decoder, RequestHeader, ResponseHeader};

use crate::accounting::{self, CountersHome, Direction, Gauges};
use crate::driver;

pub use callbacks::CallbackQueue;

/// The fingerprint of the signature list this host's dispatch was generated from.
pub const SIGNATURE_FINGERPRINT: u64 = shim_macros::signature_fingerprint!();

/// What the channel thread should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Reply and wait for the next request.
    Continue,
    /// Reply, then end this channel's thread: the guest thread said goodbye, or its handshake
    /// was refused.
    Close,
    /// Send nothing (the request was posted) and wait for the next request.
    Posted,
}

/// Everything one guest process shares across its threads: the driver, the host-callback
/// queue, the zero-copy pinned blocks.
pub struct ClientContext {
    driver_path: PathBuf,
    /// Result of loading the driver and `cuInit`.
    init: Mutex<Option<Result<(), String>>>,
    callbacks: Arc<CallbackQueue>,
    contexts: contexts::ContextPool,
    /// Bulk blocks registered with the driver as this client's pinned memory.
    zero_copy: handlers::Registrations,
    /// Pinned memory standing in for the guest's DEVICEMAP buffers where the GPU cannot map
    /// them (`handlers/mirror.rs`).
    mirrors: handlers::Mirrors,
    /// Posted calls executed per guest thread, for requests ordered after them.
    posts: posted::Progress,
    /// Parameter layouts of the client's functions: launches are checked against them.
    layouts: handlers::Layouts,
    /// The handles the driver gave this client: every handle it passes is checked here.
    handles: gate::Handles,
    /// The GPU memory its allocations may hold (`--client-memory-mib`).
    quota: quota::MemoryQuota,
    /// The contexts it may hold (`--client-contexts`).
    context_quota: quota::ContextQuota,
    /// What it holds and does, read by the supervisor (`accounting/`).
    counters: CountersHome,
    /// The primary contexts it holds (counted for `counters`).
    primary: primary::PrimaryContexts,
    /// The largest message its region carries inline (unset: a socket client).
    inline_payload: OnceLock<usize>,
    /// Who it is among its tenant's processes (`special::NVML_PROCESSES`).
    tenant: processes::TenantCell,
}

impl ClientContext {
    /// A context for one guest process. The driver is loaded on the first handshake, or earlier
    /// by [`ClientContext::prewarm`]. The worker sees every device the host process sees; the
    /// guest's `CUDA_VISIBLE_DEVICES` is applied by the shim (`shim/src/handlers/devices.rs`), so
    /// a prewarmed worker suits every client. `limits` are the client's quotas (`quota.rs`).
    pub fn new(driver_path: PathBuf, limits: quota::Limits) -> Arc<Self> {
        Self::with_counters(driver_path, limits, CountersHome::own())
    }

    /// As [`ClientContext::new`], counting into `counters` (the block the supervisor reads).
    pub fn with_counters(
        driver_path: PathBuf,
        limits: quota::Limits,
        counters: CountersHome,
    ) -> Arc<Self> {
        Arc::new(Self {
            driver_path,
            init: Mutex::new(None),
            callbacks: Arc::new(CallbackQueue::default()),
            contexts: contexts::ContextPool::default(),
            zero_copy: handlers::Registrations::default(),
            mirrors: handlers::Mirrors::default(),
            posts: posted::Progress::default(),
            layouts: handlers::Layouts::default(),
            handles: gate::Handles::default(),
            quota: quota::MemoryQuota::new(limits.memory_bytes),
            context_quota: quota::ContextQuota::new(limits.contexts),
            counters,
            primary: primary::PrimaryContexts::default(),
            inline_payload: OnceLock::new(),
            tenant: OnceLock::new(),
        })
    }

    /// Gives the client's region and token, once the worker knows its client: zero-copy pinned
    /// memory is allocated from that region's bulk area, owned by that token.
    pub fn attach_region(&self, region: transport::Region, client_id: u64) {
        let _ = self.inline_payload.set(region.inline_payload());
        self.zero_copy.attach(region, client_id);
    }

    /// Tells who the client is among its tenant's processes, once the worker knows it: its
    /// guest pid, and the region's process list for a region client.
    pub fn attach_tenant(&self, tenant: processes::Tenant) {
        let _ = self.tenant.set(tenant);
    }

    fn tenant(&self) -> Option<&processes::Tenant> {
        self.tenant.get()
    }

    /// Device memory the client's allocations hold now.
    fn memory_held(&self) -> u64 {
        self.quota.held_bytes()
    }

    /// The client's counters (`accounting/`).
    pub fn counters(&self) -> &accounting::Counters {
        &self.counters
    }

    /// Counts `bytes` of guest data that travelled with a request or reply: inline when they
    /// fit one ring slot, else through the bulk area; over a socket for a socket client.
    pub(crate) fn count_carried(&self, direction: Direction, bytes: usize) {
        let path = match self.inline_payload.get() {
            None => accounting::Path::Stream,
            Some(&inline) if bytes <= inline => accounting::Path::Inline,
            Some(_) => accounting::Path::Bulk,
        };
        self.counters.copied(direction, path, bytes as u64);
    }

    /// Counts `bytes` the GPU copied to or from the client's zero-copy memory.
    pub(crate) fn count_zero_copy(&self, direction: Direction, bytes: u64) {
        self.counters
            .copied(direction, accounting::Path::ZeroCopy, bytes);
    }

    /// What the client holds now (for [`accounting::Counters::publish`]), with `threads` guest
    /// threads served.
    pub fn gauges(&self, threads: u64) -> Gauges {
        let handles = self.handles.census();
        Gauges {
            memory_bytes: self.quota.held_bytes(),
            contexts: self.context_quota.held() as u64 + self.primary.active(),
            modules: handles.modules,
            streams: handles.streams,
            events: handles.events,
            threads,
            memory_refusals: self.quota.refusals(),
            context_refusals: self.context_quota.refusals(),
        }
    }

    /// The handles the driver gave this client (`gate.rs`).
    pub fn handles(&self) -> &gate::Handles {
        &self.handles
    }

    /// The driver this client will use.
    pub fn driver_path(&self) -> &Path {
        &self.driver_path
    }

    /// Loads the driver and runs `cuInit` ahead of any client, so the next client starts
    /// without paying for driver initialisation, and creates `contexts` contexts ahead for its
    /// `cuCtxCreate` (see `contexts.rs`).
    ///
    /// # Errors
    /// Why the driver could not be loaded or initialised.
    pub fn prewarm(&self, contexts: u32) -> Result<(), String> {
        self.initialise()?;
        self.contexts.fill(contexts);
        Ok(())
    }

    fn initialise(&self) -> Result<(), String> {
        let mut init = self.init.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = &*init {
            return done.clone();
        }
        let result = self.load();
        *init = Some(result.clone());
        result
    }

    fn load(&self) -> Result<(), String> {
        driver::load(&self.driver_path).map_err(|e| e.to_string())?;
        driver::result::init(0).map_err(|e| e.to_string())
    }

    fn driver_version(&self) -> i32 {
        driver::result::driver_version().unwrap_or(0)
    }
}

/// One guest thread's session.
pub struct ThreadSession {
    client: Arc<ClientContext>,
    greeted: bool,
    /// The guest thread id from the handshake and this session's number in `client.posts`.
    poster: Option<(u32, u64)>,
    /// Posted calls run so far.
    posted: u64,
    deferred: posted::DeferredErrors,
}

impl Drop for ThreadSession {
    fn drop(&mut self) {
        if let Some((tid, session)) = self.poster {
            self.client.posts.end(tid, session);
        }
    }
}

/// Writes `CUDA_ERROR_NOT_SUPPORTED` for a function the real driver lacks, with one log line.
fn missing(name: &str, out: &mut Vec<u8>) {
    tracing::warn!(
        function = name,
        "the real driver does not export this function"
    );
    ResponseHeader::start(out, CUresult::CUDA_ERROR_NOT_SUPPORTED.0);
}

impl ThreadSession {
    /// A session for a newly claimed channel.
    pub fn new(client: Arc<ClientContext>) -> Self {
        Self {
            client,
            greeted: false,
            poster: None,
            posted: 0,
            deferred: posted::DeferredErrors::default(),
        }
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &Arc<ClientContext> {
        &self.client
    }

    /// Handles one request frame and writes the response frame into `response`. Never panics on
    /// hostile input: a malformed frame gets an error response and one log line.
    ///
    /// A posted driver-API call ([`protocol::frame::FLAG_NO_REPLY`]) runs as usual, its failure
    /// is kept as the deferred error and [`Flow::Posted`] says to send nothing. Any other request
    /// first reports a pending deferred error instead of running (see `posted.rs`).
    pub fn handle(&mut self, request: &[u8], response: &mut Vec<u8>) -> Flow {
        let mut dec = Decoder::new(request);
        let header = match RequestHeader::read(&mut dec) {
            Ok(h) => h,
            Err(e) => return self.malformed("header", &e, response),
        };
        let marks = match header.read_marks(&mut dec) {
            Ok(marks) => marks,
            Err(e) => return self.malformed("post marks", &e, response),
        };
        if !marks.is_empty() {
            self.client
                .posts
                .wait_for(self.poster.map(|(tid, _)| tid), &marks);
        }
        if !(header.posted() && header.call.is_function() && self.greeted) {
            return self.handle_call(header, dec, response);
        }
        let flow = if posted::may_be_posted(header.call) {
            self.handle_call(header, dec, response)
        } else {
            tracing::warn!(
                call = header.call.0,
                "refused a posted call that is never posted"
            );
            ResponseHeader::start(response, CUresult::CUDA_ERROR_INVALID_VALUE.0);
            Flow::Continue
        };
        let result = response
            .get(..4)
            .map_or(CUresult::CUDA_ERROR_UNKNOWN.0, |r| {
                u32::from_le_bytes(r.try_into().expect("4 bytes"))
            });
        if result != 0 {
            tracing::debug!(call = header.call.0, result, "posted call failed");
            self.client.counters.deferred_error();
        }
        self.deferred.note(header.call, result);
        self.posted += 1;
        if let Some((tid, session)) = self.poster {
            self.client.posts.executed(tid, session, self.posted);
        }
        match flow {
            Flow::Close => Flow::Close,
            Flow::Continue | Flow::Posted => Flow::Posted,
        }
    }

    fn handle_call(
        &mut self,
        header: RequestHeader,
        mut dec: Decoder<'_>,
        response: &mut Vec<u8>,
    ) -> Flow {
        if header.call == special::HELLO {
            return self.hello(&mut dec, response);
        }
        if !self.greeted {
            tracing::warn!(call = header.call.0, "call before the handshake");
            ResponseHeader::start(response, CUresult::CUDA_ERROR_NOT_INITIALIZED.0);
            return Flow::Close;
        }
        if !header.posted() || !header.call.is_function() {
            if let Some(deferred) = self.deferred.take() {
                ResponseHeader::deferred(response, deferred);
                return if header.call == special::GOODBYE {
                    Flow::Close
                } else {
                    Flow::Continue
                };
            }
        }
        let outcome = match header.call {
            special::GOODBYE => {
                ResponseHeader::start(response, 0);
                return Flow::Close;
            }
            special::FLUSH => dec.finish().map(|()| {
                ResponseHeader::start(response, 0);
            }),
            special::PARAM_LAYOUT => handlers::param_layout(&self.client, &mut dec, response),
            special::CALLBACK_NEXT => self.client.callbacks.next(&mut dec, response),
            special::UNIT_MAPS => handlers::unit_maps(&mut dec, response),
            special::NVML_FACTS => handlers::nvml_facts(&mut dec, response),
            special::NVML_MEMORY => handlers::nvml_memory(&self.client, &mut dec, response),
            special::NVML_PROCESSES => processes::nvml_processes(&self.client, &mut dec, response),
            special::MIRROR_ALLOC => handlers::mirror::alloc(&self.client, &mut dec, response),
            special::MIRROR_FREE => handlers::mirror::free(&self.client, &mut dec, response),
            special::MIRROR_PUSH => handlers::mirror::push(&self.client, &mut dec, response),
            special::MIRROR_PULL => handlers::mirror::pull(&self.client, &mut dec, response),
            // Hand-written host halves first: one may override a generated function, keeping
            // its generated wire format (the context pool does).
            CallId(id) => {
                let counted = primary::watches(id).then(|| dec.clone());
                let outcome = match handlers::dispatch(id, &self.client, &mut dec, response) {
                    Some(outcome) => outcome,
                    None => match generated::dispatch(id, &self.client.handles, &mut dec, response)
                    {
                        Some(outcome) => outcome,
                        None => {
                            tracing::warn!(call = id, "call has no host handler");
                            ResponseHeader::start(response, CUresult::CUDA_ERROR_NOT_SUPPORTED.0);
                            Ok(())
                        }
                    },
                };
                if let Some(args) = counted {
                    if let Some(ctx) = self.client.primary.note(id, args, response) {
                        // The primary context was reset: what was made in it is gone.
                        self.client.handles.retire_context(ctx);
                    }
                }
                outcome
            }
        };
        match outcome {
            Ok(()) => Flow::Continue,
            Err(e) => self.malformed("arguments", &e, response),
        }
    }

    fn malformed(&self, what: &str, e: &DecodeError, response: &mut Vec<u8>) -> Flow {
        tracing::warn!("malformed request {what}: {e}");
        ResponseHeader::start(response, CUresult::CUDA_ERROR_INVALID_VALUE.0);
        Flow::Continue
    }

    fn hello(&mut self, dec: &mut Decoder<'_>, response: &mut Vec<u8>) -> Flow {
        let hello = match Hello::decode(dec) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("malformed handshake: {e}");
                ResponseHeader::start(response, CUresult::CUDA_ERROR_INVALID_VALUE.0);
                return Flow::Close;
            }
        };
        if let Err(mismatch) = hello.check(SIGNATURE_FINGERPRINT) {
            tracing::error!(pid = hello.pid, "handshake refused: {mismatch}");
            ResponseHeader::start(response, CUresult::CUDA_ERROR_NOT_INITIALIZED.0);
            return Flow::Close;
        }
        if let Err(e) = self.client.initialise() {
            tracing::error!(pid = hello.pid, "cannot serve client: {e}");
            ResponseHeader::start(response, CUresult::CUDA_ERROR_NOT_INITIALIZED.0);
            return Flow::Close;
        }
        self.greeted = true;
        if let Some((tid, session)) = self.poster.take() {
            self.client.posts.end(tid, session);
        }
        self.poster = Some((hello.tid, self.client.posts.register(hello.tid)));
        tracing::debug!(pid = hello.pid, tid = hello.tid, "guest thread greeted");
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            driver_version: self.client.driver_version(),
            worker_pid: std::process::id(),
        };
        welcome.encode(&mut ResponseHeader::start(response, 0));
        Flow::Continue
    }
}

/// How many functions the host runs through generated marshalling.
pub const GENERATED_FUNCTIONS: usize = generated::COUNT;
