//! A guest that claims to be another (issue 11, attack class 2): the host assigns client
//! identities and routes by what it minted, never by a word the guest chose.
//!
//! - over a socket, a connection presenting an identity the listener never minted (a made-up
//!   credential, or the victim's client id as the host's logs show it) is refused in the
//!   handshake and never reaches the victim's worker, so it cannot read the victim's memory;
//! - in the region, a claim that copies the victim's identity words (its presented id and the
//!   proof of one of its claims) or makes them up is refused and never served by the victim's
//!   worker;
//! - the limits: one client past `--max-clients-per-listener` / `--max-clients-per-region`, one
//!   connection past `--max-connections-per-client`, is refused with an error while the first
//!   ones keep working.
//!
//! The region attacker writes its claim straight into the region file, at the offsets of
//! docs/ARCHITECTURE.md ("Region layout"), as a hostile guest would.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::{CallId, Decoder, RequestHeader, ResponseHeader};
use support::wire::{hello_frame, RawGuest};
use support::{FakeDriver, Host};
use transport::{Refusal, StreamKey, Transport, TransportError};

const PATTERN: &[u8] = b"the victim's secret bytes";

/// `cuMemcpyHtoD_v2(dst, PATTERN)` (`u64 dst, u64 stream, bytes`).
fn htod_frame(dst: u64, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    let mut enc = RequestHeader::start(
        &mut frame,
        CallId(shim_macros::cuda_call_id!(cuMemcpyHtoD_v2)),
        0,
    );
    enc.put(dst);
    enc.put(0u64);
    enc.put_bytes(data);
    frame
}

/// `cuMemcpyDtoH_v2(src, len)` (`u64 src, u64 len, u64 stream`).
fn dtoh_frame(src: u64, len: u64) -> Vec<u8> {
    let mut frame = Vec::new();
    let mut enc = RequestHeader::start(
        &mut frame,
        CallId(shim_macros::cuda_call_id!(cuMemcpyDtoH_v2)),
        0,
    );
    enc.put(src);
    enc.put(len);
    enc.put(0u64);
    frame
}

/// `cuMemAlloc_v2(&dptr, size)`.
fn alloc_frame(size: u64) -> Vec<u8> {
    let mut frame = Vec::new();
    let mut enc = RequestHeader::start(
        &mut frame,
        CallId(shim_macros::cuda_call_id!(cuMemAlloc_v2)),
        0,
    );
    enc.put(1u8);
    enc.put(0u64);
    enc.put(size);
    frame
}

/// One round trip over any transport: the result code and the body.
fn call(t: &mut impl Transport, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut response = Vec::new();
    t.call(frame, &mut response).expect("transport");
    let mut dec = Decoder::new(&response);
    let header = ResponseHeader::read(&mut dec).expect("header");
    (
        header.result,
        response[response.len() - dec.remaining()..].to_vec(),
    )
}

/// Greets the host, allocates device memory and writes [`PATTERN`] into it; returns it.
fn victim_memory(t: &mut impl Transport) -> u64 {
    assert_eq!(call(t, &hello_frame()).0, 0, "handshake");
    let (rc, body) = call(t, &alloc_frame(4096));
    assert_eq!(rc, 0, "cuMemAlloc_v2");
    let dptr: u64 = Decoder::new(&body).get().expect("device pointer");
    assert_eq!(call(t, &htod_frame(dptr, PATTERN)).0, 0, "cuMemcpyHtoD_v2");
    dptr
}

/// Reads [`PATTERN`]'s length back from `dptr`: the result and the bytes.
fn read_back(t: &mut impl Transport, dptr: u64) -> (u32, Vec<u8>) {
    let (rc, body) = call(t, &dtoh_frame(dptr, PATTERN.len() as u64));
    if rc != 0 {
        return (rc, Vec::new());
    }
    (rc, Decoder::new(&body).get_bytes().expect("bytes").to_vec())
}

/// A socket client of `host` (clear text, with its key), as the shim's is.
fn tcp_client(host: &Host) -> transport::TcpClient {
    transport::TcpClient::connect_with_key(host.tcp(), Some(&key_of(host))).expect("tcp connect")
}

fn key_of(host: &Host) -> StreamKey {
    StreamKey::from_file(host.tcp_key().expect("a key")).expect("the test key")
}

/// A hand-made socket handshake presenting `credential` (zeros: none), answered with the
/// host's key: the admission's status, client id and credential, then whether the host closed
/// the connection.
fn raw_handshake(host: &Host, credential: [u8; 16]) -> (u32, u64, [u8; 16], bool) {
    let mut s = TcpStream::connect(host.tcp()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut hello = Vec::new();
    hello.extend_from_slice(b"VGPUTCP1");
    hello.extend_from_slice(&transport::STREAM_VERSION.to_le_bytes());
    hello.extend_from_slice(&4242u32.to_le_bytes());
    hello.extend_from_slice(&4243u32.to_le_bytes());
    hello.extend_from_slice(&0u32.to_le_bytes());
    hello.extend_from_slice(&credential);
    s.write_all(&hello).expect("hello");
    let mut ack = [0u8; 16];
    s.read_exact(&mut ack).expect("ack");
    assert_eq!(
        &ack[12..16],
        &2u32.to_le_bytes(),
        "the host asks for the key"
    );
    let mut challenge = [0u8; transport::CHALLENGE_LEN];
    s.read_exact(&mut challenge).expect("challenge");
    s.write_all(&key_of(host).answer(&challenge, &hello))
        .expect("answer");
    let mut verdict = [0u8; 4];
    s.read_exact(&mut verdict).expect("verdict");
    assert_eq!(verdict, [0; 4], "the key was right");
    let mut admission = [0u8; 28];
    s.read_exact(&mut admission).expect("admission");
    let status = u32::from_le_bytes(admission[0..4].try_into().expect("4 bytes"));
    let id = u64::from_le_bytes(admission[4..12].try_into().expect("8 bytes"));
    let granted: [u8; 16] = admission[12..28].try_into().expect("16 bytes");
    let mut byte = [0u8; 1];
    let closed = matches!(s.read(&mut byte), Ok(0) | Err(_));
    (status, id, granted, closed)
}

const GRANTED: u32 = 1;
const UNKNOWN_IDENTITY: u32 = 2;
const LIMIT: u32 = 3;

#[test]
fn a_socket_client_cannot_pose_as_another() {
    let host = Host::without_region()
        .driver(FakeDriver::PostedKernels)
        .args(["--listen", "127.0.0.1:0", "--tcp-cleartext"])
        .start();
    let mut victim = tcp_client(&host);
    let victim_id = victim.identity().client_id;
    let dptr = victim_memory(&mut victim);
    let victim_worker = host.worker_of(std::process::id());
    let shown = format!("{victim_id:016x}");
    host.log_line(&["new client", &shown]);

    // The victim's id as the host's logs and metrics show it, presented as a credential; and
    // credentials made up. Each is refused in the handshake and the connection closed.
    let mut as_logged = [0u8; 16];
    as_logged[..8].copy_from_slice(&victim_id.to_le_bytes());
    for presented in [as_logged, [0x5a; 16], [0xff; 16]] {
        let (status, id, granted, closed) = raw_handshake(&host, presented);
        assert_eq!(status, UNKNOWN_IDENTITY, "{presented:?} admitted");
        assert_eq!((id, granted), (0, [0; 16]), "nothing handed out");
        assert!(closed, "the refused connection was left open");
    }
    assert_eq!(
        host.count_lines_awaiting(&["tcp connection refused", "unknown client identity"], 3),
        3
    );
    // No connection reached the victim's worker but the victim's own.
    assert_eq!(
        host.count_lines_awaiting(&["tcp connection", &shown, "worker="], 1),
        1
    );

    // The victim's other threads present the credential its first connection was granted:
    // they are the same client, in the same worker, and see its memory.
    let mut second = std::thread::spawn({
        let key = key_of(&host);
        let addr = host.tcp();
        move || transport::TcpClient::connect_with_key(addr, Some(&key)).expect("connect")
    })
    .join()
    .expect("thread");
    assert_eq!(second.identity().client_id, victim_id);
    assert_eq!(call(&mut second, &hello_frame()).0, 0);
    assert_eq!(read_back(&mut second, dptr), (0, PATTERN.to_vec()));
    assert_eq!(host.worker_of(std::process::id()), victim_worker);
    // A new process (no credential) is another client: its own worker, which does not know
    // the victim's memory.
    let (status, stranger, granted, _) = raw_handshake(&host, [0; 16]);
    assert_eq!(status, GRANTED);
    assert_ne!(stranger, victim_id);
    assert_ne!(granted, [0; 16], "a new client gets a credential");
    // The victim was served throughout.
    assert_eq!(read_back(&mut victim, dptr), (0, PATTERN.to_vec()));
    host.assert_no_panic();
}

/// A hostile guest's raw view of the region file (the layout of docs/ARCHITECTURE.md).
struct RawRegion {
    base: *mut u8,
    len: usize,
}

// Header fields.
const CHANNEL_COUNT: usize = 32;
const CHANNELS_OFFSET: usize = 64;
const CHANNEL_STRIDE: usize = 72;
const CLAIM_SEQ: usize = 136;
const CLAIM_BITS: usize = 152;
// Channel control fields.
const STATUS: usize = 0;
const PRESENTED_ID: usize = 8;
const OWNER_PID: usize = 16;
const OWNER_TID: usize = 20;
const OWNER_START: usize = 24;
const SERVER_PID: usize = 40;
const OWNER_PID_NS: usize = 44;
const PROOF: usize = 64;
const VERDICT: usize = 88;

impl RawRegion {
    fn map(path: &Path) -> RawRegion {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the region file");
        let len = file.metadata().expect("size").len() as usize;
        // SAFETY: a shared mapping of a whole regular file we opened read-write; every access
        // below is an atomic of the right alignment inside it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        RawRegion {
            base: base.cast(),
            len,
        }
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: in bounds and aligned (checked); the region's words are only used atomically.
        unsafe { &*self.base.add(off).cast::<AtomicU64>() }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: as for `u64_at`.
        unsafe { &*self.base.add(off).cast::<AtomicU32>() }
    }

    fn channel(&self, index: u32) -> usize {
        self.u64_at(CHANNELS_OFFSET).load(Ordering::Relaxed) as usize
            + index as usize * self.u64_at(CHANNEL_STRIDE).load(Ordering::Relaxed) as usize
    }

    /// Claims a free channel as process `owner` presenting `presented` and `proof`, and
    /// announces it. Returns the channel index and claim epoch.
    fn forge_claim(&self, owner: u32, presented: u64, proof: [u64; 2]) -> (u32, u32) {
        let count = self.u32_at(CHANNEL_COUNT).load(Ordering::Relaxed);
        for index in (0..count).rev() {
            let c = self.channel(index);
            let word = self.u64_at(c + STATUS).load(Ordering::Acquire);
            if word as u32 != 0 {
                continue;
            }
            let epoch = (word >> 32) as u32 + 1;
            if self
                .u64_at(c + STATUS)
                .compare_exchange(
                    word,
                    (u64::from(epoch) << 32) | 1,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            use std::os::unix::fs::MetadataExt;
            let ns = std::fs::metadata("/proc/self/ns/pid")
                .expect("pid ns")
                .ino() as u32;
            let r = Ordering::Relaxed;
            self.u64_at(c + PRESENTED_ID).store(presented, r);
            self.u32_at(c + OWNER_PID).store(owner, r);
            self.u32_at(c + OWNER_TID).store(owner, r);
            self.u64_at(c + OWNER_START).store(0, r);
            self.u32_at(c + OWNER_PID_NS).store(ns, r);
            self.u32_at(c + SERVER_PID).store(0, r);
            self.u64_at(c + PROOF).store(proof[0], r);
            self.u64_at(c + PROOF + 8).store(proof[1], r);
            self.u32_at(c + VERDICT).store(epoch << 8, r);
            self.u64_at(c + STATUS)
                .store((u64::from(epoch) << 32) | 2, Ordering::Release);
            self.u64_at(CLAIM_BITS + 8 * (index as usize / 64))
                .fetch_or(1 << (index % 64), Ordering::Release);
            self.u32_at(CLAIM_SEQ).fetch_add(1, Ordering::Release);
            return (index, epoch);
        }
        panic!("no free channel to forge a claim in");
    }

    /// Waits (bounded) until the host decided on the forged claim or a worker serves it:
    /// (verdict code, serving pid).
    fn outcome(&self, index: u32, epoch: u32) -> (u32, u32) {
        let c = self.channel(index);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let verdict = self.u32_at(c + VERDICT).load(Ordering::Acquire);
            let server = self.u32_at(c + SERVER_PID).load(Ordering::Acquire);
            if verdict != epoch << 8 || server != 0 || Instant::now() > deadline {
                return (verdict & 0xff, server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The words a claim of channel `index` shows: its presented id and proof.
    fn claim_words(&self, index: u32) -> (u64, [u64; 2]) {
        let c = self.channel(index);
        let r = Ordering::Relaxed;
        (
            self.u64_at(c + PRESENTED_ID).load(r),
            [
                self.u64_at(c + PROOF).load(r),
                self.u64_at(c + PROOF + 8).load(r),
            ],
        )
    }
}

impl Drop for RawRegion {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into it outlives self.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// A process that stays alive while the forged claims name it as their owner.
fn sleeper() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep")
}

#[test]
fn a_region_claim_cannot_pose_as_another_process() {
    let host = Host::on_region("hostile-identity")
        .driver(FakeDriver::PostedKernels)
        .start();
    let region = transport::Region::open(host.region()).expect("open");
    // The victim: two threads, so its second claim carries a proof the attacker can copy.
    let mut victim = RawGuest::on(&region);
    let dptr = {
        let frame = alloc_frame(4096);
        let (rc, body) = victim.call_raw(&frame);
        assert_eq!(rc, 0);
        let dptr: u64 = Decoder::new(&body).get().expect("device pointer");
        assert_eq!(victim.call_raw(&htod_frame(dptr, PATTERN)).0, 0);
        dptr
    };
    let victim_id = victim.channel().client_id();
    let second =
        std::thread::scope(|s| s.spawn(|| RawGuest::on(&region)).join()).expect("second thread");
    assert_eq!(
        second.channel().client_id(),
        victim_id,
        "one process, one client"
    );
    let victim_worker = host.worker_of(std::process::id());

    let raw = RawRegion::map(host.region());
    let (copied_id, copied_proof) = raw.claim_words(second.channel().index());
    assert_eq!(
        copied_id, victim_id,
        "the second claim presents the victim's id"
    );
    let mut attacker = sleeper();
    for (what, presented, proof) in [
        ("the victim's copied claim words", copied_id, copied_proof),
        ("the victim's id, no proof", victim_id, [0, 0]),
        ("a made-up id and proof", 0x0bad_cafe_f00d, [1, 2]),
    ] {
        let (index, epoch) = raw.forge_claim(attacker.id(), presented, proof);
        let (verdict, server) = raw.outcome(index, epoch);
        assert_ne!(
            server, victim_worker,
            "{what}: served by the victim's worker"
        );
        assert_eq!(
            (verdict, server),
            (UNKNOWN_IDENTITY, 0),
            "{what}: not refused"
        );
    }
    assert_eq!(
        host.count_lines_awaiting(&["claim refused", "unknown client identity"], 3),
        3
    );
    attacker.kill().expect("kill");
    attacker.wait().expect("wait");
    // The victim is served throughout, by its own worker.
    let (rc, body) = victim.call_raw(&dtoh_frame(dptr, PATTERN.len() as u64));
    assert_eq!(rc, 0);
    assert_eq!(Decoder::new(&body).get_bytes().expect("bytes"), PATTERN);
    assert_eq!(host.worker_of(std::process::id()), victim_worker);
    host.assert_no_panic();
}

#[test]
fn clients_and_connections_past_the_limits_are_refused() {
    let host = Host::on_region("identity-limits")
        .driver(FakeDriver::PostedKernels)
        .args([
            "--listen",
            "127.0.0.1:0",
            // Identity is the same inside TLS (tcp_listener.rs checks an admission there); the
            // hand-made handshakes below speak the stream protocol bare.
            "--tcp-cleartext",
            "--max-clients-per-listener",
            "1",
            "--max-clients-per-region",
            "1",
            "--max-connections-per-client",
            "2",
        ])
        .start();
    // Sockets: the listener's one client, with two connections.
    let mut first = tcp_client(&host);
    let dptr = victim_memory(&mut first);
    let key = key_of(&host);
    let addr = host.tcp();
    let connect = move || transport::TcpClient::connect_with_key(addr, Some(&key));
    let mut second = std::thread::spawn(connect.clone())
        .join()
        .expect("thread")
        .expect("the second connection fits");
    assert_eq!(call(&mut second, &hello_frame()).0, 0);
    // A third connection of the same client: refused, with a limit.
    let third = std::thread::spawn(connect.clone()).join().expect("thread");
    assert!(
        matches!(third, Err(TransportError::Refused(Refusal::Limit))),
        "{third:?}"
    );
    host.log_line(&["tcp connection refused", "--max-connections-per-client"]);
    // A second client of the listener: refused, with a limit, in the handshake.
    let (status, id, _, closed) = raw_handshake(&host, [0; 16]);
    assert_eq!((status, id), (LIMIT, 0));
    assert!(closed);
    host.log_line(&["refusing a new client", "--max-clients-per-listener"]);
    // The first client goes on on both connections.
    assert_eq!(read_back(&mut first, dptr), (0, PATTERN.to_vec()));
    assert_eq!(read_back(&mut second, dptr), (0, PATTERN.to_vec()));
    // A connection closed gives its room back.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        match std::thread::spawn(connect.clone()).join().expect("thread") {
            Ok(c) => break c,
            Err(TransportError::Refused(Refusal::Limit)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no room after a close: {e}"),
        }
    };
    assert_eq!(call(&mut again, &hello_frame()).0, 0);

    // The region: its one client, with two channels.
    let region = transport::Region::open(host.region()).expect("open");
    let mut one = RawGuest::on(&region);
    let two = std::thread::scope(|s| s.spawn(|| RawGuest::on(&region)).join()).expect("thread");
    // A third channel of the same client: refused, with a limit (the caller frees it).
    let mut three = region.connect().expect("connect");
    let mut response = Vec::new();
    let refused = three.call(&hello_frame(), &mut response);
    assert!(
        matches!(refused, Err(TransportError::Refused(Refusal::Limit))),
        "{refused:?}"
    );
    drop(three);
    // A second client of the region (a claim presenting no identity): refused, with a limit.
    let raw = RawRegion::map(host.region());
    let mut other = sleeper();
    let (index, epoch) = raw.forge_claim(other.id(), 0, [0, 0]);
    assert_eq!(raw.outcome(index, epoch), (LIMIT, 0));
    host.log_line(&["refusing a new client", "--max-clients-per-region"]);
    other.kill().expect("kill");
    other.wait().expect("wait");
    // The region's client goes on.
    assert_eq!(one.mem_alloc(4096).0, 0);
    drop(two);
    assert!(host.count_lines(&["panicked"]) == 0);
    host.assert_no_panic();
}
