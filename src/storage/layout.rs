//! The storage key layout: `ring position (16 bytes, big endian) ‖ user key`.
//!
//! The position is the key's hash slot followed by its MD5 ([`crate::ring::slot::key_position`]), so sorting storage
//! keys sorts by ring position, every partition of the ring is one contiguous range (handoff and Merkle trees scan
//! partitions this way), and so is every slot.

use bytes::{BufMut, Bytes, BytesMut};

/// Length of the ring-position prefix.
pub const POSITION_LEN: usize = 16;

/// The ring position of a user key.
pub fn ring_position(user_key: &[u8]) -> u128 {
    crate::ring::slot::key_position(user_key)
}

/// The storage key of a user key.
pub fn storage_key(user_key: &[u8]) -> Bytes {
    let mut k = BytesMut::with_capacity(POSITION_LEN + user_key.len());
    k.put_u128(ring_position(user_key));
    k.put_slice(user_key);
    k.freeze()
}

/// The user key inside a storage key, or `None` when the storage key is too short to be one.
pub fn user_key(storage_key: &[u8]) -> Option<&[u8]> {
    storage_key.get(POSITION_LEN..)
}

/// The ring position a storage key begins with, or `None` when it is too short to be one.
pub fn position(storage_key: &[u8]) -> Option<u128> {
    Some(u128::from_be_bytes(storage_key.get(..POSITION_LEN)?.try_into().ok()?))
}

/// Bits of a ring position below a SCAN cursor: a cursor is the top 63 bits of a position, so it fits the signed
/// 64-bit integers some clients parse cursors into (Go's redis_exporter does), and partition boundaries (multiples
/// of 2^114) fall on cursor boundaries.
const CURSOR_SHIFT: u32 = 65;

/// The SCAN cursor of a ring position.
pub fn scan_cursor(position: u128) -> u64 {
    (position >> CURSOR_SHIFT) as u64
}

/// The first ring position of a SCAN cursor (cursors past 2^63 fold onto the end of the ring).
pub fn cursor_position(cursor: u64) -> u128 {
    u128::from(cursor.min(u64::MAX >> 1)) << CURSOR_SHIFT
}

/// Inclusive start and exclusive end (or `None` for "to the end of the ring") of the storage keys whose positions
/// fall in `[first, last]`.
pub fn position_range(first: u128, last: u128) -> ([u8; POSITION_LEN], Option<[u8; POSITION_LEN]>) {
    (first.to_be_bytes(), last.checked_add(1).map(u128::to_be_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trip() {
        let k = storage_key(b"cart:42");
        assert_eq!(k.len(), 16 + 7);
        assert_eq!(user_key(&k), Some(&b"cart:42"[..]));
        assert_eq!(u128::from_be_bytes(k[..16].try_into().unwrap()), ring_position(b"cart:42"));
        assert_eq!(scan_cursor(u128::MAX), i64::MAX as u64);
        assert_eq!(scan_cursor(cursor_position(12345)), 12345);
        assert_eq!(cursor_position(u64::MAX), cursor_position(i64::MAX as u64));
        let (start, end) = position_range(0, u128::MAX);
        assert_eq!(start, [0u8; 16]);
        assert_eq!(end, None);
    }
}
