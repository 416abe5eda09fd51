//! Real processes over a real /dev/shm file: many guests × threads × messages through per-client worker
//! processes, and peer death in both directions (SIGKILL mid-call, typed error within the bound).

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use transport::{ChannelClaim, DoorbellMode, GoneReason, Region, RegionConfig, TransportError};

const ENTRY: &str = "role_entry";

/// Sizes cycled by guests: inline, multi-slot, bulk, and 3.6× the 1 MiB bulk area (chunked stream).
const SIZES: [usize; 8] = [24, 64, 1000, 4_000, 70_000, 300_000, 24, 3_700_000];

fn config(mode: DoorbellMode, timeout: Duration) -> RegionConfig {
    RegionConfig {
        channel_count: 16,
        slot_count: 8,
        slot_size: 1024,
        bulk_size: 1 << 20,
        bulk_block_size: 64 << 10,
        doorbell: mode,
        peer_timeout: timeout,
    }
}

/// Child-process roles. A normal test run executes this as an empty test.
#[test]
fn role_entry() {
    let Some((role, args)) = role() else { return };
    let code = match role.as_str() {
        "guest" => guest_role(&args),
        "worker" => worker_role(&args),
        "sleepy-server" => sleepy_server_role(&args),
        "hang-guest" => hang_guest_role(&args),
        "thread-count" => thread_count_role(&args),
        other => {
            eprintln!("unknown role {other}");
            2
        }
    };
    std::process::exit(code);
}

/// Guest: `path threads messages`; each thread connects and checks every echoed payload.
fn guest_role(args: &[String]) -> i32 {
    let region = Region::open(&args[0]).expect("guest opens region");
    let threads: u32 = args[1].parse().unwrap();
    let messages: u32 = args[2].parse().unwrap();
    let pid = std::process::id();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let region = region.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut ch = region.connect().map_err(|e| e.to_string())?;
                let mut resp = Vec::new();
                for seq in 0..messages {
                    let len = SIZES[(seq as usize + t as usize) % SIZES.len()];
                    let req = make_payload(pid, t, seq, len);
                    ch.call(&req, &mut resp)
                        .map_err(|e| format!("call {seq}: {e}"))?;
                    if resp != req {
                        return Err(format!(
                            "thread {t} seq {seq}: reply is not our request ({:?})",
                            check_payload(&resp)
                        ));
                    }
                }
                Ok(())
            })
        })
        .collect();
    let mut code = 0;
    for h in handles {
        if let Err(e) = h.join().expect("guest thread") {
            eprintln!("guest {pid}: {e}");
            code = 1;
        }
    }
    report("DONE");
    code
}

/// Worker: `path`; reads claims (one per stdin line) and serves each in a thread, checking that every
/// request comes from the claim's process, one thread per channel, in sequence. Reports totals at EOF.
fn worker_role(args: &[String]) -> i32 {
    let region = Region::open(&args[0]).expect("worker opens region");
    let stats = Arc::new(Mutex::new((0u64, 0u64, Vec::<String>::new())));
    let mut threads = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let claim = ChannelClaim {
            index: f[0] as u32,
            epoch: f[1] as u32,
            client_id: f[2],
            presented_id: 0,
            proof: [0; 16],
            pid: f[3] as u32,
            tid: f[4] as u32,
            start_time: f[5],
        };
        let mut ch = region.serve(&claim).expect("serve claim");
        let stats = stats.clone();
        threads.push(std::thread::spawn(move || {
            let mut req = Vec::new();
            let mut next_seq = 0u32;
            let mut thread_tag = None;
            let fail = |m: String| stats.lock().unwrap().2.push(m);
            loop {
                match ch.recv(&mut req) {
                    Ok(()) => {}
                    Err(TransportError::Closed) => break,
                    Err(e) => return fail(format!("recv: {e}")),
                }
                match check_payload(&req) {
                    Ok((pid, thread, seq)) => {
                        if pid != claim.pid {
                            return fail(format!(
                                "misrouted: pid {pid} on channel of {}",
                                claim.pid
                            ));
                        }
                        if *thread_tag.get_or_insert(thread) != thread {
                            return fail("two guest threads on one channel".into());
                        }
                        if seq != next_seq {
                            return fail(format!(
                                "lost or duplicated: seq {seq}, expected {next_seq}"
                            ));
                        }
                        next_seq += 1;
                    }
                    Err(e) => return fail(e),
                }
                if let Err(e) = ch.reply(&req) {
                    return fail(format!("reply: {e}"));
                }
                let mut s = stats.lock().unwrap();
                s.0 += 1;
                s.1 += req.len() as u64;
            }
        }));
    }
    let channels = threads.len();
    for t in threads {
        t.join().expect("worker thread");
    }
    let s = stats.lock().unwrap();
    if s.2.is_empty() {
        report(&format!("OK {channels} {} {}", s.0, s.1));
        0
    } else {
        report(&format!("ERR {}", s.2.join("; ")));
        1
    }
}

/// Runs N guest processes × M threads × K messages through one worker process per guest process, as
/// vgpu-host does: the parent accepts claims and hands them to the client's worker.
fn many_processes(mode: DoorbellMode, n: usize, m: u32, k: u32) {
    let tmp = TempRegion::new("many");
    let region = Region::create(tmp.path(), &config(mode, Duration::from_secs(5))).unwrap();
    let path = tmp.path().display().to_string();
    let mut guests: Vec<Child> = (0..n)
        .map(|_| {
            spawn_role(
                ENTRY,
                "guest",
                &[path.clone(), m.to_string(), k.to_string()],
            )
        })
        .collect();
    let mut workers: HashMap<u64, Child> = HashMap::new();
    let mut done = vec![false; n];
    let deadline = Instant::now() + Duration::from_secs(90);
    while done.iter().any(|d| !d) {
        assert!(Instant::now() < deadline, "guests did not finish in time");
        if let Some(claim) = region.accept(Duration::from_millis(20)).unwrap() {
            // As vgpu-host: the host decides who the claim belongs to, grants it, and routes by
            // the id it assigned.
            let admitted = region.admit(claim).expect("admit");
            region
                .grant(&admitted.claim, admitted.credential.as_ref())
                .expect("grant");
            let claim = admitted.claim;
            let worker = workers
                .entry(claim.client_id)
                .or_insert_with(|| spawn_role(ENTRY, "worker", std::slice::from_ref(&path)));
            let line = format!(
                "{} {} {} {} {} {}\n",
                claim.index, claim.epoch, claim.client_id, claim.pid, claim.tid, claim.start_time
            );
            worker
                .stdin
                .as_mut()
                .unwrap()
                .write_all(line.as_bytes())
                .unwrap();
        }
        for (i, g) in guests.iter_mut().enumerate() {
            if !done[i] {
                if let Some(status) = g.try_wait().unwrap() {
                    assert!(status.success(), "guest process {i} failed: {status}");
                    done[i] = true;
                }
            }
        }
    }
    assert_eq!(workers.len(), n, "one worker per guest process");
    let (mut channels, mut messages) = (0, 0);
    for (_, mut w) in workers {
        drop(w.stdin.take());
        let mut out = BufReader::new(w.stdout.take().unwrap());
        let line = next_report(&mut out).expect("worker report");
        assert!(w.wait().unwrap().success(), "worker failed: {line}");
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], "OK", "worker: {line}");
        channels += f[1].parse::<u64>().unwrap();
        messages += f[2].parse::<u64>().unwrap();
    }
    assert_eq!(
        channels,
        n as u64 * u64::from(m),
        "every guest thread got one channel"
    );
    assert_eq!(
        messages,
        n as u64 * u64::from(m) * u64::from(k),
        "no message lost or duplicated"
    );
    for i in 0..region.channel_count() {
        assert!(
            region.claim_of(i).is_none(),
            "channel {i} still claimed after all clients left"
        );
    }
}

#[test]
fn many_processes_threads_messages_futex() {
    many_processes(DoorbellMode::Futex, 3, 3, 40);
}

#[test]
fn many_processes_threads_messages_poll() {
    many_processes(DoorbellMode::Poll, 2, 2, 24);
}

/// Server that takes one request and then never answers (until killed).
fn sleepy_server_role(args: &[String]) -> i32 {
    let region = Region::open(&args[0]).expect("open");
    let claim = region
        .accept(Duration::from_secs(20))
        .unwrap()
        .expect("a claim");
    let mut ch = region.admit_and_serve(claim).unwrap();
    let mut req = Vec::new();
    ch.recv(&mut req).unwrap();
    report("GOT");
    std::thread::sleep(Duration::from_secs(60));
    0
}

/// Guest that holds a long-lived bulk block, makes one call, then hangs (until killed).
fn hang_guest_role(args: &[String]) -> i32 {
    let region = Region::open(&args[0]).expect("open");
    let mut ch = region.connect().unwrap();
    let mut resp = Vec::new();
    ch.call(b"hello", &mut resp).unwrap();
    let block = region.bulk_alloc(100_000, ch.client_id()).unwrap();
    region.bulk_write(&block, 0, b"pinned").unwrap();
    report(&format!("CALLED {}", ch.client_id()));
    std::thread::sleep(Duration::from_secs(60));
    0
}

fn host_killed_mid_call(mode: DoorbellMode, timeout: Duration, expect: GoneReason) {
    let tmp = TempRegion::new("hostkill");
    let region = Region::create(tmp.path(), &config(mode, timeout)).unwrap();
    let mut server = spawn_role(ENTRY, "sleepy-server", &[tmp.path().display().to_string()]);
    let mut ch = region.connect().unwrap();
    let caller = std::thread::spawn(move || {
        let mut resp = Vec::new();
        let r = ch.call(b"work that never completes", &mut resp);
        (r, Instant::now(), ch)
    });
    let mut out = BufReader::new(server.stdout.take().unwrap());
    assert_eq!(next_report(&mut out).as_deref(), Some("GOT"));
    // The call must keep waiting while the server lives, even past the peer timeout.
    std::thread::sleep(timeout + Duration::from_millis(300));
    assert!(
        !caller.is_finished(),
        "call gave up although the server is alive"
    );
    server.kill().unwrap();
    let killed = Instant::now();
    let (result, ended, ch) = caller.join().unwrap();
    let took = ended.duration_since(killed);
    server.wait().unwrap();
    match result {
        Err(TransportError::PeerGone(reason)) => assert_eq!(reason, expect),
        other => panic!("expected PeerGone, got {other:?}"),
    }
    assert!(
        took <= timeout + Duration::from_millis(500),
        "noticed after {took:?}, bound {timeout:?}"
    );
    let index = ch.index();
    assert!(
        region.claim_of(index).is_some(),
        "channel still held by the guest"
    );
    drop(ch);
    assert!(
        region.claim_of(index).is_none() && region.connect().is_ok(),
        "the guest freed the channel its dead server cannot free"
    );
}

#[test]
fn host_killed_mid_call_futex_pid_check() {
    host_killed_mid_call(
        DoorbellMode::Futex,
        Duration::from_secs(1),
        GoneReason::ProcessExited,
    );
}

#[test]
fn host_killed_mid_call_poll_heartbeat() {
    host_killed_mid_call(
        DoorbellMode::Poll,
        Duration::from_millis(700),
        GoneReason::HeartbeatStalled,
    );
}

fn guest_killed(mode: DoorbellMode, timeout: Duration, expect: GoneReason) {
    let tmp = TempRegion::new("guestkill");
    let region = Region::create(tmp.path(), &config(mode, timeout)).unwrap();
    let mut guest = spawn_role(ENTRY, "hang-guest", &[tmp.path().display().to_string()]);
    let claim = region
        .accept(Duration::from_secs(20))
        .unwrap()
        .expect("a claim");
    assert_eq!(claim.pid, guest.id());
    let mut ch = region.admit_and_serve(claim).unwrap();
    let claim = *ch.claim();
    let mut req = Vec::new();
    ch.recv(&mut req).unwrap();
    assert_eq!(req, b"hello");
    ch.reply(b"hi").unwrap();
    let mut out = BufReader::new(guest.stdout.take().unwrap());
    let line = next_report(&mut out).unwrap();
    let token: u64 = line.strip_prefix("CALLED ").unwrap().parse().unwrap();
    assert_eq!(token, claim.client_id);
    assert!(
        region.bulk_blocks_owned_by(token) >= 2,
        "guest's long-lived block is recorded"
    );
    let server = std::thread::spawn(move || {
        let mut req = Vec::new();
        let r = ch.recv(&mut req);
        (r, Instant::now(), ch)
    });
    std::thread::sleep(timeout + Duration::from_millis(300));
    assert!(!server.is_finished(), "host gave up on a live, idle client");
    guest.kill().unwrap();
    let killed = Instant::now();
    let (result, ended, ch) = server.join().unwrap();
    guest.wait().unwrap();
    match result {
        Err(TransportError::PeerGone(reason)) => assert_eq!(reason, expect),
        other => panic!("expected PeerGone, got {other:?}"),
    }
    let took = ended.duration_since(killed);
    assert!(
        took <= timeout + Duration::from_millis(500),
        "noticed after {took:?}, bound {timeout:?}"
    );
    drop(ch);
    assert_eq!(
        region.bulk_blocks_owned_by(token),
        0,
        "dead client's blocks freed"
    );
    assert!(
        region.claim_of(claim.index).is_none(),
        "dead client's channel freed"
    );
}

#[test]
fn guest_killed_host_notices_futex() {
    guest_killed(
        DoorbellMode::Futex,
        Duration::from_secs(1),
        GoneReason::ProcessExited,
    );
}

#[test]
fn guest_killed_host_notices_poll() {
    guest_killed(
        DoorbellMode::Poll,
        Duration::from_millis(700),
        GoneReason::HeartbeatStalled,
    );
}

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Reports the thread count before opening, after opening, and after the first and second connect.
fn thread_count_role(args: &[String]) -> i32 {
    let before = threads_now();
    let region = Region::open(&args[0]).expect("open");
    let opened = threads_now();
    let first = region.connect().unwrap();
    let connected = threads_now();
    let second = region.connect().unwrap();
    let connected_twice = threads_now();
    drop((first, second));
    report(&format!("{before} {opened} {connected} {connected_twice}"));
    0
}

/// The shim must start no thread in processes that never call: opening starts none, the first
/// `connect` starts exactly one (the heartbeat), later connects none.
#[test]
fn guest_starts_no_thread_before_first_connect() {
    let tmp = TempRegion::new("threads");
    let _region = Region::create(
        tmp.path(),
        &config(DoorbellMode::Futex, Duration::from_secs(5)),
    )
    .unwrap();
    let mut child = spawn_role(ENTRY, "thread-count", &[tmp.path().display().to_string()]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let line = next_report(&mut out).expect("report");
    assert!(child.wait().unwrap().success());
    let n: Vec<usize> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(n[1], n[0], "open started a thread: {line}");
    assert_eq!(
        n[2],
        n[0] + 1,
        "first connect starts exactly the heartbeat thread: {line}"
    );
    assert_eq!(n[3], n[2], "second connect starts nothing: {line}");
}
