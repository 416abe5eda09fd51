//! What the supervisor tells a worker over the worker's stdin: one text line per record.
//!
//! - `client TOKEN PID START VIA` assigns a spare worker to a client (a worker started for a
//!   known client gets the same values as arguments instead); `VIA` is `region` or `stream`;
//! - `claim INDEX EPOCH TOKEN PID TID START` hands it one claimed channel to serve.
//!
//! End of file means the supervisor is gone: the worker exits. Accepted socket connections
//! cannot travel over a pipe; they go over a second link (`stream_link.rs`).

use transport::{ChannelClaim, ClientIdentity};

/// How a client reaches the host. A client uses one transport: its token is the region's or
/// the socket client's, and the two never name the same worker.
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
    /// The transport's per-process token.
    pub token: u64,
    /// Guest process id.
    pub pid: u32,
    /// Guest process start time (0 = unknown; always 0 for socket clients).
    pub start_time: u64,
    /// The transport the client uses.
    pub via: Via,
}

impl ClientId {
    /// The token as logs, the journal's `CLIENT` field and the host's reports show it: 16 hex
    /// digits.
    pub fn shown(&self) -> String {
        format!("{:016x}", self.token)
    }

    /// The client a claim belongs to.
    pub fn of(claim: &ChannelClaim) -> Self {
        Self {
            token: claim.client_token,
            pid: claim.pid,
            start_time: claim.start_time,
            via: Via::Region,
        }
    }

    /// The client a socket connection belongs to. Its pid is the one the peer claimed in the
    /// handshake: on another machine it names nothing here, so no start time is kept.
    pub fn of_stream(identity: &ClientIdentity) -> Self {
        Self {
            token: identity.client_token,
            pid: identity.pid,
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
    /// Serve this channel.
    Claim(ChannelClaim),
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
                c.token,
                c.pid,
                c.start_time,
                c.via.word()
            ),
            Record::Claim(c) => format!(
                "claim {} {} {} {} {} {}\n",
                c.index, c.epoch, c.client_token, c.pid, c.tid, c.start_time
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
        let via = match (kind, words.last().copied()) {
            ("client", Some("region")) => Some(Via::Region),
            ("client", Some("stream")) => Some(Via::Stream),
            ("client", _) => return Err(bad()),
            _ => None,
        };
        if via.is_some() {
            words.pop();
        }
        let nums: Vec<u64> = words
            .into_iter()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let u32_at = |i: usize| u32::try_from(nums[i]).map_err(|_| bad());
        match (kind, nums.len()) {
            ("client", 3) => Ok(Record::Client(ClientId {
                token: nums[0],
                pid: u32_at(1)?,
                start_time: nums[2],
                via: via.ok_or_else(bad)?,
            })),
            ("claim", 6) => Ok(Record::Claim(ChannelClaim {
                index: u32_at(0)?,
                epoch: u32_at(1)?,
                client_token: nums[2],
                pid: u32_at(3)?,
                tid: u32_at(4)?,
                start_time: nums[5],
            })),
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
            client_token: u64::MAX,
            pid: 4_194_304,
            tid: 7,
            start_time: 123_456_789,
        };
        let client = ClientId::of(&claim);
        let remote = ClientId::of_stream(&ClientIdentity {
            client_token: 9,
            pid: 77,
            tid: 78,
        });
        assert_eq!(remote.via, Via::Stream);
        for r in [
            Record::Claim(claim),
            Record::Client(client),
            Record::Client(remote),
        ] {
            assert_eq!(Record::parse(&r.to_line()), Ok(r));
        }
    }

    #[test]
    fn bad_lines_are_refused() {
        for line in [
            "",
            "claim 1 2 3 4 5",
            "claim 1 2 3 4 5 6 7",
            "client 1 99999999999 3 region",
            "client -1 2 3 region",
            "client 1 2 3",
            "client 1 2 3 tcp",
            "client 1 2 region 3",
            "client 1 2 3 stream stream",
            "claim 1 2 3 4 5 6 region",
            "serve 1 2 3",
            "claim a b c d e f",
        ] {
            assert!(Record::parse(line).is_err(), "{line:?} accepted");
        }
    }
}
