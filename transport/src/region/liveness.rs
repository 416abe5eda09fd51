//! Liveness checks both sides make while they wait: the peer's heartbeat, the generation, the
//! mapping.

use super::*;

impl Region {
    /// Guest-side view of the host's liveness for channel `index` (used by waits).
    pub(crate) fn check_server(
        &self,
        index: u32,
        epoch: u32,
        watch: &mut BeatWatch,
    ) -> Result<(), TransportError> {
        let h = self.header();
        if h.generation.load(Ordering::Relaxed) != self.inner.generation {
            return Err(TransportError::PeerGone(GoneReason::HostRestarted));
        }
        let m = &self.channel(index).meta.0;
        if m.status.load(Ordering::Relaxed) != status(epoch, STATE_CLAIMED) {
            return Err(TransportError::NotClaimed(index));
        }
        // SYNC POINT: pairs with the Release store of `server_pid` in `serve`.
        let spid = m.server_pid.load(Ordering::Acquire);
        let (pid, start, beat, source) = if spid != 0 {
            watch.served();
            (
                spid,
                m.server_start.load(Ordering::Relaxed),
                m.server_beat.load(Ordering::Relaxed),
                u64::from(spid),
            )
        } else {
            // A live host that never hands the claim to a worker must not hold the guest forever.
            if watch.unserved_past(self.inner.peer_timeout) {
                return Err(TransportError::PeerGone(GoneReason::NotServed));
            }
            let hpid = h.host_pid.load(Ordering::Relaxed);
            (
                hpid,
                h.host_start_time.load(Ordering::Relaxed),
                h.host_beat.load(Ordering::Relaxed),
                1 << 40,
            )
        };
        if self.inner.host_pids_comparable && !sys::process_alive(pid, start) {
            return Err(TransportError::PeerGone(GoneReason::ProcessExited));
        }
        if watch.stalled(source, beat, self.inner.peer_timeout) {
            return Err(TransportError::PeerGone(GoneReason::HeartbeatStalled));
        }
        Ok(())
    }

    /// `PeerGone(RegionTruncated)` once the region file was shrunk under this process's mapping
    /// (in a process protected by [`crate::protect_from_truncation`]): nothing read from the
    /// region can be trusted after that.
    ///
    /// # Errors
    /// As said.
    pub fn check_mapped(&self) -> Result<(), TransportError> {
        if self.inner.map.truncated() {
            return Err(TransportError::PeerGone(GoneReason::RegionTruncated));
        }
        Ok(())
    }

    /// Host-side view of the client's liveness for channel `claim` (used by waits).
    pub(crate) fn check_client(
        &self,
        claim: &ChannelClaim,
        watch: &mut BeatWatch,
    ) -> Result<(), TransportError> {
        self.check_mapped()?;
        let m = &self.channel(claim.index).meta.0;
        let word = m.status.load(Ordering::Relaxed);
        if word == status(claim.epoch, STATE_CLOSED) {
            return Err(TransportError::Closed);
        }
        if word != status(claim.epoch, STATE_CLAIMED) {
            return Err(TransportError::NotClaimed(claim.index));
        }
        if self.header().generation.load(Ordering::Relaxed) != self.inner.generation {
            return Err(TransportError::PeerGone(GoneReason::HostRestarted));
        }
        if self.inner.mode == DoorbellMode::Futex
            && m.owner_pid_ns.load(Ordering::Relaxed) == self.inner.own_pid_ns
            && !sys::process_alive(claim.pid, claim.start_time)
        {
            return Err(TransportError::PeerGone(GoneReason::ProcessExited));
        }
        if watch.stalled(
            0,
            m.guest_beat.load(Ordering::Relaxed),
            self.inner.peer_timeout,
        ) {
            return Err(TransportError::PeerGone(GoneReason::HeartbeatStalled));
        }
        Ok(())
    }
}
