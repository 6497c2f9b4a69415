//! The storage key layout: `ring position (16 bytes, big endian) ‖ user key length (4 bytes, big endian) ‖ user
//! key ‖ row`.
//!
//! The position is the key's hash slot followed by its MD5 ([`crate::ring::slot::key_position`]), so sorting storage
//! keys sorts by ring position, every partition of the ring is one contiguous range (handoff and Merkle trees scan
//! partitions this way), and so is every slot.
//!
//! A key is one row (the empty row) unless it holds a collection kept as a row per element (`crdt::rows`): then its
//! key row is followed by one row per element, `[kind tag] ‖ element`. All rows of a key share its position, so they
//! live on the same replicas, move together in handoff, and sit next to each other, its key row first: the
//! length before the user key makes a key's rows exactly the storage keys that begin with its key row.

use bytes::{BufMut, Bytes, BytesMut};

/// Length of the ring-position prefix.
pub const POSITION_LEN: usize = 16;
/// Length of the user key's length, after the position.
const KEY_LEN_LEN: usize = 4;

/// The ring position of a user key.
pub fn ring_position(user_key: &[u8]) -> u128 {
    crate::ring::slot::key_position(user_key)
}

/// The storage key of a user key's key row (the only row of a string, counter, list or sorted set).
pub fn storage_key(user_key: &[u8]) -> Bytes {
    row_key(user_key, &[])
}

/// The storage key of row `row` of a user key (the empty row: its key row).
pub fn row_key(user_key: &[u8], row: &[u8]) -> Bytes {
    let mut k = BytesMut::with_capacity(POSITION_LEN + KEY_LEN_LEN + user_key.len() + row.len());
    k.put_u128(ring_position(user_key));
    k.put_u32(user_key.len() as u32);
    k.put_slice(user_key);
    k.put_slice(row);
    k.freeze()
}

/// The user key and the row inside a storage key, or `None` when it is not one.
pub fn parse(storage_key: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = storage_key.get(POSITION_LEN..)?;
    let (len, rest) = rest.split_at_checked(KEY_LEN_LEN)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    rest.split_at_checked(len)
}

/// The user key inside a storage key, or `None` when it is not one.
pub fn user_key(storage_key: &[u8]) -> Option<&[u8]> {
    parse(storage_key).map(|(k, _)| k)
}

/// Whether a storage key is a key row (not an element row of a collection).
pub fn is_key_row(storage_key: &[u8]) -> bool {
    parse(storage_key).is_some_and(|(_, row)| row.is_empty())
}

/// The first storage key after every row of the key whose key row is `key_row` (`None`: none sorts after them).
pub fn rows_end(key_row: &[u8]) -> Option<Bytes> {
    prefix_end(key_row)
}

/// The first byte string after every one that begins with `prefix` (`None`: there is none).
pub fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if let Some(next) = last.checked_add(1) {
            end.push(next);
            return Some(Bytes::from(end));
        }
    }
    None
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

/// The storage key of a user key in the layout of data format 2 (`position ‖ user key`, no rows): read only to
/// upgrade a data directory written by an older build.
pub fn format2_user_key(storage_key: &[u8]) -> Option<&[u8]> {
    storage_key.get(POSITION_LEN..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trip() {
        let k = storage_key(b"cart:42");
        assert_eq!(k.len(), 16 + 4 + 7);
        assert_eq!(user_key(&k), Some(&b"cart:42"[..]));
        assert!(is_key_row(&k));
        assert_eq!(u128::from_be_bytes(k[..16].try_into().unwrap()), ring_position(b"cart:42"));
        assert_eq!(scan_cursor(u128::MAX), i64::MAX as u64);
        assert_eq!(scan_cursor(cursor_position(12345)), 12345);
        assert_eq!(cursor_position(u64::MAX), cursor_position(i64::MAX as u64));
        let (start, end) = position_range(0, u128::MAX);
        assert_eq!(start, [0u8; 16]);
        assert_eq!(end, None);
    }

    #[test]
    fn a_keys_rows_follow_its_key_row_and_parse_back() {
        let key = storage_key(b"s");
        let row = row_key(b"s", b"smember");
        assert_eq!(parse(&row), Some((&b"s"[..], &b"smember"[..])));
        assert!(!is_key_row(&row));
        assert!(row.starts_with(&key) && key < row);
        // A longer user key that begins with the same bytes is another key, whatever its position.
        let other = storage_key(b"smember");
        assert_eq!(parse(&other), Some((&b"smember"[..], &b""[..])));
        assert_eq!(parse(b"short"), None);
        assert_eq!(parse(&key[..key.len() - 1]), None, "a user key cut short");
    }
}
