//! Channel claims: a guest thread claims a channel (`connect`), the host accepts the claim,
//! grants it to a client (or refuses it) and a worker serves it.
//!
//! Identity (issue 11): a process's first claim presents no client id; the host mints one and a
//! credential, and writes both into the channel's identity line, where the guest reads them
//! and wipes the credential. Later claims of the process present the id and a proof made with
//! the credential for that very claim (`identity::claim_proof`: generation, index, epoch, id),
//! which the host checks before routing ([`Region::proof_matches`]). A guest-chosen or copied
//! word routes nowhere.

use super::*;
use crate::identity::{claim_proof, constant_time_eq, Credential, Refusal, PROOF_LEN};

/// Who a claimed channel belongs to, as the host learns it from [`Region::accept`]. Plain data: the host
/// main process may hand it to a worker process, which then calls [`Region::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelClaim {
    /// Channel index in the region.
    pub index: u32,
    /// Claim epoch (bumped on every claim of this index; stale claims are refused).
    pub epoch: u32,
    /// The client the host granted the claim to: 0 as [`Region::accept`] returns it, set by the
    /// host (never read from the region) before the claim is served.
    pub client_id: u64,
    /// The client id the guest presented (0: a process's first claim). Guest-written: route by
    /// it only once [`Region::proof_matches`] holds for that client's credential.
    pub presented_id: u64,
    /// The guest's proof for `presented_id` (guest-written).
    pub proof: [u8; PROOF_LEN],
    /// Guest process id (in the guest's kernel).
    pub pid: u32,
    /// Guest thread id (in the guest's kernel).
    pub tid: u32,
    /// Guest process start time (clock ticks since the guest kernel booted, 0 if unknown).
    pub start_time: u64,
}

impl Region {
    /// Guest: claims a free channel (or one left by a dead process) for the calling thread. The channel
    /// is released when the returned value drops. Starts the heartbeat thread on first use. Does not
    /// wait for the host: the channel's first call waits for its verdict ([`GuestChannel::call`]).
    ///
    /// A process's first claim presents no identity and makes it a new client: the host's grant
    /// gives it its id and credential. Later claims present the id and prove it; while the first
    /// claim is undecided, a later claim waits for that verdict first (so one process becomes one
    /// client). A forked child is a new process.
    ///
    /// # Errors
    /// `NoFreeChannel` when all channels belong to live processes; `PeerGone(HostRestarted)` when the host
    /// re-initialised the region since it was opened.
    pub fn connect(&self) -> Result<GuestChannel, TransportError> {
        let me = sys::pid();
        let mut identity = self
            .inner
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if identity.pid != me {
            *identity = GuestIdentity::none(me);
        }
        if let Some((index, epoch)) = identity.pending_first {
            // Undecided first claim of another thread: its verdict brings the identity to
            // present. Refused or lost, it leaves none: this claim is then a first claim.
            let _ = self.settle_locked(&mut identity, index, epoch);
            identity.pending_first = None;
        }
        let (index, epoch) = self.claim_channel(&identity)?;
        if identity.client_id == 0 {
            identity.pending_first = Some((index, epoch));
        }
        Ok(GuestChannel::new(
            self.clone(),
            index,
            epoch,
            identity.client_id,
        ))
    }

    /// Guest: waits for the host's verdict on our claim (`index`, `epoch`) and returns the client
    /// id it was granted to. A first claim's grant makes this process that client (its
    /// credential is read and wiped from the region).
    ///
    /// # Errors
    /// `Refused` (a refused member claim also forgets the identity, so the next claim comes as
    /// a new client); `PeerGone` when no verdict comes while the host lives (the claim is then
    /// abandoned); `Corrupt` for a verdict no host writes.
    pub(crate) fn settle(&self, index: u32, epoch: u32) -> Result<u64, TransportError> {
        let mut identity = self
            .inner
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.settle_locked(&mut identity, index, epoch)
    }

    fn settle_locked(
        &self,
        identity: &mut GuestIdentity,
        index: u32,
        epoch: u32,
    ) -> Result<u64, TransportError> {
        let first = identity.pending_first == Some((index, epoch));
        let decided = self.await_verdict(index, epoch);
        if first {
            identity.pending_first = None;
        }
        let v = decided?;
        let refused = |why| Err(TransportError::Refused(why));
        if v == verdict(epoch, VERDICT_LIMIT) {
            return refused(Refusal::Limit);
        }
        if v == verdict(epoch, VERDICT_UNKNOWN_IDENTITY) {
            if !first {
                *identity = GuestIdentity::none(identity.pid);
            }
            return refused(Refusal::UnknownIdentity);
        }
        if v != verdict(epoch, VERDICT_GRANTED) {
            return Err(TransportError::Corrupt("claim verdict"));
        }
        let line = &self.channel(index).identity.0;
        let r = Ordering::Relaxed;
        // SYNC POINT: ordered by the Acquire load of the verdict in `await_verdict` (these words are
        // written before the host's Release CAS of it).
        let client_id = line.client_id.load(r);
        if first {
            let credential =
                Credential::from_words([line.credential[0].load(r), line.credential[1].load(r)]);
            for w in &line.credential {
                // SYNC POINT: none needed: wipes the secret from the region; nobody waits on it.
                w.store(0, r);
            }
            if client_id == 0 || credential.is_none() {
                return Err(TransportError::Corrupt("grant without an identity"));
            }
            identity.client_id = client_id;
            identity.credential = credential;
        } else if client_id == 0 || client_id != identity.client_id {
            return Err(TransportError::Corrupt("grant to another client"));
        }
        Ok(client_id)
    }

    /// Waits for the verdict on claim (`index`, `epoch`) while the host lives; when none comes,
    /// marks the claim abandoned (a grant that wins that race is taken instead).
    fn await_verdict(&self, index: u32, epoch: u32) -> Result<u32, TransportError> {
        let line = &self.channel(index).identity.0;
        let pending = verdict(epoch, VERDICT_PENDING);
        let mut watch = BeatWatch::new();
        let poll = || {
            // SYNC POINT: Acquire pairs with the Release CAS of the verdict in `Region::decide`: the
            // client id and credential written before it are visible.
            let v = line.verdict.load(Ordering::Acquire);
            if v == pending {
                return Ok(None);
            }
            if v & !0xff != pending {
                // Not a verdict on this claim: the region was re-initialised or the channel
                // taken; the liveness check says which.
                self.check_server(index, epoch, &mut BeatWatch::new())?;
                return Err(TransportError::NotClaimed(index));
            }
            Ok(Some(v))
        };
        let waited = doorbell::wait(
            self.inner.mode,
            &poll,
            |t| {
                sys::futex_wait(&line.verdict, pending, t);
                poll()
            },
            || self.check_server(index, epoch, &mut watch),
        );
        match waited {
            Ok(v) => Ok(v),
            // SYNC POINT: Acquire: a grant that won the race is read as above; Relaxed on success
            // (nothing is read after abandoning).
            Err(e) => match line.verdict.compare_exchange(
                pending,
                verdict(epoch, VERDICT_ABANDONED),
                Ordering::Relaxed,
                Ordering::Acquire,
            ) {
                Err(v) if v & !0xff == pending => Ok(v),
                _ => Err(e),
            },
        }
    }

    /// Claims a free (or stale) channel presenting `identity`; returns (index, epoch).
    fn claim_channel(&self, identity: &GuestIdentity) -> Result<(u32, u32), TransportError> {
        let h = self.header();
        if h.generation.load(Ordering::Acquire) != self.inner.generation {
            return Err(TransportError::PeerGone(GoneReason::HostRestarted));
        }
        let me = identity.pid;
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
            // SYNC POINT: published by the Release store of CLAIMED below, like the fields around it.
            m.presented_id.store(identity.client_id, r);
            let line = &self.channel(index).identity.0;
            line.clear();
            // SYNC POINT: published by the Release store of CLAIMED below; the host's verdict
            // replaces it with a Release CAS (`decide`).
            line.verdict.store(verdict(epoch, VERDICT_PENDING), r);
            if identity.client_id != 0 {
                let proof = claim_proof(
                    &identity.credential,
                    self.inner.generation,
                    index,
                    epoch,
                    identity.client_id,
                );
                let words = Credential::from_bytes(proof).words();
                for (w, v) in line.proof.iter().zip(words) {
                    // SYNC POINT: published by the Release store of CLAIMED below.
                    w.store(v, r);
                }
            }
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
            return Ok((index, epoch));
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
        let line = &self.channel(index).identity.0;
        // SYNC POINT: ordered by the Acquire load of `status` above (written before CLAIMED).
        let proof = Credential::from_words([line.proof[0].load(r), line.proof[1].load(r)]);
        Some(ChannelClaim {
            index,
            epoch,
            client_id: 0,
            presented_id: m.presented_id.load(r),
            proof: proof.to_bytes(),
            pid: m.owner_pid.load(r),
            tid: m.owner_tid.load(r),
            start_time: m.owner_start.load(r),
        })
    }

    /// Host: whether `claim`'s proof is the one `credential` makes for it (its index, epoch and
    /// presented id, this region's generation). Compared in constant time.
    pub fn proof_matches(&self, claim: &ChannelClaim, credential: &Credential) -> bool {
        let want = claim_proof(
            credential,
            self.inner.generation,
            claim.index,
            claim.epoch,
            claim.presented_id,
        );
        claim.presented_id != 0 && constant_time_eq(&want, &claim.proof)
    }

    /// Host: grants `claim` to its client (`claim.client_id`, which the host chose); a new
    /// client's first claim also carries its `credential`, which only the claimer is meant to
    /// read (it wipes it). Wakes the claimer.
    ///
    /// # Errors
    /// `NotClaimed` when the claim is gone or its claimer stopped waiting.
    pub fn grant(
        &self,
        claim: &ChannelClaim,
        credential: Option<&Credential>,
    ) -> Result<(), TransportError> {
        self.decide(claim, VERDICT_GRANTED, |line| {
            let r = Ordering::Relaxed;
            // SYNC POINT: published by the Release CAS of the verdict in `decide`.
            line.client_id.store(claim.client_id, r);
            let words = credential.map_or([0, 0], Credential::words);
            for (w, v) in line.credential.iter().zip(words) {
                // SYNC POINT: as above.
                w.store(v, r);
            }
        })
    }

    /// Host: refuses `claim` (the claimer frees the channel and reports `Refused(why)`).
    ///
    /// # Errors
    /// `NotClaimed` when the claim is gone or its claimer stopped waiting.
    pub fn refuse(&self, claim: &ChannelClaim, why: Refusal) -> Result<(), TransportError> {
        let code = match why {
            Refusal::UnknownIdentity => VERDICT_UNKNOWN_IDENTITY,
            Refusal::Limit => VERDICT_LIMIT,
        };
        self.decide(claim, code, |_| {})
    }

    fn decide(
        &self,
        claim: &ChannelClaim,
        code: u32,
        write: impl FnOnce(&ChannelIdentity),
    ) -> Result<(), TransportError> {
        if claim.index >= self.inner.layout.channel_count {
            return Err(TransportError::NotClaimed(claim.index));
        }
        let c = self.channel(claim.index);
        let pending = verdict(claim.epoch, VERDICT_PENDING);
        // SYNC POINT: pairs with the Release store of CLAIMED in `connect` (the claim's words are reset).
        // SYNC POINT: the verdict load is a pre-check only; the Release CAS below decides.
        if c.meta.0.status.load(Ordering::Acquire) != status(claim.epoch, STATE_CLAIMED)
            || c.identity.0.verdict.load(Ordering::Relaxed) != pending
        {
            return Err(TransportError::NotClaimed(claim.index));
        }
        write(&c.identity.0);
        // SYNC POINT: Release pairs with the Acquire load of the verdict in `await_verdict`; fails if the
        // claimer gave up (its CAS to ABANDONED) or the channel was claimed again.
        c.identity
            .0
            .verdict
            .compare_exchange(
                pending,
                verdict(claim.epoch, code),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .map_err(|_| TransportError::NotClaimed(claim.index))?;
        if self.inner.mode == DoorbellMode::Futex {
            sys::futex_wake(&c.identity.0.verdict);
        }
        Ok(())
    }

    /// Host (main or worker process): starts serving a claimed channel. Records this process as the
    /// channel's server (pid, start time, heartbeat) so the guest can tell if it dies.
    ///
    /// The claim must have been granted first ([`Region::grant`], or
    /// [`Region::admit_and_serve`]): the guest's first call waits for that verdict, and a host
    /// that served without it would leave the guest waiting on a live server.
    ///
    /// # Errors
    /// `NotClaimed` when the channel no longer carries this claim (released or re-claimed) or
    /// the claim was not granted.
    pub fn serve(&self, claim: &ChannelClaim) -> Result<HostChannel, TransportError> {
        if claim.index >= self.inner.layout.channel_count {
            return Err(TransportError::NotClaimed(claim.index));
        }
        let channel = self.channel(claim.index);
        let m = &channel.meta.0;
        // SYNC POINT: pairs with the Release store of CLAIMED in `connect`.
        if m.status.load(Ordering::Acquire) != status(claim.epoch, STATE_CLAIMED) {
            return Err(TransportError::NotClaimed(claim.index));
        }
        // SYNC POINT: Relaxed: a check of this process's own (or its supervisor's) earlier
        // grant; nothing written with the verdict is read here.
        if channel.identity.0.verdict.load(Ordering::Relaxed)
            != verdict(claim.epoch, VERDICT_GRANTED)
        {
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
