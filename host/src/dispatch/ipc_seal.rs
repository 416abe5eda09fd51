//! Sealed CUDA IPC handles (issue 11: a guest never reaches another client's GPU memory).
//!
//! `cuIpcGetMemHandle` and `cuIpcGetEventHandle` answer 64 bytes that any process of the
//! machine may open with `cuIpcOpenMemHandle`/`cuIpcOpenEventHandle`. The bytes name driver
//! objects by ids the driver chose, so a guest that knew or guessed another client's handle
//! could map that client's memory in its own worker. The host therefore never hands the
//! driver's handle to a guest: it hands out the handle **sealed** under a secret of this host
//! (a keyed permutation of the 64 bytes), and unseals what a guest asks to open.
//!
//! - A handle a client was given opens in any worker of this host (a guest's processes share
//!   memory this way, PyTorch's `multiprocessing` for one): every worker holds the same key.
//! - Anything else (the driver's own bytes, a guessed or altered handle, one of another host)
//!   unseals to 64 unrelated bytes, which the driver refuses like any unknown handle. The
//!   permutation is a four-round Feistel network over the two 32-byte halves with HMAC-SHA256
//!   as the round function (Luby–Rackoff: a strong pseudorandom permutation), so changing any
//!   bit of a sealed handle changes every byte of what it unseals to.
//!
//! The supervisor draws the key from the kernel's random source when it starts and hands it to
//! each worker first, over the worker's stdin (`worker_link.rs`, the `seal` record). A worker
//! without a key (never told one) refuses IPC with `CUDA_ERROR_NOT_SUPPORTED`.

use std::sync::OnceLock;

/// Bytes of an IPC handle (`CU_IPC_HANDLE_SIZE`).
pub const HANDLE_LEN: usize = 64;
/// Bytes of the key.
pub const KEY_LEN: usize = 32;
const HALF: usize = HANDLE_LEN / 2;
const ROUNDS: u8 = 4;

static KEY: OnceLock<[u8; KEY_LEN]> = OnceLock::new();

/// Sets this worker's key; a second key is ignored (the first stays).
pub fn set_key(key: [u8; KEY_LEN]) {
    if KEY.set(key).is_err() {
        tracing::warn!("a second IPC seal key was ignored");
    }
}

fn key() -> Option<&'static [u8; KEY_LEN]> {
    KEY.get()
}

fn round(key: &[u8; KEY_LEN], index: u8, half: &[u8; HALF]) -> [u8; HALF] {
    transport::hmac_sha256(key, &[b"vgpu ipc seal", &[index], half])
}

fn xor(a: &mut [u8; HALF], b: &[u8; HALF]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

fn split(handle: &[u8; HANDLE_LEN]) -> ([u8; HALF], [u8; HALF]) {
    let mut left = [0u8; HALF];
    let mut right = [0u8; HALF];
    left.copy_from_slice(&handle[..HALF]);
    right.copy_from_slice(&handle[HALF..]);
    (left, right)
}

fn join(left: &[u8; HALF], right: &[u8; HALF]) -> [u8; HANDLE_LEN] {
    let mut out = [0u8; HANDLE_LEN];
    out[..HALF].copy_from_slice(left);
    out[HALF..].copy_from_slice(right);
    out
}

fn seal_with(key: &[u8; KEY_LEN], handle: &[u8; HANDLE_LEN]) -> [u8; HANDLE_LEN] {
    let (mut left, mut right) = split(handle);
    for i in 0..ROUNDS {
        let f = round(key, i, &right);
        xor(&mut left, &f);
        std::mem::swap(&mut left, &mut right);
    }
    join(&left, &right)
}

fn unseal_with(key: &[u8; KEY_LEN], sealed: &[u8; HANDLE_LEN]) -> [u8; HANDLE_LEN] {
    let (mut left, mut right) = split(sealed);
    for i in (0..ROUNDS).rev() {
        std::mem::swap(&mut left, &mut right);
        let f = round(key, i, &right);
        xor(&mut left, &f);
    }
    join(&left, &right)
}

/// The handle a guest is given for the driver's `handle`; `None` without a key.
pub fn seal(handle: &[u8; HANDLE_LEN]) -> Option<[u8; HANDLE_LEN]> {
    key().map(|k| seal_with(k, handle))
}

/// The driver's handle for what a guest presents; `None` without a key.
pub fn unseal(sealed: &[u8; HANDLE_LEN]) -> Option<[u8; HANDLE_LEN]> {
    key().map(|k| unseal_with(k, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(seed: u8) -> [u8; HANDLE_LEN] {
        std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
    }

    #[test]
    fn sealing_is_undone_only_with_the_same_key() {
        let key = [7u8; KEY_LEN];
        let other = [8u8; KEY_LEN];
        for seed in 0..16 {
            let h = handle(seed);
            let sealed = seal_with(&key, &h);
            assert_ne!(sealed, h);
            assert_eq!(unseal_with(&key, &sealed), h);
            assert_ne!(unseal_with(&other, &sealed), h);
        }
        // The driver's own bytes, presented as they are, unseal to something else.
        assert_ne!(unseal_with(&key, &handle(1)), handle(1));
    }

    #[test]
    fn one_changed_bit_changes_every_half_of_what_is_unsealed() {
        let key = [3u8; KEY_LEN];
        let h = handle(9);
        let sealed = seal_with(&key, &h);
        for bit in [0usize, 100, 300, 511] {
            let mut altered = sealed;
            altered[bit / 8] ^= 1 << (bit % 8);
            let opened = unseal_with(&key, &altered);
            assert_ne!(opened[..HALF], h[..HALF], "bit {bit}");
            assert_ne!(opened[HALF..], h[HALF..], "bit {bit}");
        }
    }
}
