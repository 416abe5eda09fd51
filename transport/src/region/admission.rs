//! The host's side of client identity in a region: the clients this region handle minted, and
//! the admission of each claim by them (issue 11). Identities are per region handle: an id or
//! credential of another region (or of a socket listener) is unknown here.

use super::*;
use crate::identity::{mint_client_id, Credential, Refusal};

/// A claim the host admitted: who it belongs to, and for a new client the credential to grant
/// it with ([`Region::grant`]).
#[derive(Debug, Clone, Copy)]
pub struct Admitted {
    /// The claim, with `client_id` set by the host.
    pub claim: ChannelClaim,
    /// A new client's credential (its first claim); `None` for a later claim of a known client.
    pub credential: Option<Credential>,
}

impl Region {
    /// Host: decides who `claim` belongs to. A claim presenting no id makes a new client (a fresh
    /// random id and credential, remembered by this handle); a claim presenting an id must prove it
    /// with that client's credential ([`Region::proof_matches`]). The guest's words decide nothing
    /// else.
    ///
    /// # Errors
    /// `Refused(UnknownIdentity)` for an id this handle did not mint (or has forgotten) or a wrong
    /// proof; `Io` when the kernel's random source fails.
    pub fn admit(&self, claim: ChannelClaim) -> Result<Admitted, TransportError> {
        let mut clients = self.inner.clients.lock().unwrap_or_else(|e| e.into_inner());
        if claim.presented_id == 0 {
            let credential = Credential::mint()?;
            let client_id = loop {
                let id = mint_client_id()?;
                if !clients.contains_key(&id) {
                    break id;
                }
            };
            clients.insert(client_id, credential);
            return Ok(Admitted {
                claim: ChannelClaim { client_id, ..claim },
                credential: Some(credential),
            });
        }
        match clients.get(&claim.presented_id) {
            Some(credential) if self.proof_matches(&claim, credential) => Ok(Admitted {
                claim: ChannelClaim {
                    client_id: claim.presented_id,
                    ..claim
                },
                credential: None,
            }),
            _ => Err(TransportError::Refused(Refusal::UnknownIdentity)),
        }
    }

    /// Host: forgets a client (its worker ended): claims presenting its id are refused from now on,
    /// and the guest process comes back as a new client.
    pub fn forget(&self, client_id: u64) {
        self.inner
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&client_id);
    }

    /// Host: the clients this handle knows.
    pub fn known_clients(&self) -> usize {
        self.inner
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Host, for simple servers (tests, benchmarks): [`Region::admit`], then [`Region::grant`] or
    /// [`Region::refuse`], then [`Region::serve`].
    ///
    /// # Errors
    /// The refusal, or the errors of those calls.
    pub fn admit_and_serve(&self, claim: ChannelClaim) -> Result<HostChannel, TransportError> {
        match self.admit(claim) {
            Ok(a) => {
                self.grant(&a.claim, a.credential.as_ref())?;
                self.serve(&a.claim)
            }
            Err(TransportError::Refused(why)) => {
                self.refuse(&claim, why)?;
                Err(TransportError::Refused(why))
            }
            Err(e) => Err(e),
        }
    }
}
