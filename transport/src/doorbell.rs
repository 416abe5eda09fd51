//! Waiting for the peer: spin briefly, then sleep on a futex (one kernel) or poll with adaptive back-off
//! (across a VM boundary, where no futex reaches the other side).

use crate::error::TransportError;
use std::time::{Duration, Instant};

/// How a waiting side sleeps; a property of the region, stored in its header at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DoorbellMode {
    /// Spin, then `FUTEX_WAIT` on the shared word; the producer `FUTEX_WAKE`s it. Both sides must share
    /// one kernel (and one pid namespace: liveness also checks peer pids).
    Futex = 1,
    /// Spin, yield, then sleep in growing steps up to [`POLL_SLEEP_CAP`]; nobody is woken explicitly.
    /// Works across a VM boundary (ivshmem). Liveness then relies on heartbeats only.
    Poll = 2,
}

impl DoorbellMode {
    pub(crate) fn from_word(word: u32) -> Option<Self> {
        match word {
            1 => Some(DoorbellMode::Futex),
            2 => Some(DoorbellMode::Poll),
            _ => None,
        }
    }
}

/// How long a waiter spins before it sleeps, unless `VGPU_SPIN_US` says otherwise ([`spin`]).
pub const SPIN: Duration = Duration::from_micros(50);

/// The spin before a waiter sleeps: `VGPU_SPIN_US` (microseconds, at most one second) read once
/// per process, else [`SPIN`]. A longer spin saves the wake-up of a sleeping peer (tens of
/// microseconds) on every round trip that comes later than [`SPIN`] after the last one, at the
/// cost of a busy core while waiting, as CUDA's own default synchronisation spins.
pub fn spin() -> Duration {
    static SPIN_US: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN_US.get_or_init(|| {
        std::env::var("VGPU_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us <= 1_000_000)
            .map_or(SPIN, Duration::from_micros)
    })
}
/// Poll mode: how long a waiter yields after spinning before it starts sleeping.
pub const POLL_YIELD: Duration = Duration::from_micros(200);
/// Poll mode: the longest single sleep between two looks at the ring.
pub const POLL_SLEEP_CAP: Duration = Duration::from_millis(1);
/// Futex sleep slice, and how often a sleeping waiter checks that its peer is alive.
pub const LIVENESS_EVERY: Duration = Duration::from_millis(20);

/// Waits until `poll` yields a value. `sleep` (futex mode) announces the sleep, re-checks, sleeps at most
/// the given time and returns a value if the re-check found one. `live` is called every
/// [`LIVENESS_EVERY`] once spinning is over and ends the wait with its error.
pub(crate) fn wait<T>(
    mode: DoorbellMode,
    mut poll: impl FnMut() -> Result<Option<T>, TransportError>,
    mut sleep: impl FnMut(Duration) -> Result<Option<T>, TransportError>,
    mut live: impl FnMut() -> Result<(), TransportError>,
) -> Result<T, TransportError> {
    // Poll between single pause instructions (one `pause` is up to ~140 cycles on recent x86;
    // a longer back-off here adds directly to the round trip), and read the clock only every
    // 256 polls: not at all when the first polls succeed (a sender with a free slot, a reply that
    // is already there), so the spin lasts SPIN plus the first 256 polls.
    //
    // Every 256th poll also yields the CPU (a fraction of a microsecond when no other thread
    // wants it). When runnable threads outnumber cores (a guest's OpenMP workers spin-waiting
    // after a parallel copy, say), the peer that a wake-up queued on this waiter's own CPU then
    // runs at the next yield instead of after the whole spin. Without it, each round trip cost
    // twice the spin on the H200 (2 ms with `VGPU_SPIN_US=1000`) in PyTorch's `pin_memory()`
    // loop; `transport-bench` measures it with both processes on one CPU ("one").
    let spin = spin();
    let mut first_clock = None;
    let mut polls = 0u32;
    let start = loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        std::hint::spin_loop();
        polls = polls.wrapping_add(1);
        if polls % 256 == 0 {
            let since = *first_clock.get_or_insert_with(Instant::now);
            if since.elapsed() > spin {
                break since;
            }
            std::thread::yield_now();
        }
    };
    live()?;
    let mut last_live = Instant::now();
    let mut nap = Duration::from_micros(2);
    loop {
        match mode {
            DoorbellMode::Futex => {
                if let Some(v) = sleep(LIVENESS_EVERY)? {
                    return Ok(v);
                }
            }
            DoorbellMode::Poll => {
                if start.elapsed() < spin + POLL_YIELD {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(POLL_SLEEP_CAP);
                }
            }
        }
        if let Some(v) = poll()? {
            return Ok(v);
        }
        if last_live.elapsed() >= LIVENESS_EVERY {
            live()?;
            last_live = Instant::now();
        }
    }
}

/// Tracks a peer's heartbeat word: the peer is stalled once the word has not moved for `timeout`.
#[derive(Debug)]
pub(crate) struct BeatWatch {
    source: u64,
    last: u64,
    changed: Instant,
    /// Since when a guest channel has waited for a worker to serve it (`None` once served).
    unserved_since: Option<Instant>,
}

impl BeatWatch {
    pub(crate) fn new() -> Self {
        BeatWatch {
            source: u64::MAX,
            last: 0,
            changed: Instant::now(),
            unserved_since: None,
        }
    }

    /// Whether the channel has waited for a server longer than `timeout`; the first call starts
    /// the clock.
    pub(crate) fn unserved_past(&mut self, timeout: Duration) -> bool {
        self.unserved_since
            .get_or_insert_with(Instant::now)
            .elapsed()
            > timeout
    }

    /// A server serves the channel: the unserved clock stops.
    pub(crate) fn served(&mut self) {
        self.unserved_since = None;
    }

    /// Feeds the current beat of the peer identified by `source`; true once stalled past `timeout`.
    pub(crate) fn stalled(&mut self, source: u64, beat: u64, timeout: Duration) -> bool {
        let now = Instant::now();
        if source != self.source || beat != self.last {
            self.source = source;
            self.last = beat;
            self.changed = now;
            return false;
        }
        now.duration_since(self.changed) > timeout
    }
}
