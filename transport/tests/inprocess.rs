//! Single-process behaviour: header validation, fixed-size files, close/restart/fork semantics, slow
//! replies, bulk allocations, and the socket transports behind the same traits.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use transport::{
    DoorbellMode, GoneReason, Region, RegionConfig, ServerTransport, TcpClient, TcpServer,
    Transport, TransportError, UnixClient, UnixServer, LAYOUT_VERSION, MAGIC,
};

fn small(mode: DoorbellMode, timeout: Duration) -> RegionConfig {
    RegionConfig {
        channel_count: 4,
        slot_count: 4,
        slot_size: 512,
        bulk_size: 512 << 10,
        bulk_block_size: 64 << 10,
        doorbell: mode,
        peer_timeout: timeout,
    }
}

/// Serves one channel in a thread: echoes every request after `delay`, until the client leaves.
fn echo_server(
    region: &Region,
    delay: Duration,
) -> std::thread::JoinHandle<Result<u32, TransportError>> {
    let claim = region
        .accept(Duration::from_secs(5))
        .unwrap()
        .expect("claim");
    let mut ch = region.admit_and_serve(claim).unwrap();
    std::thread::spawn(move || {
        let mut req = Vec::new();
        let mut n = 0;
        loop {
            match ch.recv(&mut req) {
                Ok(()) => {}
                Err(TransportError::Closed) => return Ok(n),
                Err(e) => return Err(e),
            }
            std::thread::sleep(delay);
            ch.reply(&req)?;
            n += 1;
        }
    })
}

#[test]
fn open_refuses_bad_headers_with_typed_errors() {
    let tmp = TempRegion::new("badhdr");
    drop(
        Region::create(
            tmp.path(),
            &small(DoorbellMode::Futex, Duration::from_secs(5)),
        )
        .unwrap(),
    );
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path())
        .unwrap();
    let patch = |at: u64, bytes: &[u8]| file.write_all_at(bytes, at).unwrap();
    assert!(Region::open(tmp.path()).is_ok());

    patch(0, &(MAGIC ^ 1).to_le_bytes());
    assert!(matches!(
        Region::open(tmp.path()),
        Err(TransportError::BadMagic { .. })
    ));
    patch(0, &MAGIC.to_le_bytes());

    patch(8, &(LAYOUT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        Region::open(tmp.path()),
        Err(TransportError::LayoutVersion { .. })
    ));
    patch(8, &LAYOUT_VERSION.to_le_bytes());

    patch(12, &4u32.to_le_bytes());
    assert!(matches!(
        Region::open(tmp.path()),
        Err(TransportError::WordSize { found: 4, .. })
    ));
    patch(12, &8u32.to_le_bytes());

    patch(24, &0u32.to_le_bytes());
    assert!(matches!(
        Region::open(tmp.path()),
        Err(TransportError::NotInitialised)
    ));
    patch(24, &2u32.to_le_bytes());

    patch(32, &5000u32.to_le_bytes()); // channel_count beyond MAX_CHANNELS
    assert!(matches!(
        Region::open(tmp.path()),
        Err(TransportError::BadHeader("channel_count"))
    ));
    patch(32, &4u32.to_le_bytes());

    patch(80, &12345u64.to_le_bytes()); // bulk_offset disagrees with the layout
    assert!(matches!(
        Region::open(tmp.path()),
        Err(TransportError::BadHeader("bulk_offset"))
    ));

    patch(80, &0u64.to_le_bytes());
    drop(
        Region::create(
            tmp.path(),
            &small(DoorbellMode::Futex, Duration::from_secs(5)),
        )
        .unwrap(),
    );
    patch(280, &0x1234_5678u64.to_le_bytes()); // boot id of another kernel, e.g. the VM host's
    assert!(matches!(
        Region::open(tmp.path()),
        Err(TransportError::ForeignKernel)
    ));
    drop(
        Region::create(
            tmp.path(),
            &small(DoorbellMode::Poll, Duration::from_secs(5)),
        )
        .unwrap(),
    );
    patch(280, &0x1234_5678u64.to_le_bytes());
    assert!(
        Region::open(tmp.path()).is_ok(),
        "Poll regions work across kernels"
    );

    let tiny = TempRegion::new("tiny");
    std::fs::write(tiny.path(), [0u8; 100]).unwrap();
    assert!(matches!(
        Region::open(tiny.path()),
        Err(TransportError::TooSmall { .. })
    ));
    let zeros = TempRegion::new("zeros");
    std::fs::write(zeros.path(), vec![0u8; 8192]).unwrap();
    assert!(matches!(
        Region::open(zeros.path()),
        Err(TransportError::BadMagic { found: 0, .. })
    ));
}

#[test]
fn existing_fixed_size_file_is_used_as_is() {
    let tmp = TempRegion::new("fixed");
    let size = 16u64 << 20; // like a QEMU memory-backend-file of a power-of-two size
    std::fs::File::create(tmp.path())
        .unwrap()
        .set_len(size)
        .unwrap();
    let config = small(DoorbellMode::Poll, Duration::from_secs(5))
        .fit_to(size)
        .unwrap();
    assert!(config.required_size().unwrap() <= size);
    assert!(
        config.bulk_size > 15 << 20,
        "bulk area fills the file: {}",
        config.bulk_size
    );
    let host = Region::create(tmp.path(), &config).unwrap();
    assert_eq!(
        std::fs::metadata(tmp.path()).unwrap().len(),
        size,
        "file size unchanged"
    );
    let guest = Region::open(tmp.path()).unwrap();
    assert_eq!(guest.doorbell_mode(), DoorbellMode::Poll);
    assert_eq!(guest.bulk_size(), config.bulk_size);
    assert_eq!(guest.generation(), host.generation());
    assert!(matches!(
        small(DoorbellMode::Poll, Duration::from_secs(5)).fit_to(4096),
        Err(TransportError::TooSmall { .. })
    ));
}

#[test]
fn slow_reply_is_not_a_timeout() {
    let tmp = TempRegion::new("slow");
    let region = Region::create(
        tmp.path(),
        &small(DoorbellMode::Futex, Duration::from_millis(150)),
    )
    .unwrap();
    let mut ch = region.connect().unwrap();
    let server = echo_server(&region, Duration::from_millis(700));
    let mut resp = Vec::new();
    let t = Instant::now();
    ch.call(b"long synchronize", &mut resp).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(700));
    assert_eq!(resp, b"long synchronize");
    drop(ch);
    assert_eq!(server.join().unwrap().unwrap(), 1);
}

#[test]
fn dropping_the_guest_channel_closes_and_frees_it() {
    let tmp = TempRegion::new("close");
    let region = Region::create(
        tmp.path(),
        &small(DoorbellMode::Futex, Duration::from_secs(5)),
    )
    .unwrap();
    let mut ch = region.connect().unwrap();
    let index = ch.index();
    let server = echo_server(&region, Duration::ZERO);
    let mut resp = Vec::new();
    for size in [0usize, 1, 480, 481, 5000, 200_000, 2_000_000] {
        let req: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        ch.call(&req, &mut resp).unwrap();
        assert_eq!(resp, req, "size {size}");
    }
    assert!(region.claim_of(index).is_some());
    let client_id = ch.client_id();
    assert_ne!(client_id, 0, "the host granted the claim to a client");
    assert_eq!(region.client_id(), client_id);
    drop(ch);
    assert_eq!(
        server.join().unwrap().unwrap(),
        7,
        "server saw Closed after 7 calls"
    );
    assert!(
        region.claim_of(index).is_none(),
        "host freed the closed channel"
    );
    assert_eq!(region.bulk_blocks_owned_by(client_id), 0, "no chunk leaked");
    // All channels can be claimed again, then the region is full.
    let all: Vec<_> = (0..region.channel_count())
        .map(|_| region.connect().unwrap())
        .collect();
    assert!(matches!(
        region.connect(),
        Err(TransportError::NoFreeChannel)
    ));
    drop(all);
}

#[test]
fn channel_closed_before_accept_is_freed_by_accept() {
    let tmp = TempRegion::new("early");
    let region = Region::create(
        tmp.path(),
        &small(DoorbellMode::Futex, Duration::from_secs(5)),
    )
    .unwrap();
    // Each channel from a handle of its own, as from separate processes: a process's later
    // claims would first wait for the verdict on its first, which no host gives here.
    let connect = || Region::open(tmp.path()).unwrap().connect();
    let short: Vec<_> = (0..region.channel_count())
        .map(|_| connect().unwrap())
        .collect();
    drop(short);
    assert!(
        matches!(connect(), Err(TransportError::NoFreeChannel)),
        "closed, not yet freed"
    );
    assert!(
        region.accept(Duration::from_millis(10)).unwrap().is_none(),
        "closed claims are not handed out"
    );
    let again: Vec<_> = (0..region.channel_count())
        .map(|_| connect().unwrap())
        .collect();
    assert_eq!(again.len(), 4);
}

#[test]
fn accept_times_out_quietly() {
    let tmp = TempRegion::new("accept");
    let region = Region::create(
        tmp.path(),
        &small(DoorbellMode::Futex, Duration::from_secs(5)),
    )
    .unwrap();
    let t = Instant::now();
    assert!(region.accept(Duration::from_millis(50)).unwrap().is_none());
    assert!(t.elapsed() >= Duration::from_millis(50) && t.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_claim_no_worker_serves_fails_within_the_peer_timeout() {
    let tmp = TempRegion::new("unserved");
    let timeout = Duration::from_millis(300);
    // A live host (this process beats for it) that never accepts the claim.
    let _host = Region::create(tmp.path(), &small(DoorbellMode::Futex, timeout)).unwrap();
    let guest = Region::open(tmp.path()).unwrap();
    let mut ch = guest.connect().unwrap();
    let mut resp = Vec::new();
    let t = Instant::now();
    assert!(matches!(
        ch.call(b"hello", &mut resp),
        Err(TransportError::PeerGone(GoneReason::NotServed))
    ));
    let waited = t.elapsed();
    assert!(
        waited >= timeout && waited < timeout * 3,
        "waited {waited:?} for a {timeout:?} peer timeout"
    );
}

#[test]
fn host_restart_is_reported_to_old_guests() {
    let tmp = TempRegion::new("restart");
    let config = small(DoorbellMode::Futex, Duration::from_secs(5));
    let first = Region::create(tmp.path(), &config).unwrap();
    let guest = Region::open(tmp.path()).unwrap();
    let mut ch = guest.connect().unwrap();
    let second = Region::create(tmp.path(), &config).unwrap();
    assert_eq!(second.generation(), first.generation() + 1);
    let mut resp = Vec::new();
    let t = Instant::now();
    assert!(matches!(
        ch.call(b"x", &mut resp),
        Err(TransportError::PeerGone(GoneReason::HostRestarted))
    ));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        guest.connect(),
        Err(TransportError::PeerGone(GoneReason::HostRestarted))
    ));
    assert!(
        Region::open(tmp.path()).unwrap().connect().is_ok(),
        "a fresh open joins the new generation"
    );
}

#[test]
fn forked_child_cannot_use_or_release_parent_channel() {
    let tmp = TempRegion::new("fork");
    let region = Region::create(
        tmp.path(),
        &small(DoorbellMode::Futex, Duration::from_secs(5)),
    )
    .unwrap();
    let mut ch = region.connect().unwrap();
    let index = ch.index();
    let server = echo_server(&region, Duration::ZERO);
    // SAFETY: the child only does a pid comparison, an atomic read and _exit (no locks, no allocation
    // beyond what the error construction needs, which glibc's fork handling keeps usable).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let mut resp = Vec::new();
        let refused = matches!(
            ch.call(b"x", &mut resp),
            Err(TransportError::ForkedChild { .. })
        );
        drop(ch);
        let still_claimed = region.claim_of(index).is_some();
        // The child is a new process: it has no identity until a claim of its own is granted.
        let no_identity = region.client_id() == 0;
        // SAFETY: _exit is always safe.
        unsafe {
            libc::_exit(if refused && still_claimed && no_identity {
                0
            } else {
                1
            })
        };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
    let mut resp = Vec::new();
    ch.call(b"parent still works", &mut resp).unwrap();
    assert_eq!(resp, b"parent still works");
    drop(ch);
    assert_eq!(server.join().unwrap().unwrap(), 1);
}

#[test]
fn bulk_blocks_are_shared_owned_and_bounded() {
    let tmp = TempRegion::new("bulk");
    let host = Region::create(
        tmp.path(),
        &small(DoorbellMode::Futex, Duration::from_secs(5)),
    )
    .unwrap();
    let guest = Region::open(tmp.path()).unwrap();
    let owner = 0x5eed;
    let block = guest.bulk_alloc(100_000, owner).unwrap();
    assert_eq!(block.len, 128 << 10, "rounded to whole 64 KiB blocks");
    guest.bulk_write(&block, 10, b"zero-copy later").unwrap();
    let mut out = [0u8; 15];
    host.bulk_read(&block, 10, &mut out).unwrap();
    assert_eq!(&out, b"zero-copy later");
    assert!(matches!(
        guest.bulk_write(&block, block.len - 2, b"abc"),
        Err(TransportError::BadBlock { .. })
    ));
    assert!(matches!(
        guest.bulk_alloc(1 << 20, owner),
        Err(TransportError::BulkExhausted(_))
    ));
    let rest = guest.bulk_alloc(384 << 10, owner).unwrap();
    assert!(matches!(
        guest.bulk_alloc(1, owner),
        Err(TransportError::BulkExhausted(_))
    ));
    let foreign = transport::BulkBlock {
        owner: owner + 1,
        ..block
    };
    assert!(matches!(
        host.bulk_free(foreign),
        Err(TransportError::BadBlock { .. })
    ));
    let outside = transport::BulkBlock {
        offset: 512 << 10,
        ..block
    };
    assert!(host.bulk_ptr(&outside).is_err());
    guest.bulk_free(rest).unwrap();
    assert_eq!(host.bulk_blocks_owned_by(owner), 2);
    assert_eq!(
        host.bulk_release_owner(owner),
        2,
        "host frees a dead client's blocks"
    );
    assert_eq!(host.bulk_blocks_owned_by(owner), 0);
}

/// Four echo round trips through any client, sizes up to 3 MB.
fn exercise(client: &mut dyn Transport) {
    let mut resp = Vec::new();
    for size in [0usize, 64, 70_000, 3_000_000] {
        let req: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        client.call(&req, &mut resp).unwrap();
        assert_eq!(resp, req);
    }
}

fn echo_stream(mut s: impl ServerTransport) -> u32 {
    let mut req = Vec::new();
    let mut n = 0;
    while s.recv(&mut req).is_ok() {
        if s.reply(&req).is_err() {
            break;
        }
        n += 1;
    }
    n
}

#[test]
fn tcp_and_unix_sockets_carry_the_same_messages_and_identity() {
    let tcp = TcpServer::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let s = tcp.accept().unwrap();
        assert_eq!(s.client().pid, std::process::id());
        echo_stream(s)
    });
    let mut client = TcpClient::connect(addr).unwrap();
    assert_ne!(client.identity().client_id, 0);
    exercise(&mut client);
    drop(client);
    assert_eq!(server.join().unwrap(), 4);

    let tmp = TempRegion::new("uds");
    let uds = UnixServer::bind(tmp.path()).unwrap();
    let server = std::thread::spawn(move || echo_stream(uds.accept().unwrap()));
    let mut client = UnixClient::connect(tmp.path()).unwrap();
    let mut resp = Vec::new();
    client.call(b"ping", &mut resp).unwrap();
    assert_eq!(resp, b"ping");
    drop(client);
    assert_eq!(server.join().unwrap(), 1);
}

#[test]
fn socket_server_gone_is_peer_gone() {
    let tcp = TcpServer::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = tcp.accept().unwrap();
        let mut req = Vec::new();
        s.recv(&mut req).unwrap();
        // Drop without replying: the client must see PeerGone, not hang.
    });
    let mut client = TcpClient::connect(addr).unwrap();
    let mut resp = Vec::new();
    assert!(matches!(
        client.call(b"x", &mut resp),
        Err(TransportError::PeerGone(GoneReason::Disconnected))
    ));
    server.join().unwrap();
}

#[test]
fn the_host_decides_who_a_claim_belongs_to() {
    let tmp = TempRegion::new("identity");
    let host = Region::create(
        tmp.path(),
        &small(DoorbellMode::Futex, Duration::from_secs(5)),
    )
    .unwrap();
    let guest = Region::open(tmp.path()).unwrap();
    let mut resp = Vec::new();
    // A process's first claim makes a new client; its later claims are the same client.
    let mut first = guest.connect().unwrap();
    let server = echo_server(&host, Duration::ZERO);
    first.call(b"one", &mut resp).unwrap();
    let id = first.client_id();
    assert_ne!(id, 0);
    let mut second = guest.connect().unwrap();
    let server2 = echo_server(&host, Duration::ZERO);
    second.call(b"two", &mut resp).unwrap();
    assert_eq!(second.client_id(), id);
    // Another process is another client.
    let mut other = Region::open(tmp.path()).unwrap().connect().unwrap();
    let server3 = echo_server(&host, Duration::ZERO);
    other.call(b"three", &mut resp).unwrap();
    assert_ne!(other.client_id(), id);
    // A host handle that never minted `id` refuses a claim presenting it; the guest then
    // comes back as a new client on its own.
    let forgetful = Region::open(tmp.path()).unwrap();
    let mut third = guest.connect().unwrap();
    let refused = forgetful
        .accept(Duration::from_secs(5))
        .unwrap()
        .expect("claim");
    assert_eq!(refused.presented_id, id);
    assert!(matches!(
        forgetful.admit(refused),
        Err(TransportError::Refused(transport::Refusal::UnknownIdentity))
    ));
    forgetful
        .refuse(&refused, transport::Refusal::UnknownIdentity)
        .unwrap();
    let again = std::thread::spawn(move || {
        let claim = forgetful
            .accept(Duration::from_secs(5))
            .unwrap()
            .expect("claim");
        assert_eq!(claim.presented_id, 0, "made again as a new client's");
        let mut ch = forgetful.admit_and_serve(claim).unwrap();
        let mut req = Vec::new();
        ch.recv(&mut req).unwrap();
        ch.reply(&req).unwrap();
    });
    third.call(b"four", &mut resp).unwrap();
    assert_eq!(resp, b"four");
    assert_ne!(third.client_id(), id);
    again.join().unwrap();
    drop((first, second, other, third));
    for s in [server, server2, server3] {
        assert_eq!(s.join().unwrap().unwrap(), 1);
    }
}
