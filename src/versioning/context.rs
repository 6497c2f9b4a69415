//! The context token handed to clients: an opaque, printable, authenticated encoding of a version vector.
//!
//! Layout before base64url (no padding): `[format: 1 byte][postcard(Token)][tag: 12 bytes]`. The tag is
//! HMAC-SHA256, truncated, keyed by a secret clients never see, over the format byte, the MD5 of the user key, and
//! the payload.
//!
//! Why authenticate: a context decides which versions a write removes, and its counters are merged into the key's
//! causal context for good. A forged token claiming `{actor: 2^63}` would make that actor's future writes to the
//! key look already superseded, which turns the key into last-writer-wins and drops concurrent writes silently.
//! A token reused on another key would remove versions the client never saw. So only tokens minted by a read of
//! the same key are accepted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use serde::{Deserialize, Serialize};

use super::clock::VersionVector;

/// What a token carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The causal context the client read.
    pub clock: VersionVector,
    /// The replica that answered the read first: a write with this token is coordinated there when it is in the
    /// key's top N, so the writer's next read likely sees its own write (paper §6.4).
    pub coordinator: Option<String>,
}

/// Current token format.
const FORMAT_V1: u8 = 1;
/// Bytes of the truncated HMAC kept in a token (96 bits).
const TAG_LEN: usize = 12;
/// Longest token accepted, in characters: far above any pruned vector, far below a memory hazard.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The secret that authenticates context tokens. Every node that may receive a token must hold the same key.
#[derive(Clone)]
pub struct ContextKey {
    bytes: [u8; 32],
    /// The MAC with the key already absorbed: each token clones it, which saves the two SHA-256 blocks of the
    /// key's pads (half of a token's cost).
    keyed: Hmac<Sha256>,
}

impl ContextKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes).expect("HMAC takes keys of any length");
        Self { bytes, keyed }
    }

    /// A fresh random key from the operating system.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut k = [0u8; 32];
        crate::sys::fill_random(&mut k)?;
        Ok(Self::from_bytes(k))
    }

    /// The raw bytes, for persisting.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    fn tag(&self, key_digest: &[u8; 16], body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(key_digest);
        mac.update(body);
        mac
    }
}

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(..)")
    }
}

/// Why a token was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("context token too long ({len} characters, at most {MAX_TOKEN_LEN})")]
    TooLong {
        /// Characters received.
        len: usize,
    },
    /// Not base64url.
    #[error("context token is not base64url")]
    Encoding,
    /// Too short to hold a format byte and a tag.
    #[error("context token is truncated")]
    Truncated,
    /// The tag does not match: altered, truncated, from another key, or minted under another secret.
    #[error("context token failed authentication (altered, or issued for another key or cluster)")]
    Authentication,
    /// A format this build does not know.
    #[error("context token has unknown format version {version}")]
    UnknownFormat {
        /// The version byte found.
        version: u8,
    },
    /// The payload does not decode to a version vector.
    #[error("context token payload is malformed")]
    Payload,
}

/// Encodes a token for the user key whose MD5 is `key_digest` as printable text. The digest, not the key: a request
/// has computed it already for its key's ring position (`ring::slot::key_digest` remembers it).
pub fn encode(key: &ContextKey, key_digest: &[u8; 16], token: &Token) -> String {
    let body = postcard::to_extend(token, vec![FORMAT_V1]).expect("a token always serializes");
    seal(key, key_digest, body)
}

/// Tags `body` (format byte, then payload) for the user key of `key_digest` and encodes it as token text. [`encode`] seals real
/// tokens; the fuzz target seals arbitrary bodies, to reach the payload parser that sits behind the tag check.
pub fn seal(key: &ContextKey, key_digest: &[u8; 16], mut body: Vec<u8>) -> String {
    let tag = key.tag(key_digest, &body).finalize().into_bytes();
    body.extend_from_slice(&tag[..TAG_LEN]);
    URL_SAFE_NO_PAD.encode(body)
}

/// Decodes and verifies a token presented for the user key whose MD5 is `key_digest`; anything malformed is
/// rejected, never guessed at.
pub fn decode(key: &ContextKey, key_digest: &[u8; 16], token: &[u8]) -> Result<Token, ContextError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(ContextError::TooLong { len: token.len() });
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| ContextError::Encoding)?;
    if raw.len() < 1 + TAG_LEN {
        return Err(ContextError::Truncated);
    }
    let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
    // Constant-time comparison of the truncated tag.
    key.tag(key_digest, body).verify_truncated_left(tag).map_err(|_| ContextError::Authentication)?;
    if body[0] != FORMAT_V1 {
        return Err(ContextError::UnknownFormat { version: body[0] });
    }
    let (decoded, rest): (Token, &[u8]) = postcard::take_from_bytes(&body[1..]).map_err(|_| ContextError::Payload)?;
    if !rest.is_empty() {
        return Err(ContextError::Payload);
    }
    // Re-canonicalize defensively: binary searches rely on sorted, unique actors.
    Ok(Token {
        clock: VersionVector::from_entries(decoded.clock.entries().iter().copied()),
        coordinator: decoded.coordinator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioning::clock::{Actor, Entry};
    use proptest::prelude::*;

    fn digest(user_key: &[u8]) -> [u8; 16] {
        md5::compute(user_key).0
    }

    fn key() -> ContextKey {
        ContextKey::from_bytes([7; 32])
    }

    fn sample() -> Token {
        Token { clock: sample_vv(), coordinator: Some("n2".into()) }
    }

    fn sample_vv() -> VersionVector {
        VersionVector::from_entries([
            Entry { actor: Actor(7), counter: 3, timestamp_ms: 1_700_000_000_000 },
            Entry { actor: Actor(u64::MAX), counter: 1, timestamp_ms: 5 },
        ])
    }

    #[test]
    fn round_trip() {
        let t = encode(&key(), &digest(b"k"), &sample());
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode(&key(), &digest(b"k"), t.as_bytes()).unwrap(), sample());
        let empty = encode(&key(), &digest(b"k"), &Token::default());
        assert_eq!(decode(&key(), &digest(b"k"), empty.as_bytes()).unwrap(), Token::default());
    }

    #[test]
    fn rejects_tampering_other_keys_and_other_secrets() {
        let t = encode(&key(), &digest(b"k"), &sample());
        let mut bytes = t.clone().into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        assert!(decode(&key(), &digest(b"k"), &bytes).is_err());
        assert!(decode(&key(), &digest(b"k"), &t.as_bytes()[..t.len() - 3]).is_err());
        assert_eq!(decode(&key(), &digest(b"other"), t.as_bytes()).unwrap_err(), ContextError::Authentication);
        let stranger = ContextKey::from_bytes([8; 32]);
        assert_eq!(decode(&stranger, &digest(b"k"), t.as_bytes()).unwrap_err(), ContextError::Authentication);
        assert_eq!(decode(&key(), &digest(b"k"), b"!!!").unwrap_err(), ContextError::Encoding);
        assert_eq!(decode(&key(), &digest(b"k"), b"").unwrap_err(), ContextError::Truncated);
        assert!(matches!(decode(&key(), &digest(b"k"), &vec![b'A'; 5000]), Err(ContextError::TooLong { .. })));
    }

    #[test]
    fn forged_counters_are_refused() {
        // A client that knows the layout but not the secret cannot mint a token.
        let forged = VersionVector::from_entries([Entry { actor: Actor(7), counter: u64::MAX, timestamp_ms: 0 }]);
        let mut raw = vec![FORMAT_V1];
        raw.extend(postcard::to_stdvec(&Token { clock: forged, coordinator: None }).unwrap());
        raw.extend_from_slice(&[0u8; TAG_LEN]);
        let t = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(decode(&key(), &digest(b"k"), t.as_bytes()).unwrap_err(), ContextError::Authentication);
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&key(), &digest(b"k"), &data);
            let t = URL_SAFE_NO_PAD.encode(&data);
            let _ = decode(&key(), &digest(b"k"), t.as_bytes());
        }

        #[test]
        fn round_trip_any(pairs in proptest::collection::vec((any::<u64>(), 1u64..u64::MAX, any::<u64>()), 0..12)) {
            let vv = VersionVector::from_entries(pairs.into_iter().map(|(a, c, t)| Entry { actor: Actor(a), counter: c, timestamp_ms: t }));
            let t = Token { clock: vv, coordinator: None };
            prop_assert_eq!(decode(&key(), &digest(b"key"), encode(&key(), &digest(b"key"), &t).as_bytes()).unwrap(), t);
        }
    }
}
