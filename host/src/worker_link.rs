//! What the supervisor tells a worker over the worker's stdin: one text line per record.
//!
//! - `client TOKEN PID START` assigns a spare worker to a client (a worker started for a known
//!   client gets the same values as arguments instead);
//! - `claim INDEX EPOCH TOKEN PID TID START` hands it one claimed channel to serve.
//!
//! End of file means the supervisor is gone: the worker exits.

use transport::ChannelClaim;

/// The client a worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId {
    /// The transport's per-process token.
    pub token: u64,
    /// Guest process id.
    pub pid: u32,
    /// Guest process start time (0 = unknown).
    pub start_time: u64,
}

impl ClientId {
    /// The client a claim belongs to.
    pub fn of(claim: &ChannelClaim) -> Self {
        Self {
            token: claim.client_token,
            pid: claim.pid,
            start_time: claim.start_time,
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
            Record::Client(c) => format!("client {} {} {}\n", c.token, c.pid, c.start_time),
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
        let mut words = line.split_ascii_whitespace();
        let kind = words.next().ok_or_else(bad)?;
        let nums: Vec<u64> = words
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let u32_at = |i: usize| u32::try_from(nums[i]).map_err(|_| bad());
        match (kind, nums.len()) {
            ("client", 3) => Ok(Record::Client(ClientId {
                token: nums[0],
                pid: u32_at(1)?,
                start_time: nums[2],
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
        for r in [Record::Claim(claim), Record::Client(client)] {
            assert_eq!(Record::parse(&r.to_line()), Ok(r));
        }
    }

    #[test]
    fn bad_lines_are_refused() {
        for line in [
            "",
            "claim 1 2 3 4 5",
            "claim 1 2 3 4 5 6 7",
            "client 1 99999999999 3",
            "client -1 2 3",
            "serve 1 2 3",
            "claim a b c d e f",
        ] {
            assert!(Record::parse(line).is_err(), "{line:?} accepted");
        }
    }
}
