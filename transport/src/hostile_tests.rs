//! Hostile bytes: corrupt headers, ring counters, frames, bulk offsets and stream lengths written by a
//! peer must give typed errors, never a panic, an out-of-bounds access or a hang.

use crate::layout::{FrameHeader, FRAME_BULK, FRAME_INLINE, FRAME_LAST};
use crate::ring::slot_seq;
use crate::{bulk, DoorbellMode, Region, RegionConfig, TransportError};
use proptest::prelude::*;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "/dev/shm/vgpu-transport-unit-{tag}-{}",
        std::process::id()
    ))
}

fn config() -> RegionConfig {
    RegionConfig {
        channel_count: 4,
        slot_count: 4,
        slot_size: 256,
        bulk_size: 256 << 10,
        bulk_block_size: 64 << 10,
        doorbell: DoorbellMode::Futex,
        peer_timeout: crate::DEFAULT_PEER_TIMEOUT,
    }
}

/// Offsets of header fields, to aim some corruption at meaningful places.
const FIELDS: [u64; 20] = [
    0, 8, 12, 16, 24, 28, 32, 36, 40, 44, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120,
];

#[test]
fn corrupt_headers_are_refused_or_safely_bounded() {
    let path = temp_path("hdr");
    let _host = Region::create(&path, &config()).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let file_len = file.metadata().unwrap().len();
    let mut pristine = vec![0u8; 4096];
    file.read_exact_at(&mut pristine, 0).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(400));
    let opened = std::cell::Cell::new((0u32, 0u32));
    let strategy = (
        proptest::collection::vec((0u64..300, any::<u8>()), 0..6),
        proptest::collection::vec((0usize..FIELDS.len(), any::<u64>(), any::<bool>()), 0..3),
    );
    runner
        .run(&strategy, |(bytes, fields)| {
            file.write_all_at(&pristine, 0).unwrap();
            for (at, b) in bytes {
                file.write_all_at(&[b], at).unwrap();
            }
            for (f, value, wide) in fields {
                let v = value.to_le_bytes();
                file.write_all_at(if wide { &v[..] } else { &v[..4] }, FIELDS[f])
                    .unwrap();
            }
            let result = Region::open(&path);
            let (ok, err) = opened.get();
            opened.set(if result.is_ok() {
                (ok + 1, err)
            } else {
                (ok, err + 1)
            });
            if let Ok(region) = result {
                let l = region.inner.layout;
                prop_assert!(l.capacity <= file_len);
                for i in 0..region.channel_count() {
                    let _ = region.claim_of(i);
                }
                let _ = region.accept(Duration::ZERO);
            }
            Ok(())
        })
        .unwrap();
    let (ok, err) = opened.get();
    assert!(
        ok > 0 && err > 0,
        "corruption both accepted and refused: {ok} opened, {err} refused"
    );
    drop(file);
    let _ = std::fs::remove_file(&path);
}

#[derive(Debug, Clone)]
struct HostileFrame {
    kind: u32,
    len: u32,
    bulk_offset: u64,
    bulk_len: u64,
    seq: HostileSeq,
}

/// What the slot's sequence word says.
#[derive(Debug, Clone, Copy)]
enum HostileSeq {
    /// Published for this claim (what a correct peer writes).
    Published,
    /// Published under the previous claim of the channel.
    EarlierClaim,
    /// Anything.
    Any(u64),
}

fn hostile_frame() -> impl Strategy<Value = HostileFrame> {
    let kind = prop_oneof![
        Just(FRAME_INLINE),
        Just(FRAME_INLINE | FRAME_LAST),
        Just(FRAME_BULK),
        Just(FRAME_BULK | FRAME_LAST),
        any::<u32>(),
    ];
    let len = prop_oneof![0u32..300, any::<u32>()];
    let off = prop_oneof![
        (0u64..6).prop_map(|b| b * (64 << 10)),
        0u64..(300 << 10),
        any::<u64>()
    ];
    let blen = prop_oneof![1u64..(200 << 10), Just(64 << 10), any::<u64>()];
    let seq = prop_oneof![
        6 => Just(HostileSeq::Published),
        1 => Just(HostileSeq::EarlierClaim),
        1 => any::<u64>().prop_map(HostileSeq::Any),
    ];
    (kind, len, off, blen, seq).prop_map(|(kind, len, bulk_offset, bulk_len, seq)| HostileFrame {
        kind,
        len,
        bulk_offset,
        bulk_len,
        seq,
    })
}

#[test]
fn hostile_frames_and_counters_give_errors_not_crashes() {
    let path = temp_path("frames");
    let region = Region::create(&path, &config()).unwrap();
    let l = region.inner.layout;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    let outcomes = std::cell::Cell::new([0u32; 3]);
    let strategy = (
        proptest::collection::vec(hostile_frame(), 0..5),
        prop_oneof![0u32..6, any::<u32>()],
        0u64..5,
    );
    runner
        .run(&strategy, |(frames, head, owned_blocks)| {
            let guest = region.connect().unwrap();
            let claim = region.accept(Duration::from_secs(1)).unwrap().unwrap();
            let mut host = region.admit_and_serve(claim).unwrap();
            let claim = *host.claim();
            if owned_blocks > 0 {
                bulk::alloc(&region, owned_blocks * (64 << 10), claim.client_id, true);
            }
            for (slot, f) in frames.iter().enumerate().take(l.slot_count as usize) {
                let h = FrameHeader {
                    kind: f.kind,
                    len: f.len,
                    bulk_offset: f.bulk_offset,
                    bulk_len: f.bulk_len,
                };
                let p = region.ptr_at(
                    l.slot_offset(claim.index, false, slot as u32),
                    u64::from(l.slot_size),
                );
                let bytes = h.encode();
                // SAFETY: `p` points at a whole slot inside the mapping (checked by ptr_at); the bytes
                // end before the sequence word.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
                let seq = match f.seq {
                    HostileSeq::Published => slot_seq(claim.epoch, slot as u32),
                    HostileSeq::EarlierClaim => slot_seq(claim.epoch.wrapping_sub(1), slot as u32),
                    HostileSeq::Any(v) => v,
                };
                region
                    .slot_seq(claim.index, false, slot as u32)
                    .store(seq, Ordering::Release);
            }
            region
                .channel(claim.index)
                .request
                .head
                .0
                .store(head, Ordering::Release);
            drop(guest);
            let mut out = Vec::new();
            let r = host.recv(&mut out);
            prop_assert!(
                matches!(
                    r,
                    Ok(()) | Err(TransportError::Corrupt(_)) | Err(TransportError::Closed)
                ),
                "unexpected {r:?}"
            );
            prop_assert!(out.len() <= 4 * (200 << 10) + 4 * 256);
            let mut o = outcomes.get();
            o[match r {
                Ok(()) => 0,
                Err(TransportError::Corrupt(_)) => 1,
                _ => 2,
            }] += 1;
            outcomes.set(o);
            drop(host);
            region.bulk_release_owner(claim.client_id);
            Ok(())
        })
        .unwrap();
    let o = outcomes.get();
    assert!(
        o.iter().all(|&n| n > 0),
        "messages accepted / corrupt / closed: {o:?}"
    );
    let _ = std::fs::remove_file(&path);
}

/// Writes a valid 4-byte INLINE|LAST frame into slot 0 of the request ring with sequence word `seq`,
/// and sets the ring's `head`.
fn plant_request(region: &Region, index: u32, seq: u64, head: u32) {
    let l = region.inner.layout;
    let p = region.ptr_at(l.slot_offset(index, false, 0), u64::from(l.slot_size));
    let bytes = FrameHeader {
        kind: FRAME_INLINE | FRAME_LAST,
        len: 4,
        bulk_offset: 0,
        bulk_len: 0,
    }
    .encode();
    // SAFETY: `p` points at a whole slot inside the mapping (checked by ptr_at); the bytes end before
    // the sequence word.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    region
        .slot_seq(index, false, 0)
        .store(seq, Ordering::Release);
    region
        .channel(index)
        .request
        .head
        .0
        .store(head, Ordering::Release);
}

/// With the client alive the host reaches the sleep path, which checks what the fast path does not
/// read: a `head` beyond the ring, or a `head` saying the next slot is published while its sequence
/// word disagrees, is `Corrupt` (neither a busy loop nor a hang). A frame whose sequence word was
/// written under the previous claim is never delivered, and a correct one is.
#[test]
fn hostile_head_and_sequence_words() {
    let path = temp_path("seq");
    let region = Region::create(&path, &config()).unwrap();
    let cases: [(Option<u64>, u32, Option<&str>); 4] = [
        (None, 100, Some("ring counter out of range")),
        (None, 1, Some("ring head ahead of the slot sequence word")),
        (
            Some(0x1234_5678),
            1,
            Some("ring head ahead of the slot sequence word"),
        ),
        (Some(u64::MAX), 0, None),
    ];
    for (seq, head, expect) in cases {
        let guest = region.connect().unwrap();
        let claim = region.accept(Duration::from_secs(1)).unwrap().unwrap();
        let mut host = region.admit_and_serve(claim).unwrap();
        let claim = *host.claim();
        let earlier = slot_seq(claim.epoch.wrapping_sub(1), 0);
        plant_request(&region, claim.index, seq.unwrap_or(earlier), head);
        let mut out = Vec::new();
        match expect {
            Some(what) => {
                let r = host.recv(&mut out);
                assert!(
                    matches!(r, Err(TransportError::Corrupt(m)) if m == what),
                    "{r:?}"
                );
            }
            None => {
                // Not published: the host waits until the client leaves, then reports it.
                drop(guest);
                assert!(matches!(host.recv(&mut out), Err(TransportError::Closed)));
                continue;
            }
        }
        drop(guest);
    }
    // The same frame with the word of this claim is delivered.
    let guest = region.connect().unwrap();
    let claim = region.accept(Duration::from_secs(1)).unwrap().unwrap();
    let mut host = region.admit_and_serve(claim).unwrap();
    let claim = *host.claim();
    plant_request(&region, claim.index, slot_seq(claim.epoch, 0), 1);
    let mut out = Vec::new();
    host.recv(&mut out).unwrap();
    assert_eq!(out.len(), 4);
    drop(guest);
    drop(host);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn hostile_bulk_handles_are_refused() {
    let path = temp_path("bulk");
    let region = Region::create(&path, &config()).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(500));
    runner
        .run(
            &(any::<u64>(), any::<u64>(), 0u64..4, any::<u64>()),
            |(offset, len, owner, at)| {
                let block = crate::BulkBlock { offset, len, owner };
                let in_range = bulk::check_range(&region, offset, len).is_some();
                prop_assert_eq!(region.bulk_ptr(&block).is_ok(), in_range);
                let mut buf = [0u8; 16];
                if region.bulk_read(&block, at, &mut buf).is_ok() {
                    prop_assert!(in_range && at + 16 <= len);
                }
                prop_assert!(
                    region.bulk_free(block).is_err(),
                    "nothing is allocated, nothing can be freed"
                );
                Ok(())
            },
        )
        .unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn hostile_stream_bytes_give_errors() {
    use crate::stream::StreamServer;
    use crate::ServerTransport;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    runner
        .run(
            &(proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()),
            |(garbage, good_hello)| {
                let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                let mut bytes = Vec::new();
                if good_hello {
                    bytes.extend_from_slice(&crate::STREAM_MAGIC.to_le_bytes());
                    bytes.extend_from_slice(&crate::STREAM_VERSION.to_le_bytes());
                    bytes.extend_from_slice(&[0u8; 28]);
                }
                bytes.extend_from_slice(&garbage);
                std::io::Write::write_all(&mut &a, &bytes).unwrap();
                drop(a);
                match StreamServer::over(b) {
                    Ok(mut s) => {
                        let mut req = Vec::new();
                        while s.recv(&mut req).is_ok() {}
                    }
                    Err(e) => {
                        let typed = matches!(
                            e,
                            TransportError::BadHandshake(_)
                                | TransportError::Refused(_)
                                | TransportError::PeerGone(_)
                                | TransportError::Io { .. }
                        );
                        prop_assert!(typed, "unexpected {:?}", e);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn bar_size_comes_from_the_sysfs_resource_table() {
    let dir = temp_path("sysfs");
    std::fs::create_dir_all(&dir).unwrap();
    // Format of /sys/bus/pci/devices/*/resource: one "start end flags" line per BAR.
    let table = "0x00000000fea00000 0x00000000fea000ff 0x0000000000040200\n\
                 0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                 0x0000000800000000 0x0000000807ffffff 0x000000000014220c\n";
    std::fs::write(dir.join("resource"), table).unwrap();
    assert_eq!(
        crate::region::file::sysfs_bar_size(&dir.join("resource2")),
        Some(128 << 20)
    );
    assert_eq!(
        crate::region::file::sysfs_bar_size(&dir.join("resource1")),
        None,
        "empty BAR"
    );
    assert_eq!(
        crate::region::file::sysfs_bar_size(&dir.join("resource7")),
        None,
        "no such BAR"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
