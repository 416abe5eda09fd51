//! Client identities the host assigns (issue 11). A guest never chooses who it is: a process's
//! first claim or connection presents nothing, and the host answers with a client id and a
//! credential it minted (128 random bits). The process's later claims and connections present
//! the credential (sockets) or a proof made with it (the region, where every word is visible to
//! the whole tenant); anything else is refused, never turned into another client's channel.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use crate::stream_key::{hmac_sha256, random_bytes};
use crate::TransportError;

/// Bytes of a credential.
pub const CREDENTIAL_LEN: usize = 16;
/// Bytes of a claim proof (a truncated HMAC-SHA256).
pub const PROOF_LEN: usize = 16;
const CLAIM_CONTEXT: &[u8] = b"vgpu claim proof v1";

/// A client's credential: minted by the host, known to the client's process and the host only.
/// Its bytes never appear in `Debug` output or logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credential([u8; CREDENTIAL_LEN]);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(..)")
    }
}

impl Credential {
    /// A fresh credential from the kernel's random source.
    ///
    /// # Errors
    /// `Io` when `getrandom` fails.
    pub fn mint() -> Result<Self, TransportError> {
        loop {
            let c = Credential(random_bytes()?);
            if !c.is_none() {
                return Ok(c);
            }
        }
    }

    /// A credential from its bytes (all zero is "none": a process that has no identity yet).
    pub fn from_bytes(bytes: [u8; CREDENTIAL_LEN]) -> Self {
        Credential(bytes)
    }

    /// The bytes, to put on the wire or in a record to a worker.
    pub fn to_bytes(&self) -> [u8; CREDENTIAL_LEN] {
        self.0
    }

    /// All zero: no credential.
    pub fn is_none(&self) -> bool {
        self.0 == [0; CREDENTIAL_LEN]
    }

    /// Compares in constant time.
    pub fn matches(&self, other: &Credential) -> bool {
        constant_time_eq(&self.0, &other.0)
    }

    /// As two little-endian words (how the region stores it).
    pub(crate) fn words(&self) -> [u64; 2] {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&self.0[..8]);
        hi.copy_from_slice(&self.0[8..]);
        [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
    }

    pub(crate) fn from_words(words: [u64; 2]) -> Self {
        let mut b = [0u8; CREDENTIAL_LEN];
        b[..8].copy_from_slice(&words[0].to_le_bytes());
        b[8..].copy_from_slice(&words[1].to_le_bytes());
        Credential(b)
    }
}

/// A fresh client id (random, non-zero): the name the host gives a client in its records,
/// logs and the region's bulk-block owner words. Not a secret (the credential is).
///
/// # Errors
/// `Io` when `getrandom` fails.
pub fn mint_client_id() -> Result<u64, TransportError> {
    loop {
        let b: [u8; 8] = random_bytes()?;
        let id = u64::from_le_bytes(b);
        if id != 0 {
            return Ok(id);
        }
    }
}

/// The clients one socket listener minted (a region keeps its own, `Region::admit`): an
/// identity is good only where it was minted.
#[derive(Debug, Default)]
pub struct StreamClients {
    by_id: Mutex<HashMap<u64, Credential>>,
}

impl StreamClients {
    /// Decides who a connection belongs to: `None` presented makes a new client (a fresh id and
    /// credential, returned to send back); a presented credential must be one minted here.
    ///
    /// # Errors
    /// `Refused(UnknownIdentity)` for a credential not minted here (or forgotten); `Io` when
    /// the kernel's random source fails.
    pub fn admit(
        &self,
        presented: Option<&Credential>,
    ) -> Result<(u64, Option<Credential>), TransportError> {
        let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        match presented {
            None => {
                let credential = Credential::mint()?;
                let id = loop {
                    let id = mint_client_id()?;
                    if !by_id.contains_key(&id) {
                        break id;
                    }
                };
                by_id.insert(id, credential);
                Ok((id, Some(credential)))
            }
            Some(c) => {
                // Every entry is compared, so the time taken says nothing of which one matched.
                let mut found = None;
                for (id, known) in by_id.iter() {
                    if known.matches(c) {
                        found = Some(*id);
                    }
                }
                found
                    .map(|id| (id, None))
                    .ok_or(TransportError::Refused(Refusal::UnknownIdentity))
            }
        }
    }

    /// Forgets a client (its worker ended): its credential is refused from now on.
    pub fn forget(&self, client_id: u64) {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&client_id);
    }

    /// How many clients are known.
    pub fn len(&self) -> usize {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the host refused a claim or a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It presented an identity the host did not mint for this region or listener (or no longer
    /// serves), or a proof that does not match.
    UnknownIdentity,
    /// A limit (clients per host, region or listener; connections per client) is reached.
    Limit,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::UnknownIdentity => "unknown client identity",
            Refusal::Limit => "a client or connection limit of the host is reached",
        })
    }
}

/// The proof a region claim carries: HMAC-SHA256 with the credential over the region's
/// generation, the channel index, the claim epoch and the presented client id, truncated. A
/// proof seen in one claim is worth nothing in another (another index or epoch).
pub(crate) fn claim_proof(
    credential: &Credential,
    generation: u64,
    index: u32,
    epoch: u32,
    client_id: u64,
) -> [u8; PROOF_LEN] {
    let mac = hmac_sha256(
        &credential.0,
        &[
            CLAIM_CONTEXT,
            &generation.to_le_bytes(),
            &index.to_le_bytes(),
            &epoch.to_le_bytes(),
            &client_id.to_le_bytes(),
        ],
    );
    let mut proof = [0u8; PROOF_LEN];
    proof.copy_from_slice(&mac[..PROOF_LEN]);
    proof
}

/// Equality that takes the same time wherever the first difference is.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_values_differ_and_are_never_none() {
        let a = Credential::mint().unwrap();
        let b = Credential::mint().unwrap();
        assert!(!a.is_none() && !b.is_none());
        assert!(!a.matches(&b));
        assert_eq!(Credential::from_words(a.words()), a);
        assert_ne!(mint_client_id().unwrap(), 0);
        assert_eq!(format!("{a:?}"), "Credential(..)");
    }

    #[test]
    fn stream_clients_know_only_what_they_minted() {
        let here = StreamClients::default();
        let (id, credential) = here.admit(None).unwrap();
        let credential = credential.expect("a new client gets a credential");
        assert_eq!(here.admit(Some(&credential)).unwrap(), (id, None));
        let made_up = Credential::mint().unwrap();
        assert!(matches!(
            here.admit(Some(&made_up)),
            Err(TransportError::Refused(Refusal::UnknownIdentity))
        ));
        let elsewhere = StreamClients::default();
        assert!(elsewhere.admit(Some(&credential)).is_err());
        here.forget(id);
        assert!(here.admit(Some(&credential)).is_err());
    }

    #[test]
    fn a_proof_is_bound_to_its_claim() {
        let c = Credential::mint().unwrap();
        let p = claim_proof(&c, 1, 2, 3, 4);
        assert_eq!(p, claim_proof(&c, 1, 2, 3, 4));
        for other in [
            claim_proof(&c, 9, 2, 3, 4),
            claim_proof(&c, 1, 9, 3, 4),
            claim_proof(&c, 1, 2, 9, 4),
            claim_proof(&c, 1, 2, 3, 9),
            claim_proof(&Credential::mint().unwrap(), 1, 2, 3, 4),
        ] {
            assert_ne!(p, other);
        }
    }
}
