//! Helpers shared by the integration tests: temp region paths, tagged payloads, child-process roles.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A unique path under /dev/shm, removed on drop.
pub struct TempRegion(pub PathBuf);

impl TempRegion {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempRegion(PathBuf::from(format!(
            "/dev/shm/vgpu-transport-test-{tag}-{}-{n}",
            std::process::id()
        )))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRegion {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A payload tagged with its sender and sequence number, filled from them, and checksummed.
/// Layout: pid u32, thread u32, seq u32, len u32, body…, checksum u64 (last 8 bytes). `len >= 24`.
pub fn make_payload(pid: u32, thread: u32, seq: u32, len: usize) -> Vec<u8> {
    assert!(len >= 24);
    let mut v = vec![0u8; len];
    v[0..4].copy_from_slice(&pid.to_le_bytes());
    v[4..8].copy_from_slice(&thread.to_le_bytes());
    v[8..12].copy_from_slice(&seq.to_le_bytes());
    v[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    let seed = (u64::from(pid) << 40) ^ (u64::from(thread) << 20) ^ u64::from(seq);
    let body = &mut v[16..len - 8];
    for (j, chunk) in body.chunks_mut(8).enumerate() {
        let w = mix(seed ^ (j as u64)).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
    let sum = checksum(&v[..len - 8]);
    v[len - 8..].copy_from_slice(&sum.to_le_bytes());
    v
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    h
}

/// Verifies a payload from `make_payload`; returns (pid, thread, seq).
pub fn check_payload(v: &[u8]) -> Result<(u32, u32, u32), String> {
    if v.len() < 24 {
        return Err(format!("payload of {} bytes is too short", v.len()));
    }
    let u32_at = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    if u32_at(12) as usize != v.len() {
        return Err(format!(
            "payload says {} bytes, got {}",
            u32_at(12),
            v.len()
        ));
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&v[v.len() - 8..]);
    if checksum(&v[..v.len() - 8]) != u64::from_le_bytes(sum) {
        return Err(format!("checksum mismatch in payload of {} bytes", v.len()));
    }
    let (pid, thread, seq) = (u32_at(0), u32_at(4), u32_at(8));
    if make_payload(pid, thread, seq, v.len()) != v {
        return Err("payload body does not match its tag".into());
    }
    Ok((pid, thread, seq))
}

pub const ROLE_VAR: &str = "TRANSPORT_TEST_ROLE";
pub const ARGS_VAR: &str = "TRANSPORT_TEST_ARGS";

/// Starts this test binary again, running only `entry_test`, with a role and arguments in the environment.
pub fn spawn_role(entry_test: &str, role: &str, args: &[String]) -> Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args([entry_test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(ARGS_VAR, args.join(" "))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child role")
}

/// Reads child stdout until a line containing "@@ "; returns the rest of it.
pub fn next_report(out: &mut BufReader<ChildStdout>) -> Option<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).ok()? == 0 {
            return None;
        }
        // The harness may have printed "test role_entry ... " without a newline before our report.
        if let Some(at) = line.find("@@ ") {
            return Some(line[at + 3..].trim_end().to_string());
        }
    }
}

/// Role and arguments when this process is a child role.
pub fn role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    let args = std::env::var(ARGS_VAR).unwrap_or_default();
    Some((role, args.split_whitespace().map(str::to_string).collect()))
}

/// Prints a report line the parent picks out of the test harness's own output.
pub fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@ {line}");
    let _ = out.flush();
}
