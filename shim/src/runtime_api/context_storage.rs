//! Context-local storage (export table `c693336e…`), kept in the guest: cudart stores its
//! per-context state here. Entries are keyed by (context handle, key); each may carry a
//! destructor, which runs as `dtor(ctx, key, value)` when the context is destroyed or, for a
//! primary context, reset ([`super::primary_context`]). `delete` drops an entry without running
//! its destructor, as cudart deletes what it is tearing down itself.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cuda_headers::CUcontext;

/// A destructor as cudart passes it.
pub type Destructor = unsafe extern "system" fn(CUcontext, *mut c_void, *mut c_void);

#[derive(Debug, Clone, Copy)]
struct Entry {
    value: usize,
    destructor: Option<Destructor>,
}

/// (context, key) → entry. Handles are stored as integers: they are opaque host values.
static STORE: Mutex<BTreeMap<(u64, u64), Entry>> = Mutex::new(BTreeMap::new());

fn store() -> std::sync::MutexGuard<'static, BTreeMap<(u64, u64), Entry>> {
    STORE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stores `value` under (`ctx`, `key`), replacing an earlier value (whose destructor is dropped
/// without running, as a put over a live key replaces it).
pub fn put(ctx: u64, key: u64, value: usize, destructor: Option<Destructor>) {
    store().insert((ctx, key), Entry { value, destructor });
}

/// The value under (`ctx`, `key`).
pub fn get(ctx: u64, key: u64) -> Option<usize> {
    store().get(&(ctx, key)).map(|e| e.value)
}

/// Removes (`ctx`, `key`); whether it was there.
pub fn delete(ctx: u64, key: u64) -> bool {
    store().remove(&(ctx, key)).is_some()
}

/// Whether any entry exists (lets reset/destroy skip their host queries).
pub fn is_empty() -> bool {
    store().is_empty()
}

/// Whether `ctx` has entries.
pub fn has_entries(ctx: u64) -> bool {
    store().range((ctx, 0)..=(ctx, u64::MAX)).next().is_some()
}

/// Removes every entry of `ctx` and runs their destructors, outside the lock (a destructor may
/// call back into the driver and the table). Returns how many destructors ran.
pub fn destroy_context(ctx: u64) -> usize {
    let taken: Vec<((u64, u64), Entry)> = {
        let mut map = store();
        let keys: Vec<(u64, u64)> = map
            .range((ctx, 0)..=(ctx, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| map.remove(&k).map(|e| (k, e)))
            .collect()
    };
    let mut ran = 0;
    for ((ctx, key), entry) in taken {
        if let Some(destructor) = entry.destructor {
            // SAFETY: cudart registered this destructor for exactly these arguments.
            unsafe {
                destructor(
                    ctx as usize as CUcontext,
                    key as usize as *mut c_void,
                    entry.value as *mut c_void,
                )
            };
            ran += 1;
        }
    }
    ran
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SEEN: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "system" fn record(ctx: CUcontext, key: *mut c_void, value: *mut c_void) {
        // Ordering irrelevant: single-threaded test bookkeeping.
        SEEN.fetch_add(
            ctx as usize + key as usize + value as usize,
            Ordering::Relaxed,
        );
    }

    #[test]
    fn put_get_delete_and_destroy() {
        let ctx = 0x5eed_0000;
        put(ctx, 1, 100, Some(record));
        put(ctx, 2, 200, None);
        put(ctx + 1, 1, 300, Some(record));
        assert_eq!(get(ctx, 1), Some(100));
        assert_eq!(get(ctx, 3), None);
        assert!(delete(ctx, 2));
        assert!(!delete(ctx, 2));
        assert!(has_entries(ctx));
        assert_eq!(destroy_context(ctx), 1);
        assert_eq!(SEEN.load(Ordering::Relaxed), 0x5eed_0000 + 1 + 100);
        assert!(!has_entries(ctx));
        assert_eq!(get(ctx + 1, 1), Some(300), "other contexts keep theirs");
        assert!(delete(ctx + 1, 1));
    }
}
