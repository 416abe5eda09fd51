//! The primary contexts a client holds, counted from its own retains and releases (for the
//! host's statistics, `accounting/`): a device whose primary context the client retained more
//! often than it released holds one. Counted here rather than asked of the driver, so the
//! worker makes no driver call its guest did not make.

use std::collections::HashMap;
use std::sync::Mutex;

use protocol::{Decoder, ResponseHeader};

const RETAIN: u32 = shim_macros::cuda_call_id!(cuDevicePrimaryCtxRetain);
const RELEASE: u32 = shim_macros::cuda_call_id!(cuDevicePrimaryCtxRelease);
const RELEASE_V2: u32 = shim_macros::cuda_call_id!(cuDevicePrimaryCtxRelease_v2);
const RESET: u32 = shim_macros::cuda_call_id!(cuDevicePrimaryCtxReset);
const RESET_V2: u32 = shim_macros::cuda_call_id!(cuDevicePrimaryCtxReset_v2);

/// Whether call `id` changes what [`PrimaryContexts`] counts.
pub fn watches(id: u32) -> bool {
    matches!(id, RETAIN | RELEASE | RELEASE_V2 | RESET | RESET_V2)
}

/// One device's primary context, as this client holds it.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    /// Retains minus releases.
    count: u64,
    /// The context's value, as the last retain answered it (0: never retained).
    ctx: u64,
}

/// Retains minus releases per device, and each primary context's value.
#[derive(Debug, Default)]
pub struct PrimaryContexts {
    retained: Mutex<HashMap<i32, Held>>,
}

impl PrimaryContexts {
    /// Notes watched call `id`, whose arguments `args` reads (the generated wire formats:
    /// `inout CUcontext, CUdevice` for a retain, `CUdevice` for a release or reset) and whose
    /// answer is `response`. Calls that failed or do not decode change nothing. Returns the
    /// primary context whose state the call ended, for the handles made in it to be forgotten:
    /// a reset's, or a release's that dropped the last reference (the driver resets it then).
    pub fn note(&self, id: u32, mut args: Decoder<'_>, response: &[u8]) -> Option<u64> {
        let mut answer = Decoder::new(response);
        if !ResponseHeader::read(&mut answer).is_ok_and(|h| h.result == 0) {
            return None;
        }
        let mut made = 0;
        if id == RETAIN {
            // SAFETY: a context handle is plain data; the request says whether the answer
            // carries one.
            let present = unsafe { args.get_opt_raw::<u64>() }.ok()?.is_some();
            if present {
                made = answer.get::<u64>().unwrap_or(0);
            }
        }
        let device = args.get::<i32>().ok()?;
        let mut retained = self
            .retained
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = retained.entry(device).or_default();
        match id {
            RETAIN => {
                held.count += 1;
                if made != 0 {
                    held.ctx = made;
                }
                None
            }
            RESET | RESET_V2 => (held.ctx != 0).then_some(held.ctx),
            _ => {
                let was = held.count;
                held.count = held.count.saturating_sub(1);
                (was == 1 && held.ctx != 0).then_some(held.ctx)
            }
        }
    }

    /// Devices whose primary context the client holds.
    pub fn active(&self) -> u64 {
        self.retained
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|h| h.count > 0)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Encoder;

    fn request(retain: bool, device: i32) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf);
        if retain {
            // SAFETY: a plain u64 as the generated marshalling sends an inout pointer.
            unsafe { enc.put_opt_raw(Some(&0u64)) };
        }
        enc.put(device);
        buf
    }

    fn answer(result: u32) -> Vec<u8> {
        let mut out = Vec::new();
        ResponseHeader::start(&mut out, result);
        out
    }

    fn retained(ctx: u64) -> Vec<u8> {
        let mut out = Vec::new();
        ResponseHeader::start(&mut out, 0).put(ctx);
        out
    }

    #[test]
    fn the_last_release_and_a_reset_end_the_primary_contexts_state() {
        let p = PrimaryContexts::default();
        let note = |id, retain, answer: &[u8]| {
            let req = request(retain, 0);
            p.note(id, Decoder::new(&req), answer)
        };
        assert_eq!(note(RETAIN, true, &retained(0xc0)), None);
        assert_eq!(note(RETAIN, true, &retained(0xc0)), None);
        assert_eq!(note(RELEASE_V2, false, &answer(0)), None);
        assert_eq!(note(RESET_V2, false, &answer(0)), Some(0xc0));
        assert_eq!(
            note(RELEASE_V2, false, &answer(201)),
            None,
            "a failed release"
        );
        assert_eq!(note(RELEASE_V2, false, &answer(0)), Some(0xc0));
        assert_eq!(
            note(RELEASE, false, &answer(0)),
            None,
            "released beyond zero"
        );
        assert_eq!(p.active(), 0);
    }

    #[test]
    fn retains_minus_releases_per_device() {
        let p = PrimaryContexts::default();
        assert!(watches(RETAIN) && watches(RELEASE_V2) && !watches(RETAIN + 100_000));
        for (id, retain, device, result) in [
            (RETAIN, true, 0, 0),
            (RETAIN, true, 0, 0),
            (RETAIN, true, 1, 0),
            (RETAIN, true, 2, 100),
            (RELEASE_V2, false, 0, 0),
        ] {
            let req = request(retain, device);
            p.note(id, Decoder::new(&req), &answer(result));
        }
        assert_eq!(p.active(), 2);
        for _ in 0..2 {
            let req = request(false, 0);
            p.note(RELEASE, Decoder::new(&req), &answer(0));
        }
        assert_eq!(p.active(), 1);
    }
}
