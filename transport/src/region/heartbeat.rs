//! Heartbeats: the thread that bumps the words this process owns.

use super::*;

impl Region {
    /// Starts (once per process and handle) the thread that bumps the heartbeat words this process owns:
    /// the host word if it created the region, `guest_beat` of channels it claimed, `server_beat` of
    /// channels it serves. Never called before the first `connect`/`serve`/`create`.
    pub(crate) fn ensure_heartbeat(&self) {
        let me = sys::pid();
        if self.inner.beating_pid.swap(me, Ordering::AcqRel) == me {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = (self.inner.peer_timeout / 10)
            .clamp(Duration::from_millis(1), Duration::from_millis(500));
        let spawned = std::thread::Builder::new()
            .name("vgpu-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(inner) = weak.upgrade() else { return };
                Region { inner }.beat(me);
            });
        if spawned.is_err() {
            self.inner.beating_pid.store(0, Ordering::Release);
        }
    }

    fn beat(&self, me: u32) {
        let r = Ordering::Relaxed;
        if self.inner.host_pid.load(r) == me {
            // SYNC POINT: read (Relaxed) by guests' liveness checks; only its change matters.
            self.header().host_beat.fetch_add(1, r);
        }
        for i in 0..self.inner.layout.channel_count {
            let m = &self.channel(i).meta.0;
            let (epoch, _) = status_parts(m.status.load(r));
            let mine = (u64::from(me) << 32) | u64::from(epoch);
            if self.inner.guest_reg[i as usize].load(r) == mine {
                // SYNC POINT: read (Relaxed) by the serving host's liveness check; only its change matters.
                m.guest_beat.fetch_add(1, r);
            }
            if self.inner.server_reg[i as usize].load(r) == mine {
                // SYNC POINT: read (Relaxed) by the guest's liveness check; only its change matters.
                m.server_beat.fetch_add(1, r);
            }
        }
    }
}
