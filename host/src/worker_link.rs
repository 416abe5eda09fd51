//! What the supervisor tells a worker over the worker's stdin: one text line per record.
//!
//! - `client ID PID START VIA` assigns a spare worker to a client (a worker started for a
//!   known client gets the same values as arguments instead); `VIA` is `region` or `stream`;
//! - `claim INDEX EPOCH ID PID TID START CREDENTIAL` hands it one claimed channel to grant and
//!   serve; `CREDENTIAL` is the new client's credential (32 hex digits) on its first claim,
//!   `-` otherwise;
//! - `seal KEY` (64 hex digits), every worker's first record, is the host's key for sealing
//!   CUDA IPC handles (`dispatch/ipc_seal.rs`).
//!
//! `ID` is the client id the supervisor assigned (issue 11), never a word the guest wrote.
//!
//! End of file means the supervisor is gone: the worker exits. Accepted socket connections
//! cannot travel over a pipe; they go over a second link (`stream_link.rs`).

use transport::{ChannelClaim, Credential, CREDENTIAL_LEN};

/// How a client reaches the host. A client uses one transport: its id was minted by the region
/// or by one listener, and ids of different origins never name the same worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// Channels claimed in the shared-memory region.
    Region,
    /// Socket connections (TCP).
    Stream,
}

impl Via {
    fn word(self) -> &'static str {
        match self {
            Via::Region => "region",
            Via::Stream => "stream",
        }
    }
}

/// The client a worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId {
    /// The id the host assigned the client (random, non-zero; unique per region or listener).
    pub id: u64,
    /// Guest process id.
    pub pid: u32,
    /// Guest process start time (0 = unknown; always 0 for socket clients).
    pub start_time: u64,
    /// The transport the client uses.
    pub via: Via,
}

impl ClientId {
    /// The id as logs, the journal's `CLIENT` field and the host's reports show it: 16 hex
    /// digits.
    pub fn shown(&self) -> String {
        format!("{:016x}", self.id)
    }

    /// The client an admitted claim belongs to (`claim.client_id` as the host set it).
    pub fn of(claim: &ChannelClaim) -> Self {
        Self {
            id: claim.client_id,
            pid: claim.pid,
            start_time: claim.start_time,
            via: Via::Region,
        }
    }

    /// The client `id` a socket connection was admitted as. Its pid is the one the peer said
    /// in the handshake: on another machine it names nothing here, so no start time is kept.
    pub fn of_stream(id: u64, pid: u32) -> Self {
        Self {
            id,
            pid,
            start_time: 0,
            via: Via::Stream,
        }
    }
}

/// One record from the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Serve this client (spare workers only; the first record they get).
    Client(ClientId),
    /// Grant this channel (with the new client's credential on its first claim) and serve it.
    Claim(ChannelClaim, Option<Credential>),
    /// The host's key for sealing CUDA IPC handles (`dispatch/ipc_seal.rs`): every worker's
    /// first record.
    Seal([u8; SEAL_KEY_LEN]),
}

/// Bytes of the [`Record::Seal`] key.
pub const SEAL_KEY_LEN: usize = crate::dispatch::ipc_seal::KEY_LEN;

/// A credential as a record field: 32 hex digits, or `-` for none.
pub fn credential_field(credential: Option<&Credential>) -> String {
    credential.map_or_else(
        || "-".to_owned(),
        |c| c.to_bytes().iter().map(|b| format!("{b:02x}")).collect(),
    )
}

/// Parses [`credential_field`]'s text; `Err(())` for anything else (or an all-zero credential).
#[allow(clippy::result_unit_err)]
pub fn parse_credential(word: &str) -> Result<Option<Credential>, ()> {
    if word == "-" {
        return Ok(None);
    }
    if word.len() != 2 * CREDENTIAL_LEN || !word.is_ascii() {
        return Err(());
    }
    let mut bytes = [0u8; CREDENTIAL_LEN];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&word[2 * i..2 * i + 2], 16).map_err(|_| ())?;
    }
    let c = Credential::from_bytes(bytes);
    if c.is_none() {
        return Err(());
    }
    Ok(Some(c))
}

/// A line that is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad worker record {0:?}")]
pub struct BadRecord(pub String);

impl Record {
    /// The record as one line, newline included.
    pub fn to_line(&self) -> String {
        match self {
            Record::Client(c) => format!(
                "client {} {} {} {}\n",
                c.id,
                c.pid,
                c.start_time,
                c.via.word()
            ),
            Record::Claim(c, credential) => format!(
                "claim {} {} {} {} {} {} {}\n",
                c.index,
                c.epoch,
                c.client_id,
                c.pid,
                c.tid,
                c.start_time,
                credential_field(credential.as_ref())
            ),
            Record::Seal(key) => format!(
                "seal {}\n",
                key.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        }
    }

    /// Parses one line (with or without its newline).
    ///
    /// # Errors
    ///
    /// [`BadRecord`] for an unknown word, a missing or extra field, or a field that is not a
    /// number of the right width.
    pub fn parse(line: &str) -> Result<Self, BadRecord> {
        let bad = || BadRecord(line.trim_end().to_owned());
        let mut words: Vec<&str> = line.split_ascii_whitespace().collect();
        if words.is_empty() {
            return Err(bad());
        }
        let kind = words.remove(0);
        if kind == "seal" {
            let [hex] = words[..] else {
                return Err(bad());
            };
            if hex.len() != 2 * SEAL_KEY_LEN || !hex.is_ascii() {
                return Err(bad());
            }
            let mut key = [0u8; SEAL_KEY_LEN];
            for (i, b) in key.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
            }
            return Ok(Record::Seal(key));
        }
        let via = match (kind, words.last().copied()) {
            ("client", Some("region")) => Some(Via::Region),
            ("client", Some("stream")) => Some(Via::Stream),
            ("client", _) => return Err(bad()),
            _ => None,
        };
        let mut credential = None;
        if via.is_some() {
            words.pop();
        } else if kind == "claim" {
            let last = words.pop().ok_or_else(bad)?;
            credential = parse_credential(last).map_err(|()| bad())?;
        }
        let nums: Vec<u64> = words
            .into_iter()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let u32_at = |i: usize| u32::try_from(nums[i]).map_err(|_| bad());
        match (kind, nums.len()) {
            ("client", 3) => Ok(Record::Client(ClientId {
                id: nums[0],
                pid: u32_at(1)?,
                start_time: nums[2],
                via: via.ok_or_else(bad)?,
            })),
            ("claim", 6) => Ok(Record::Claim(
                ChannelClaim {
                    index: u32_at(0)?,
                    epoch: u32_at(1)?,
                    client_id: nums[2],
                    presented_id: 0,
                    proof: [0; transport::CREDENTIAL_LEN],
                    pid: u32_at(3)?,
                    tid: u32_at(4)?,
                    start_time: nums[5],
                },
                credential,
            )),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let claim = ChannelClaim {
            index: 63,
            epoch: u32::MAX,
            client_id: u64::MAX,
            presented_id: 0,
            proof: [0; transport::CREDENTIAL_LEN],
            pid: 4_194_304,
            tid: 7,
            start_time: 123_456_789,
        };
        let client = ClientId::of(&claim);
        let remote = ClientId::of_stream(9, 77);
        assert_eq!(remote.via, Via::Stream);
        let credential = Credential::mint().unwrap();
        for r in [
            Record::Claim(claim, None),
            Record::Claim(claim, Some(credential)),
            Record::Client(client),
            Record::Client(remote),
            Record::Seal(std::array::from_fn(|i| (i * 37) as u8)),
        ] {
            assert_eq!(Record::parse(&r.to_line()), Ok(r));
        }
    }

    #[test]
    fn bad_lines_are_refused() {
        for line in [
            "",
            "claim 1 2 3 4 5 -",
            "claim 1 2 3 4 5 6 7 -",
            "claim 1 2 3 4 5 6",
            "claim 1 2 3 4 5 6 00000000000000000000000000000000",
            "claim 1 2 3 4 5 6 0123",
            "claim 1 2 3 4 5 6 zz000000000000000000000000000000",
            "client 1 99999999999 3 region",
            "client -1 2 3 region",
            "client 1 2 3",
            "client 1 2 3 tcp",
            "client 1 2 region 3",
            "client 1 2 3 stream stream",
            "claim 1 2 3 4 5 6 region",
            "serve 1 2 3",
            "claim a b c d e f",
            "seal",
            "seal 0123",
            "seal 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff ff",
            "seal zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ] {
            assert!(Record::parse(line).is_err(), "{line:?} accepted");
        }
    }
}
