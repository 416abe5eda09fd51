//! Round-trip and throughput of the shared-memory transport against Unix-socket and TCP-loopback
//! baselines. The server always runs in a forked process, as in the real guest/host setup.
//! The last line printed is one JSON object (throughputs in GB/s, 10^9 bytes per second).
//!
//! With `VGPU_BENCH_TLS=DIR` (material from `vgpuctl host tls-init DIR`) a `tls` row measures
//! TCP loopback inside TLS 1.3, as `vgpu-host --listen` serves it, beside the clear-text `tcp`
//! row. `--sockets` runs the socket rows only (uds, tcp, tls).

use std::time::{Duration, Instant};
use transport::{
    DoorbellMode, Region, RegionConfig, ServerTransport, StreamClient, StreamServer, TcpClient,
    TcpServer, TlsClient, TlsClientConfig, TlsServerConfig, Transport, TransportError,
};

const SMALL: usize = 64;
const MIB: usize = 1 << 20;

/// Serves echo for small requests and an 8-byte length for large ones, until the client leaves.
fn serve_loop(server: &mut dyn ServerTransport) {
    let mut req = Vec::new();
    loop {
        match server.recv(&mut req) {
            Ok(()) => {
                let r = if req.len() <= SMALL {
                    server.reply(&req)
                } else {
                    server.reply(&(req.len() as u64).to_le_bytes())
                };
                if r.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Forks (while this process has one thread). Returns 0 in the child, the child's pid in the parent.
fn fork() -> libc::pid_t {
    // SAFETY: called while this process has a single thread (heartbeat threads start after the fork).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    pid
}

/// Ends a forked child without running the parent's exit handlers.
fn exit_child() -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(0) }
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

struct Figures {
    p50_ns: u64,
    p99_ns: u64,
    gbps_1m: f64,
    gbps_64m: f64,
}

fn measure(
    client: &mut dyn Transport,
    rtt_iters: usize,
    big_iters: (usize, usize),
) -> Result<Figures, TransportError> {
    let req = [0x5au8; SMALL];
    let mut resp = Vec::with_capacity(64 * MIB);
    for _ in 0..rtt_iters / 10 {
        client.call(&req, &mut resp)?;
    }
    let mut samples = Vec::with_capacity(rtt_iters);
    for _ in 0..rtt_iters {
        let t = Instant::now();
        client.call(&req, &mut resp)?;
        samples.push(t.elapsed().as_nanos() as u64);
        assert_eq!(resp.len(), SMALL);
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let mut throughput = |size: usize, iters: usize| -> Result<f64, TransportError> {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        client.call(&payload, &mut resp)?;
        let t = Instant::now();
        for _ in 0..iters {
            client.call(&payload, &mut resp)?;
            assert_eq!(resp, (size as u64).to_le_bytes());
        }
        Ok((size * iters) as f64 / t.elapsed().as_secs_f64() / 1e9)
    };
    let gbps_1m = throughput(MIB, big_iters.0)?;
    let gbps_64m = throughput(64 * MIB, big_iters.1)?;
    Ok(Figures {
        p50_ns: pct(0.50),
        p99_ns: pct(0.99),
        gbps_1m,
        gbps_64m,
    })
}

/// Restricts the calling thread to `cpu`; returns the previous mask to restore.
fn pin(cpu: usize) -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; an all-zero set is valid.
    let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `old` is a valid out-buffer of the size given.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) } != 0
    {
        return None;
    }
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE on any machine this runs on (checked by the caller's
    // choice of CPUs 0 and 1); CPU_SET writes one bit of `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    (unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } == 0)
        .then_some(old)
}

fn unpin(old: Option<libc::cpu_set_t>) {
    if let Some(old) = old {
        // SAFETY: `old` came from sched_getaffinity.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &old) };
    }
}

/// `pin`: (server CPU, client CPU), to measure the mechanism without the scheduler's placement.
fn bench_shm(
    doorbell: DoorbellMode,
    rtt_iters: usize,
    pin_to: Option<(usize, usize)>,
) -> Result<Figures, TransportError> {
    let path = format!("/dev/shm/vgpu-transport-bench-{}", std::process::id());
    let _ = std::fs::remove_file(&path);
    let child_path = path.clone();
    let server = fork();
    if server == 0 {
        if let Some((server_cpu, _)) = pin_to {
            pin(server_cpu);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let region = loop {
            match Region::open(&child_path) {
                Ok(r) => break r,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("bench server cannot open region: {e}"),
            }
        };
        let Ok(Some(claim)) = region.accept(Duration::from_secs(10)) else {
            exit_child()
        };
        let Ok(mut channel) = region.admit_and_serve(claim) else {
            exit_child()
        };
        serve_loop(&mut channel);
        exit_child();
    }
    // A 32 MiB bulk area: 1 MiB payloads go through it, 64 MiB payloads stream through it in chunks.
    let config = RegionConfig {
        channel_count: 4,
        slot_count: 16,
        bulk_size: 32 << 20,
        doorbell,
        ..RegionConfig::default()
    };
    let region = Region::create(&path, &config)?;
    let mut channel = region.connect()?;
    let old = pin_to.and_then(|(_, client_cpu)| pin(client_cpu));
    let figures = measure(&mut channel, rtt_iters, (400, 6));
    unpin(old);
    drop(channel);
    reap(server);
    let _ = std::fs::remove_file(&path);
    figures
}

fn bench_uds() -> Result<Figures, TransportError> {
    let (a, b) = std::os::unix::net::UnixStream::pair().map_err(|e| TransportError::Io {
        context: "socketpair",
        source: e,
    })?;
    let server = fork();
    if server == 0 {
        drop(a);
        if let Ok(mut s) = StreamServer::over(b) {
            serve_loop(&mut s);
        }
        exit_child();
    }
    drop(b);
    let mut client = StreamClient::over(a)?;
    let figures = measure(&mut client, 20_000, (200, 4));
    drop(client);
    reap(server);
    figures
}

fn bench_tcp() -> Result<Figures, TransportError> {
    let listener = TcpServer::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = fork();
    if server == 0 {
        if let Ok(mut s) = listener.accept() {
            serve_loop(&mut s);
        }
        exit_child();
    }
    drop(listener);
    let mut client = TcpClient::connect(addr)?;
    let figures = measure(&mut client, 20_000, (200, 4));
    drop(client);
    reap(server);
    figures
}

/// TCP loopback inside TLS 1.3 with client certificates, from the material in `dir`.
fn bench_tls(dir: &std::path::Path) -> Result<Figures, String> {
    let host = TlsServerConfig::load(
        &dir.join("host.pem"),
        &dir.join("host.key"),
        &dir.join("ca.pem"),
    )
    .map_err(|e| e.to_string())?;
    let guest = TlsClientConfig::load(
        &dir.join("ca.pem"),
        &dir.join("client.pem"),
        &dir.join("client.key"),
        "127.0.0.1",
    )
    .map_err(|e| e.to_string())?;
    let listener = TcpServer::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = fork();
    if server == 0 {
        if let Ok(mut s) = listener.accept_tls(&host, None) {
            serve_loop(&mut s);
        }
        exit_child();
    }
    drop(listener);
    let mut client = TlsClient::connect_tls(addr, &guest, None).map_err(|e| e.to_string())?;
    let figures = measure(&mut client, 20_000, (200, 4)).map_err(|e| e.to_string());
    drop(client);
    reap(server);
    figures
}

/// How fast one core seals 16 KiB TLS 1.3 records with `suite` (rustls over *ring*), in GB/s of
/// plaintext: the bound on a TLS row's bulk figures when each side has a core to itself.
fn seal_gbps(suite: rustls::SupportedCipherSuite) -> f64 {
    use rustls::crypto::cipher::{AeadKey, Iv, OutboundChunks, OutboundPlainMessage};
    // Refutable only when another crate of the build turns on rustls's `tls12` feature.
    #[allow(irrefutable_let_patterns)]
    let rustls::SupportedCipherSuite::Tls13(suite) = suite
    else {
        return 0.0;
    };
    if suite.aead_alg.key_len() != 32 {
        return 0.0; // `AeadKey::from` makes 32-byte keys only
    }
    let mut sealer = suite
        .aead_alg
        .encrypter(AeadKey::from([7u8; 32]), Iv::from([9u8; 12]));
    let record = vec![0x5au8; transport::TLS_MAX_PLAINTEXT];
    let records = 4096u64; // 64 MiB
    let start = Instant::now();
    for seq in 0..records {
        let message = OutboundPlainMessage {
            typ: rustls::ContentType::ApplicationData,
            version: rustls::ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(&record),
        };
        let sealed = sealer.encrypt(message, seq).map(|m| m.encode().len());
        assert!(sealed.is_ok_and(|n| n > record.len()));
    }
    (records as usize * record.len()) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn print_row(name: &str, f: &Figures) {
    println!(
        "{name:>4}: 64 B rtt p50 {:>7} ns  p99 {:>7} ns   1 MiB {:>6.2} GB/s   64 MiB {:>6.2} GB/s",
        f.p50_ns, f.p99_ns, f.gbps_1m, f.gbps_64m
    );
}

/// The `tls` row, when `VGPU_BENCH_TLS` names the material; `Err` ends the run.
fn tls_row() -> Result<Option<Figures>, TransportError> {
    let Some(dir) = std::env::var_os("VGPU_BENCH_TLS").filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    bench_tls(std::path::Path::new(&dir))
        .map(Some)
        .map_err(|e| TransportError::Io {
            context: "tls bench (VGPU_BENCH_TLS)",
            source: std::io::Error::other(e),
        })
}

/// `--sockets`: the uds, tcp and (with `VGPU_BENCH_TLS`) tls rows, and their JSON.
fn sockets_only() -> Result<(), TransportError> {
    println!("load average before: {}", load());
    let uds = bench_uds()?;
    let tcp = bench_tcp()?;
    let tls = tls_row()?;
    print_row("uds", &uds);
    print_row("tcp", &tcp);
    if let Some(tls) = &tls {
        print_row("tls", tls);
        println!(
            "sealing 16 KiB records on one core: ChaCha20-Poly1305 {:.2} GB/s (the suite used), \
             AES-256-GCM {:.2} GB/s (for comparison)",
            seal_gbps(rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256),
            seal_gbps(rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384)
        );
    }
    println!("load average after: {}", load());
    let tls_json = tls.map_or(String::new(), |t| {
        format!(
            ",\"tls_rtt_p50_ns\":{},\"tls_rtt_p99_ns\":{},\"tls_bulk_gbps\":{:.3},\"tls_bulk_1mib_gbps\":{:.3}",
            t.p50_ns, t.p99_ns, t.gbps_64m, t.gbps_1m
        )
    });
    println!(
        "{{\"uds_rtt_p50_ns\":{},\"uds_rtt_p99_ns\":{},\"tcp_rtt_p50_ns\":{},\"tcp_rtt_p99_ns\":{},\
         \"tcp_bulk_gbps\":{:.3},\"tcp_bulk_1mib_gbps\":{:.3}{tls_json},\"spin_us\":{}}}",
        uds.p50_ns,
        uds.p99_ns,
        tcp.p50_ns,
        tcp.p99_ns,
        tcp.gbps_64m,
        tcp.gbps_1m,
        transport::doorbell_spin().as_micros()
    );
    Ok(())
}

/// The machine's floor: two processes bouncing one cache line through shared memory with nothing
/// else (no frames, no doorbells), so the transport's own cost can be read off the difference.
fn floor_rtt_ns(pin_to: Option<(usize, usize)>, rounds: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: a fresh anonymous shared mapping of two pages; checked below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap failed");
    // SAFETY: the mapping is page-aligned, zeroed and lives until munmap below; one word at the
    // start of each page, so the two never share a cache line.
    let (ping, pong) = unsafe {
        (
            &*map.cast::<AtomicU64>(),
            &*map.cast::<u8>().add(4096).cast::<AtomicU64>(),
        )
    };
    let child = fork();
    if child == 0 {
        if let Some((cpu, _)) = pin_to {
            pin(cpu);
        }
        for i in 1..=rounds {
            // SYNC POINT: pairs with the parent's Release store of `ping`.
            while ping.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            // SYNC POINT: pairs with the parent's Acquire load of `pong`.
            pong.store(i, Ordering::Release);
        }
        exit_child();
    }
    let old = pin_to.and_then(|(_, cpu)| pin(cpu));
    let start = Instant::now();
    for i in 1..=rounds {
        // SYNC POINT: pairs with the child's Acquire load of `ping`.
        ping.store(i, Ordering::Release);
        // SYNC POINT: pairs with the child's Release store of `pong`.
        while pong.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
    }
    let ns = start.elapsed().as_nanos() as u64 / rounds;
    unpin(old);
    reap(child);
    // SAFETY: unmapping what we mapped; nothing refers to it any more.
    unsafe { libc::munmap(map, 8192) };
    ns
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let run = || -> Result<(), TransportError> {
        println!("load average before: {}", load());
        let shm = bench_shm(DoorbellMode::Futex, 200_000, None)?;
        // The same, each process pinned to one of the first two CPUs (on many machines two
        // hyperthreads of one core): the mechanism's cost without the scheduler's placement.
        let pinned = bench_shm(DoorbellMode::Futex, 200_000, Some((0, 1)))?;
        // Both processes on one CPU: the cost of a round trip when runnable threads outnumber
        // cores and the peer is queued behind the waiter (run with VGPU_SPIN_US=1000, as under
        // `vgpuctl run`, to see what a long spin costs there).
        let one_cpu = bench_shm(DoorbellMode::Futex, 2_000, Some((0, 0)))?;
        let poll = bench_shm(DoorbellMode::Poll, 50_000, None)?;
        let floor = floor_rtt_ns(None, 200_000);
        let floor_pinned = floor_rtt_ns(Some((0, 1)), 200_000);
        println!("floor: bare cache-line ping-pong between two processes {floor} ns ({floor_pinned} ns pinned to CPUs 0 and 1)");
        let uds = bench_uds()?;
        let tcp = bench_tcp()?;
        let tls = tls_row()?;
        for (name, f) in [
            ("shm", &shm),
            ("pin", &pinned),
            ("one", &one_cpu),
            ("poll", &poll),
            ("uds", &uds),
            ("tcp", &tcp),
        ] {
            print_row(name, f);
        }
        let tls_json = tls.map_or(String::new(), |t| {
            print_row("tls", &t);
            format!(
                "\"tls_rtt_p50_ns\":{},\"tls_rtt_p99_ns\":{},\"tls_bulk_gbps\":{:.3},\"tls_bulk_1mib_gbps\":{:.3},",
                t.p50_ns, t.p99_ns, t.gbps_64m, t.gbps_1m
            )
        });
        println!("load average after: {}", load());
        println!(
            "{{\"rtt_p50_ns\":{},\"rtt_p99_ns\":{},\"uds_rtt_p50_ns\":{},\"bulk_gbps\":{:.3},\"uds_bulk_gbps\":{:.3},\
             \"bulk_1mib_gbps\":{:.3},\"uds_bulk_1mib_gbps\":{:.3},\"uds_rtt_p99_ns\":{},\"tcp_rtt_p50_ns\":{},\
             \"tcp_rtt_p99_ns\":{},\"tcp_bulk_gbps\":{:.3},\"tcp_bulk_1mib_gbps\":{:.3},\"poll_rtt_p50_ns\":{},\
             \"poll_rtt_p99_ns\":{},\"poll_bulk_gbps\":{:.3},\"pinned_rtt_p50_ns\":{},\"pinned_rtt_p99_ns\":{},\
             \"pinned_bulk_gbps\":{:.3},\"floor_rtt_ns\":{},\"floor_pinned_rtt_ns\":{},\
             \"one_cpu_rtt_p50_ns\":{},\"one_cpu_rtt_p99_ns\":{},{tls_json}\"spin_us\":{}}}",
            shm.p50_ns,
            shm.p99_ns,
            uds.p50_ns,
            shm.gbps_64m,
            uds.gbps_64m,
            shm.gbps_1m,
            uds.gbps_1m,
            uds.p99_ns,
            tcp.p50_ns,
            tcp.p99_ns,
            tcp.gbps_64m,
            tcp.gbps_1m,
            poll.p50_ns,
            poll.p99_ns,
            poll.gbps_64m,
            pinned.p50_ns,
            pinned.p99_ns,
            pinned.gbps_64m,
            floor,
            floor_pinned,
            one_cpu.p50_ns,
            one_cpu.p99_ns,
            transport::doorbell_spin().as_micros()
        );
        Ok(())
    };
    let sockets = std::env::args().skip(1).any(|a| a == "--sockets");
    let result = if sockets { sockets_only() } else { run() };
    if let Err(e) = result {
        eprintln!("transport-bench: {e}");
        std::process::exit(1);
    }
}
