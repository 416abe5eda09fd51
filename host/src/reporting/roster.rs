//! The supervisor's workers as the endpoints see them, replaced by the supervisor's loop.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::accounting::CountersView;
use crate::worker_link::ClientId;

/// One client's worker.
#[derive(Debug, Clone)]
pub struct Member {
    /// The client.
    pub client: ClientId,
    /// Its worker's process id.
    pub worker_pid: u32,
    /// When the worker took the client.
    pub since: Instant,
    /// The IP address its first connection came from (socket clients).
    pub peer: Option<IpAddr>,
    /// The worker's counters (none when the block could not be made).
    pub counters: Option<Arc<CountersView>>,
}

/// Everything the supervisor's loop last published.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// Client workers.
    pub members: Vec<Member>,
    /// Spare workers.
    pub spares: u64,
    /// New clients refused (`--max-clients`).
    pub refused: u64,
}

/// The current [`Listing`], shared between the supervisor's loop and the endpoints' threads.
#[derive(Debug, Default)]
pub struct Roster {
    listing: Mutex<Listing>,
}

impl Roster {
    fn lock(&self) -> MutexGuard<'_, Listing> {
        self.listing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the listing (the supervisor's loop, after its workers changed).
    pub fn replace(&self, listing: Listing) {
        *self.lock() = listing;
    }

    /// A copy of the listing (an endpoint, per request).
    pub fn listing(&self) -> Listing {
        self.lock().clone()
    }
}
