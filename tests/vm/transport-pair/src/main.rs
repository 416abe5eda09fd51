//! Cross-VM transport check: the host role creates a `transport::Region` on the QEMU backing file,
//! the guest role opens the ivshmem BAR (`VGPU_REGION`) and makes calls on several channels; the
//! host echoes every request and both sides check every byte. Poll doorbell mode (a futex cannot
//! wake a process in another kernel).
//!
//! Usage: `transport-pair host|guest [THREADS] [CALLS]` with `VGPU_REGION` set (defaults 2, 100).
//! Every wait is bounded; exit 0 on success, 1 on a failed check, 2 on bad usage.

use std::process::ExitCode;
use std::time::{Duration, Instant};
use transport::{DoorbellMode, GuestChannel, HostChannel, Region, RegionConfig, TransportError};

/// Request sizes, cycled: inline in one slot, several slots, and the bulk path.
const SIZES: [usize; 6] = [24, 1000, 4000, 70_000, 200_000, 8];
/// Bound on how long either side waits for the other to appear.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!("usage: transport-pair host|guest [THREADS] [CALLS]  (VGPU_REGION must be set)");
        ExitCode::from(2)
    };
    let Ok(path) = std::env::var("VGPU_REGION") else {
        return usage();
    };
    let number = |i: usize, default: usize| match args.get(i) {
        None => Some(default),
        Some(s) => s.parse().ok().filter(|&n| n > 0),
    };
    let (Some(threads), Some(calls)) = (number(2, 2), number(3, 100)) else {
        return usage();
    };
    let result = match args.get(1).map(String::as_str) {
        Some("host") => host(&path, threads, calls),
        Some("guest") => guest(&path, threads, calls),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("transport-pair: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The request a guest thread sends as call `call`; its bytes depend on both numbers.
fn request(thread: usize, call: usize) -> Vec<u8> {
    let len = SIZES[call % SIZES.len()];
    let seed = (thread as u64) << 32 | call as u64;
    (0..len as u64)
        .map(|j| (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ j.wrapping_mul(0x2545_f491)) as u8)
        .collect()
}

fn host(path: &str, threads: usize, calls: usize) -> Result<(), String> {
    let config = RegionConfig {
        channel_count: 8,
        slot_count: 8,
        slot_size: 1024,
        bulk_size: 256 << 10,
        bulk_block_size: 64 << 10,
        doorbell: DoorbellMode::Poll,
        peer_timeout: Duration::from_secs(10),
    };
    let region = Region::create(path, &config).map_err(|e| format!("create {path}: {e}"))?;
    println!("host: region ready on {path}; waiting for {threads} channels");
    let start = Instant::now();
    let mut servers = Vec::new();
    while servers.len() < threads {
        let left = ATTACH_TIMEOUT.saturating_sub(start.elapsed());
        let claim = region
            .accept(left)
            .map_err(|e| format!("accept: {e}"))?
            .ok_or_else(|| {
                format!(
                    "only {} of {threads} channels claimed in time",
                    servers.len()
                )
            })?;
        let channel = region
            .admit_and_serve(claim)
            .map_err(|e| format!("admit and serve {claim:?}: {e}"))?;
        servers.push(std::thread::spawn(move || echo(channel, calls)));
    }
    println!(
        "host: {threads} channels claimed after {:.2?}",
        start.elapsed()
    );
    let mut bytes = 0;
    for server in servers {
        bytes += server
            .join()
            .map_err(|_| "a server thread panicked".to_string())??;
    }
    println!(
        "host: ok: {} calls, {bytes} request bytes echoed, {:.2?} since the region was created",
        threads * calls,
        start.elapsed()
    );
    Ok(())
}

/// Serves one channel until the guest closes it; checks each request is the next one expected.
fn echo(mut channel: HostChannel, calls: usize) -> Result<usize, String> {
    let mut req = Vec::new();
    let mut served = 0;
    let mut bytes = 0;
    let mut thread = None;
    loop {
        match channel.recv(&mut req) {
            Ok(()) => {}
            Err(TransportError::Closed) => break,
            Err(e) => return Err(format!("recv after {served} calls: {e}")),
        }
        // The first request's bytes identify the guest thread; later ones must follow in order.
        let t = *thread.get_or_insert_with(|| (0..64).find(|&t| request(t, 0) == req));
        let Some(t) = t else {
            return Err("first request matches no guest thread".into());
        };
        if req != request(t, served) {
            return Err(format!(
                "thread {t} call {served}: request corrupted ({} bytes)",
                req.len()
            ));
        }
        channel
            .reply(&req)
            .map_err(|e| format!("reply to call {served}: {e}"))?;
        served += 1;
        bytes += req.len();
    }
    if served != calls {
        return Err(format!("channel closed after {served} of {calls} calls"));
    }
    Ok(bytes)
}

fn guest(path: &str, threads: usize, calls: usize) -> Result<(), String> {
    let start = Instant::now();
    let region = loop {
        match Region::open(path) {
            Ok(region) => break region,
            // The host may not have initialised the region yet.
            Err(e) if start.elapsed() < ATTACH_TIMEOUT => {
                if start.elapsed() > Duration::from_secs(5) {
                    eprintln!("guest: still waiting for the host: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("open {path}: {e}")),
        }
    };
    println!("guest: region opened after {:.2?}", start.elapsed());
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let region = region.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut channel: GuestChannel = region
                    .connect()
                    .map_err(|e| format!("thread {t}: connect: {e}"))?;
                let mut resp = Vec::new();
                for call in 0..calls {
                    let req = request(t, call);
                    channel
                        .call(&req, &mut resp)
                        .map_err(|e| format!("thread {t} call {call}: {e}"))?;
                    if resp != req {
                        return Err(format!(
                            "thread {t} call {call}: reply differs from request"
                        ));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| "a guest thread panicked".to_string())??;
    }
    println!(
        "guest: ok: {threads} threads x {calls} calls in {:.2?}",
        start.elapsed()
    );
    Ok(())
}
