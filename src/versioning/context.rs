//! The context token handed to clients: an opaque, printable encoding of a version vector.
//!
//! Layout before base64url (no padding): `[format version: 1 byte][postcard(VersionVector)][check: 4 bytes]`, where
//! the check is the first 4 bytes of MD5 over everything before it. The check catches truncation, typos and
//! tampering by accident; it is not a signature (a client may always send an older context, which is harmless).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::clock::VersionVector;

/// Current token format.
const FORMAT_V1: u8 = 1;
/// Length of the integrity check.
const CHECK_LEN: usize = 4;
/// Longest token accepted, in characters: far above any pruned vector, far below a memory hazard.
pub const MAX_TOKEN_LEN: usize = 4096;

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
    /// Too short to hold a version byte and a check.
    #[error("context token is truncated")]
    Truncated,
    /// The check does not match the payload.
    #[error("context token failed its integrity check")]
    Checksum,
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

fn check(bytes: &[u8]) -> [u8; CHECK_LEN] {
    let digest = md5::compute(bytes).0;
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&digest[..CHECK_LEN]);
    out
}

/// Encodes a causal context as a printable token.
pub fn encode(context: &VersionVector) -> String {
    let mut raw = vec![FORMAT_V1];
    raw.extend(postcard::to_stdvec(context).expect("a version vector always serializes"));
    let c = check(&raw);
    raw.extend_from_slice(&c);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes and verifies a token; anything malformed is rejected, never guessed at.
pub fn decode(token: &[u8]) -> Result<VersionVector, ContextError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(ContextError::TooLong { len: token.len() });
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| ContextError::Encoding)?;
    if raw.len() < 1 + CHECK_LEN {
        return Err(ContextError::Truncated);
    }
    let (body, sum) = raw.split_at(raw.len() - CHECK_LEN);
    if check(body) != sum {
        return Err(ContextError::Checksum);
    }
    if body[0] != FORMAT_V1 {
        return Err(ContextError::UnknownFormat { version: body[0] });
    }
    let (vv, rest): (VersionVector, &[u8]) =
        postcard::take_from_bytes(&body[1..]).map_err(|_| ContextError::Payload)?;
    if !rest.is_empty() {
        return Err(ContextError::Payload);
    }
    // Re-canonicalize: a forged payload with unsorted or duplicate actors must not break binary searches.
    Ok(VersionVector::from_entries(vv.entries().iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioning::clock::{Actor, Entry};
    use proptest::prelude::*;

    fn sample() -> VersionVector {
        VersionVector::from_entries([
            Entry {
                actor: Actor(7),
                counter: 3,
                timestamp_ms: 1_700_000_000_000,
            },
            Entry {
                actor: Actor(u64::MAX),
                counter: 1,
                timestamp_ms: 5,
            },
        ])
    }

    #[test]
    fn round_trip() {
        let t = encode(&sample());
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decode(t.as_bytes()).unwrap(), sample());
        assert_eq!(
            decode(encode(&VersionVector::new()).as_bytes()).unwrap(),
            VersionVector::new()
        );
    }

    #[test]
    fn rejects_tampering() {
        let t = encode(&sample());
        let mut bytes = t.clone().into_bytes();
        // Flip one character in the middle.
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        assert!(decode(&bytes).is_err());
        assert_eq!(
            decode(&t.as_bytes()[..t.len() - 3]).unwrap_err(),
            ContextError::Checksum
        );
        assert_eq!(decode(b"!!!").unwrap_err(), ContextError::Encoding);
        assert_eq!(decode(b"").unwrap_err(), ContextError::Truncated);
        assert!(matches!(
            decode(&vec![b'A'; 5000]),
            Err(ContextError::TooLong { .. })
        ));
    }

    #[test]
    fn rejects_unknown_format() {
        let mut raw = vec![9u8, 0];
        let c = check(&raw);
        raw.extend_from_slice(&c);
        let t = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(
            decode(t.as_bytes()).unwrap_err(),
            ContextError::UnknownFormat { version: 9 }
        );
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data);
            let t = URL_SAFE_NO_PAD.encode(&data);
            let _ = decode(t.as_bytes());
        }

        #[test]
        fn round_trip_any(pairs in proptest::collection::vec((any::<u64>(), 1u64..u64::MAX, any::<u64>()), 0..12)) {
            let vv = VersionVector::from_entries(pairs.into_iter().map(|(a, c, t)| Entry { actor: Actor(a), counter: c, timestamp_ms: t }));
            prop_assert_eq!(decode(encode(&vv).as_bytes()).unwrap(), vv);
        }
    }
}
