//! Raw wire frames for tests that speak the protocol without the shim.

use std::path::Path;

use protocol::handshake::{Hello, PROTOCOL_VERSION};
use protocol::{special, CallId, Decoder, Encoder, RequestHeader, ResponseHeader};

/// A request frame for call `id` (no flags), its arguments written by `args`.
pub fn request(id: u32, args: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
    let mut frame = Vec::new();
    args(&mut RequestHeader::start(&mut frame, CallId(id), 0));
    frame
}

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

/// A raw guest: the wire protocol over a channel of the region, no shim.
pub struct RawGuest {
    channel: transport::GuestChannel,
    response: Vec<u8>,
}

impl RawGuest {
    pub fn connect(region: &Path) -> RawGuest {
        let region = transport::Region::open(region).expect("open region");
        Self::on(&region)
    }

    /// A raw guest on a region this process opened already: every channel of one handle
    /// belongs to one client, as the threads of one process do.
    pub fn on(region: &transport::Region) -> RawGuest {
        let mut guest = RawGuest {
            channel: region.connect().expect("connect"),
            response: Vec::new(),
        };
        let frame = hello_frame();
        assert_eq!(guest.call_raw(&frame).0, 0, "handshake");
        guest
    }

    /// The transport channel.
    #[allow(dead_code, reason = "not every test binary looks at it")]
    pub fn channel(&self) -> &transport::GuestChannel {
        &self.channel
    }

    pub fn call_raw(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.channel
            .call(frame, &mut self.response)
            .expect("transport");
        let mut dec = Decoder::new(&self.response);
        let header = ResponseHeader::read(&mut dec).expect("header");
        let rest = self.response[self.response.len() - dec.remaining()..].to_vec();
        (header.result, rest)
    }

    /// Sends `frame` posted: its header's flags become [`protocol::frame::FLAG_NO_REPLY`], and no
    /// response comes.
    #[allow(dead_code, reason = "not every test binary posts")]
    pub fn post_raw(&mut self, frame: &[u8]) {
        let mut frame = frame.to_vec();
        RequestHeader::mark_posted(&mut frame);
        self.channel.post(&frame).expect("transport");
    }

    /// `cuMemAlloc_v2(&dptr, size)` as the generated marshalling sends it (the out-pointer's
    /// presence flag and value, then the size): the result and the device address (0 on failure).
    #[allow(dead_code, reason = "not every test binary allocates")]
    pub fn mem_alloc(&mut self, size: u64) -> (u32, u64) {
        let frame = request(shim_macros::cuda_call_id!(cuMemAlloc_v2), |enc| {
            enc.put(1u8);
            enc.put(0u64);
            enc.put(size);
        });
        let (rc, body) = self.call_raw(&frame);
        let dptr = if rc == 0 {
            Decoder::new(&body).get().expect("device pointer")
        } else {
            0
        };
        (rc, dptr)
    }

    /// A function of the fake driver (`fake_driver/libcuda.c`: the name is its handle in hex),
    /// got as a program gets one: `cuModuleLoadData` of a small PTX image, then
    /// `cuModuleGetFunction`. The host's gate admits only handles the driver gave.
    #[allow(dead_code, reason = "not every test binary launches")]
    pub fn fake_function(&mut self, name: &str) -> u64 {
        let ptx = b".version 8.0\n.target sm_90\n.address_size 64\n\0";
        let frame = request(shim_macros::cuda_call_id!(cuModuleLoadData), |enc| {
            enc.put_bytes(ptx)
        });
        let (rc, body) = self.call_raw(&frame);
        assert_eq!(rc, 0, "cuModuleLoadData");
        let module: u64 = Decoder::new(&body).get().expect("module");
        let frame = request(shim_macros::cuda_call_id!(cuModuleGetFunction), |enc| {
            enc.put(module);
            enc.put_bytes(name.as_bytes());
        });
        let (rc, body) = self.call_raw(&frame);
        assert_eq!(rc, 0, "cuModuleGetFunction {name}");
        Decoder::new(&body).get().expect("function")
    }

    /// One call with `u64` arguments; the result code and the body.
    pub fn call(&mut self, id: u32, args: &[u64], flags: Option<u32>) -> (u32, Vec<u8>) {
        self.call_tail(id, args, flags, &[])
    }

    /// As [`RawGuest::call`], with `u64`s after the flags (the placement's guest bulk base).
    pub fn call_tail(
        &mut self,
        id: u32,
        args: &[u64],
        flags: Option<u32>,
        tail: &[u64],
    ) -> (u32, Vec<u8>) {
        let mut frame = Vec::new();
        let mut enc = RequestHeader::start(&mut frame, CallId(id), 0);
        for a in args {
            enc.put(*a);
        }
        if let Some(f) = flags {
            enc.put(f);
        }
        for t in tail {
            enc.put(*t);
        }
        self.call_raw(&frame)
    }
}
