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

/// Whether call `id` changes what [`PrimaryContexts`] counts.
pub fn watches(id: u32) -> bool {
    matches!(id, RETAIN | RELEASE | RELEASE_V2)
}

/// Retains minus releases per device.
#[derive(Debug, Default)]
pub struct PrimaryContexts {
    retained: Mutex<HashMap<i32, u64>>,
}

impl PrimaryContexts {
    /// Notes watched call `id`, whose arguments `args` reads (the generated wire formats:
    /// `inout CUcontext, CUdevice` for a retain, `CUdevice` for a release) and whose answer is
    /// `response`. Calls that failed or do not decode change nothing.
    pub fn note(&self, id: u32, mut args: Decoder<'_>, response: &[u8]) {
        if !ResponseHeader::read(&mut Decoder::new(response)).is_ok_and(|h| h.result == 0) {
            return;
        }
        if id == RETAIN {
            // SAFETY: a context handle is plain data; only its presence is read here.
            if unsafe { args.get_opt_raw::<u64>() }.is_err() {
                return;
            }
        }
        let Ok(device) = args.get::<i32>() else {
            return;
        };
        let mut retained = self
            .retained
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = retained.entry(device).or_insert(0);
        if id == RETAIN {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
    }

    /// Devices whose primary context the client holds.
    pub fn active(&self) -> u64 {
        self.retained
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|&&n| n > 0)
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
