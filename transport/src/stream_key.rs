//! Pre-shared-key authentication of socket clients (issue 11): the server sends a fresh 32-byte
//! challenge after the client's hello, and the client answers with
//! `HMAC-SHA256(key, "vgpu stream auth v2" || challenge || hello)`; the server compares in
//! constant time and refuses anything else before the connection carries a single call.
//!
//! The key is read from a file that only its owner may read (mode `0600` or stricter), at least
//! 16 bytes long; one trailing newline is not part of it, so `head -c 32 /dev/urandom | base64 >
//! key` makes a good one.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::TransportError;

/// Shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;
/// Bytes of the challenge and of the answer.
pub const CHALLENGE_LEN: usize = 32;
const CONTEXT: &[u8] = b"vgpu stream auth v2";

/// A pre-shared key. Its bytes never appear in `Debug` output or logs.
#[derive(Clone)]
pub struct StreamKey(Vec<u8>);

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamKey({} bytes)", self.0.len())
    }
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read the key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read or write it.
    #[error("the key file {path} is accessible to group or others (mode {mode:o}); chmod 600 it")]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Fewer than [`MIN_KEY_LEN`] bytes.
    #[error("the key in {path} has {len} bytes; at least {MIN_KEY_LEN} are needed")]
    TooShort {
        /// The file.
        path: String,
        /// Its length, without a trailing newline.
        len: usize,
    },
}

impl StreamKey {
    /// Reads a key file (see the module docs).
    ///
    /// # Errors
    /// [`KeyError`]: unreadable, readable by group or others, or too short.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let read = |source| KeyError::Read {
            path: shown.clone(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read)?;
        let mode = file.metadata().map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed { path: shown, mode });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: shown,
                len: bytes.len(),
            });
        }
        Ok(StreamKey(bytes))
    }

    /// A key from bytes (tests, or a caller with its own key store).
    ///
    /// # Errors
    /// [`KeyError::TooShort`] below [`MIN_KEY_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: "(bytes)".to_owned(),
                len: bytes.len(),
            });
        }
        Ok(StreamKey(bytes.to_vec()))
    }

    /// The answer to `challenge` for the client hello `hello` (what a client sends back; public
    /// for tools and tests that speak the handshake themselves).
    pub fn answer(&self, challenge: &[u8], hello: &[u8]) -> [u8; CHALLENGE_LEN] {
        hmac_sha256(&self.0, &[CONTEXT, challenge, hello])
    }

    /// Whether `answer` is the right one (compared in constant time).
    pub(crate) fn accepts(&self, challenge: &[u8], hello: &[u8], answer: &[u8]) -> bool {
        let want = self.answer(challenge, hello);
        answer.len() == want.len()
            && want
                .iter()
                .zip(answer)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// A fresh challenge from the kernel's random source.
///
/// # Errors
/// `Io` when `getrandom` fails.
pub(crate) fn challenge() -> Result<[u8; CHALLENGE_LEN], TransportError> {
    random_bytes()
}

/// `N` bytes from the kernel's random source (`getrandom`, blocking until it is seeded).
///
/// # Errors
/// `Io` when `getrandom` fails.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], TransportError> {
    let mut bytes = [0u8; N];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the buffer is valid for the requested length past `filled`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(TransportError::Io {
                context: "getrandom",
                source: e,
            });
        }
        filled += n as usize;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // Key "Jefe", data "what do ya want for nothing?".
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_files_must_be_private_and_long_enough() {
        let dir = std::env::temp_dir().join(format!("vgpu-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, b"0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            StreamKey::from_file(&path),
            Err(KeyError::Exposed { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = StreamKey::from_file(&path).expect("a private key file");
        assert_eq!(
            key.0, b"0123456789abcdef0123",
            "the trailing newline is not the key's"
        );
        assert!(
            !format!("{key:?}").contains("0123"),
            "Debug hides the bytes"
        );
        std::fs::write(&path, b"short\n").unwrap();
        assert!(matches!(
            StreamKey::from_file(&path),
            Err(KeyError::TooShort { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_right_key_answers() {
        let key = StreamKey::from_bytes(b"a key of twenty bytes").unwrap();
        let other = StreamKey::from_bytes(b"another key, as long").unwrap();
        let (c, hello) = ([7u8; 32], [1u8; 32]);
        let answer = key.answer(&c, &hello);
        assert!(key.accepts(&c, &hello, &answer));
        assert!(!other.accepts(&c, &hello, &answer));
        assert!(
            !key.accepts(&[8u8; 32], &hello, &answer),
            "a replayed answer"
        );
        assert!(!key.accepts(&c, &[2u8; 32], &answer), "another hello");
        assert!(!key.accepts(&c, &hello, &answer[..31]));
    }
}
