//! Key placement by Redis Cluster hash slot, so that stock cluster clients compute the same placement we do.
//!
//! A key's slot is CRC16 (XMODEM) of the key, or of its hash tag (the part between the first `{` and the next `}`,
//! when not empty), modulo 16384: keys that share a tag share a slot. The ring position puts the slot in the top 14
//! bits and the top 114 bits of MD5(key) below it. So a slot is one contiguous run of positions, a partition (Q
//! divides 16384) is a whole number of slots and one contiguous range of storage keys, and keys still spread
//! evenly inside a slot for the Merkle leaves below it.

/// Number of hash slots (Redis Cluster's).
pub const SLOTS: usize = 16384;
/// Bits of the ring position below the slot.
const BELOW_SLOT: u32 = 128 - SLOTS.trailing_zeros();

const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// The part of `key` that is hashed: its hash tag if it has a non-empty one, else the whole key.
fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The Redis Cluster hash slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    (CRC16.checksum(hashed_part(key)) as usize % SLOTS) as u16
}

/// The ring position of `key`: its slot, then MD5 within the slot.
pub fn key_position(key: &[u8]) -> u128 {
    remembered(key).1
}

/// The MD5 of `key` (which its context tokens bind).
pub fn key_digest(key: &[u8]) -> [u8; 16] {
    remembered(key).0
}

/// Longest key whose digest and position [`remembered`] keeps.
const MEMO_KEY_BYTES: usize = 64;

thread_local! {
    /// The last key whose digest this thread computed, with the digest and the position. A length of `usize::MAX`
    /// matches no key.
    static LAST_KEY: std::cell::RefCell<([u8; MEMO_KEY_BYTES], usize, [u8; 16], u128)> =
        const { std::cell::RefCell::new(([0; MEMO_KEY_BYTES], usize::MAX, [0; 16], 0)) };
}

/// `key`'s MD5 and ring position, remembered for the last key this thread asked about: one request asks for its
/// key's position several times (its storage key, its preference list, whether its range is moving, where a
/// fallback stands) and its context token binds the same digest, and the MD5 was a fifth of a write's CPU.
fn remembered(key: &[u8]) -> ([u8; 16], u128) {
    if key.len() > MEMO_KEY_BYTES {
        return compute(key);
    }
    LAST_KEY.with(|memo| {
        let mut memo = memo.borrow_mut();
        let (buf, len, digest, position) = &mut *memo;
        if *len == key.len() && buf[..key.len()] == *key {
            return (*digest, *position);
        }
        let computed = compute(key);
        buf[..key.len()].copy_from_slice(key);
        (*len, *digest, *position) = (key.len(), computed.0, computed.1);
        computed
    })
}

fn compute(key: &[u8]) -> ([u8; 16], u128) {
    let digest = md5::compute(key).0;
    let md5 = u128::from_be_bytes(digest);
    (digest, (u128::from(key_slot(key)) << BELOW_SLOT) | (md5 >> (128 - BELOW_SLOT)))
}

/// The slot of a ring position.
pub fn slot_of(position: u128) -> u16 {
    (position >> BELOW_SLOT) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_positions_are_the_computed_ones() {
        // Alternating keys, a key that is a prefix of the last one, the empty key and one too long to remember.
        let long = vec![b'x'; MEMO_KEY_BYTES + 1];
        let keys: [&[u8]; 7] = [b"user:1", b"user:2", b"user:1", b"user:", b"", &long, b"user:1"];
        for _ in 0..2 {
            for k in keys {
                assert_eq!((key_digest(k), key_position(k)), compute(k), "{:?}", String::from_utf8_lossy(k));
                assert_eq!(key_digest(k), md5::compute(k).0);
            }
        }
    }

    #[test]
    fn slots_match_redis_cluster() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT` of a real server.
        assert_eq!(CRC16.checksum(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"{user1000}.following"));
        // An empty tag is no tag: the whole key is hashed; only the first `{` counts.
        assert_eq!(key_slot(b"foo{}{bar}"), CRC16.checksum(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn a_position_starts_with_its_slot() {
        for key in [&b"a"[..], b"cart:42", b"{tag}x", b""] {
            assert_eq!(slot_of(key_position(key)), key_slot(key));
        }
    }
}
