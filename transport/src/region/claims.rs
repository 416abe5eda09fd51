//! Channel claims: a guest thread claims a channel (`connect`), the host accepts the claim and
//! a worker serves it.

use super::*;

/// Who a claimed channel belongs to, as the host learns it from [`Region::accept`]. Plain data: the host
/// main process may hand it to a worker process, which then calls [`Region::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelClaim {
    /// Channel index in the region.
    pub index: u32,
    /// Claim epoch (bumped on every claim of this index; stale claims are refused).
    pub epoch: u32,
    /// Unique per guest process (per region); group channels by it to find one client's threads.
    pub client_token: u64,
    /// Guest process id (in the guest's kernel).
    pub pid: u32,
    /// Guest thread id (in the guest's kernel).
    pub tid: u32,
    /// Guest process start time (clock ticks since the guest kernel booted, 0 if unknown).
    pub start_time: u64,
}

impl Region {
    /// Guest: claims a free channel (or one left by a dead process) for the calling thread. The channel
    /// is released when the returned value drops. Starts the heartbeat thread on first use.
    ///
    /// # Errors
    /// `NoFreeChannel` when all channels belong to live processes; `PeerGone(HostRestarted)` when the host
    /// re-initialised the region since it was opened.
    pub fn connect(&self) -> Result<GuestChannel, TransportError> {
        let h = self.header();
        if h.generation.load(Ordering::Acquire) != self.inner.generation {
            return Err(TransportError::PeerGone(GoneReason::HostRestarted));
        }
        let me = sys::pid();
        let token = self.client_token();
        let count = self.inner.layout.channel_count;
        let first = sys::tid() % count;
        for k in 0..count {
            let index = (first + k) % count;
            let m = &self.channel(index).meta.0;
            // SYNC POINT: pairs with the Release stores of `status` in `connect`, `GuestChannel::drop` and
            // `HostChannel::drop`.
            let word = m.status.load(Ordering::Acquire);
            let (epoch, state) = status_parts(word);
            let stale = match state {
                STATE_FREE => true,
                STATE_CLAIMED | STATE_CLOSED | STATE_CLAIMING => {
                    // Pids are only comparable within one pid namespace (all guests of a VM share
                    // the guest kernel's).
                    let pid = m.owner_pid.load(Ordering::Relaxed);
                    pid != 0
                        && pid != me
                        && m.owner_pid_ns.load(Ordering::Relaxed) == self.inner.own_pid_ns
                        && !sys::process_alive(pid, m.owner_start.load(Ordering::Relaxed))
                }
                _ => true,
            };
            if !stale {
                continue;
            }
            let epoch = epoch.wrapping_add(1);
            // SYNC POINT: Acquire pairs with the Release store that freed the channel (the previous users
            // are done with its rings); the CAS makes us the only claimer.
            if m.status
                .compare_exchange(
                    word,
                    status(epoch, STATE_CLAIMING),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            let r = Ordering::Relaxed;
            m.owner_pid.store(me, r);
            m.owner_tid.store(sys::tid(), r);
            m.owner_start.store(sys::start_time(me), r);
            m.owner_pid_ns.store(self.inner.own_pid_ns, r);
            m.client_token.store(token, r);
            m.guest_beat.store(0, r);
            m.server_pid.store(0, r);
            m.server_start.store(0, r);
            m.server_beat.store(0, r);
            self.reset_rings(index);
            self.inner.guest_reg[index as usize].store((u64::from(me) << 32) | u64::from(epoch), r);
            // SYNC POINT: pairs with the Acquire loads of `status` in `accept`/`serve`: the identity
            // fields and ring resets above are visible to whoever sees CLAIMED.
            m.status
                .store(status(epoch, STATE_CLAIMED), Ordering::Release);
            self.announce_claim(index);
            self.ensure_heartbeat();
            return Ok(GuestChannel::new(self.clone(), index, epoch, token));
        }
        Err(TransportError::NoFreeChannel)
    }

    fn announce_claim(&self, index: u32) {
        let h = self.header();
        crate::claim::announce(&h.claim_bits, &h.claim_seq, index);
        // SYNC POINT: pairs with the SeqCst fence in `accept` after setting `accept_waiting` (Dekker).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.inner.mode == DoorbellMode::Futex && h.accept_waiting.load(Ordering::Relaxed) != 0 {
            sys::futex_wake(&h.claim_seq);
        }
    }

    /// Host main process: waits up to `timeout` for a newly claimed channel. Sleeps on the header's claim
    /// doorbell (futex or back-off per the region's mode); no scanning of all channels in a loop.
    ///
    /// # Errors
    /// `PeerGone(RegionTruncated)` once a guest shrank the region file under this process
    /// ([`Region::check_mapped`]).
    pub fn accept(&self, timeout: Duration) -> Result<Option<ChannelClaim>, TransportError> {
        self.check_mapped()?;
        let deadline = Instant::now() + timeout;
        let h = self.header();
        let count = self.inner.layout.channel_count;
        let mut nap = Duration::from_micros(50);
        loop {
            let next = self
                .inner
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            if let Some(index) = next {
                let seen = &self.inner.accepted[index as usize];
                if let Some(claim) = self.claim_of(index) {
                    if seen.swap(u64::from(claim.epoch) + 1, Ordering::Relaxed)
                        != u64::from(claim.epoch) + 1
                    {
                        return Ok(Some(claim));
                    }
                    continue;
                }
                self.free_if_closed_unserved(index, seen.load(Ordering::Relaxed));
                continue;
            }
            // SYNC POINT: pairs with the Release fetch_add of `claim_seq` in `claim::announce`.
            let seq = h.claim_seq.load(Ordering::Acquire);
            let mut found = Vec::new();
            crate::claim::take(&h.claim_bits, count, &mut found);
            if !found.is_empty() {
                self.inner
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(found);
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let left = deadline - now;
            match self.inner.mode {
                DoorbellMode::Futex => {
                    h.accept_waiting.fetch_add(1, Ordering::Relaxed);
                    // SYNC POINT: pairs with the SeqCst fence in `announce_claim`.
                    std::sync::atomic::fence(Ordering::SeqCst);
                    if h.claim_seq.load(Ordering::Relaxed) == seq {
                        sys::futex_wait(&h.claim_seq, seq, left.min(doorbell::LIVENESS_EVERY * 10));
                    }
                    h.accept_waiting.fetch_sub(1, Ordering::Relaxed);
                }
                DoorbellMode::Poll => {
                    std::thread::sleep(nap.min(left));
                    nap = (nap * 2).min(Duration::from_millis(5));
                }
            }
        }
    }

    /// A channel announced but already CLOSED when `accept` took it, and whose claim `accept` never
    /// handed out (`accepted` is `epoch + 1` of the last one handed out), was never served, so nobody
    /// else will free it: free it here.
    fn free_if_closed_unserved(&self, index: u32, accepted: u64) {
        let m = &self.channel(index).meta.0;
        // SYNC POINT: Acquire pairs with the Release CAS to CLOSED in `GuestChannel::drop`.
        let word = m.status.load(Ordering::Acquire);
        let (epoch, state) = status_parts(word);
        if state == STATE_CLOSED && accepted != u64::from(epoch) + 1 {
            // SYNC POINT: Release pairs with the Acquire CAS of `status` in `connect`.
            let _ = m.status.compare_exchange(
                word,
                status(epoch, STATE_FREE),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
    }

    /// The claim currently held on channel `index`, if it is claimed.
    pub fn claim_of(&self, index: u32) -> Option<ChannelClaim> {
        if index >= self.inner.layout.channel_count {
            return None;
        }
        let m = &self.channel(index).meta.0;
        // SYNC POINT: pairs with the Release store of CLAIMED in `connect`.
        let (epoch, state) = status_parts(m.status.load(Ordering::Acquire));
        if state != STATE_CLAIMED {
            return None;
        }
        let r = Ordering::Relaxed;
        Some(ChannelClaim {
            index,
            epoch,
            client_token: m.client_token.load(r),
            pid: m.owner_pid.load(r),
            tid: m.owner_tid.load(r),
            start_time: m.owner_start.load(r),
        })
    }

    /// Host (main or worker process): starts serving a claimed channel. Records this process as the
    /// channel's server (pid, start time, heartbeat) so the guest can tell if it dies.
    ///
    /// # Errors
    /// `NotClaimed` when the channel no longer carries this claim (released or re-claimed).
    pub fn serve(&self, claim: &ChannelClaim) -> Result<HostChannel, TransportError> {
        if claim.index >= self.inner.layout.channel_count {
            return Err(TransportError::NotClaimed(claim.index));
        }
        let m = &self.channel(claim.index).meta.0;
        // SYNC POINT: pairs with the Release store of CLAIMED in `connect`.
        if m.status.load(Ordering::Acquire) != status(claim.epoch, STATE_CLAIMED) {
            return Err(TransportError::NotClaimed(claim.index));
        }
        let me = sys::pid();
        m.server_start.store(sys::start_time(me), Ordering::Relaxed);
        m.server_beat.store(0, Ordering::Relaxed);
        // SYNC POINT: pairs with the Acquire load of `server_pid` in the guest's liveness check, which
        // then reads `server_start`.
        m.server_pid.store(me, Ordering::Release);
        self.inner.server_reg[claim.index as usize].store(
            (u64::from(me) << 32) | u64::from(claim.epoch),
            Ordering::Relaxed,
        );
        self.ensure_heartbeat();
        Ok(HostChannel::new(self.clone(), *claim))
    }
}
