//! The upgrade of a data directory of format 2 (storage key `position ‖ user key`, every key one row, a set's or
//! hash's elements in that row) to format 3 (`storage::layout`: length-prefixed user keys, a row per element of a
//! set or hash, `crdt::rows`), run at start before the node serves.
//!
//! Each key is rewritten in one atomic batch (its old row deleted, its new rows written), in storage order. A
//! storage key already in the new layout is recognised by its position matching its user key's (the old layout
//! would need an MD5 collision to pass), so an upgrade cut short by a crash resumes where it stopped.

use std::ops::Bound;

use bytes::{BufMut, Bytes, BytesMut};

use super::store::{decode, encode};
use super::{Change, Engine, StorageError, layout};
use crate::crdt::rows::split_whole_state;

/// Keys rewritten per batch.
const PAGE: usize = 1024;

/// Whether `storage_key` is in today's layout.
fn is_current(storage_key: &[u8]) -> bool {
    match (layout::parse(storage_key), layout::position(storage_key)) {
        (Some((user_key, _)), Some(position)) => layout::ring_position(user_key) == position,
        _ => false,
    }
}

/// Rewrites every key of `data` (the node's keys) and `hints` (its hints, `[len][target][storage key]` →
/// `[stored at: 8 bytes][state]`) in today's layout. Returns how many old keys it rewrote.
pub fn upgrade(data: &dyn Engine, hints: &dyn Engine) -> Result<u64, StorageError> {
    let mut rewritten = rewrite(data, |k| Some((Bytes::new(), k)), |v| Ok((Bytes::new(), decode(v)?)))?;
    rewritten += rewrite(
        hints,
        |k| {
            let (&len, rest) = k.split_first()?;
            let (target, storage_key) = rest.split_at_checked(len as usize)?;
            let mut prefix = BytesMut::with_capacity(1 + target.len());
            prefix.put_u8(len);
            prefix.put_slice(target);
            Some((prefix.freeze(), storage_key))
        },
        |v| {
            let (at, body) =
                v.split_at_checked(8).ok_or_else(|| StorageError::Corrupt { reason: "short hint".into() })?;
            Ok((Bytes::copy_from_slice(at), decode(body)?))
        },
    )?;
    Ok(rewritten)
}

/// Rewrites the keys of one engine: `split_key` gives a key's prefix and old storage key, `split_value` a value's
/// prefix and state; the new rows keep both prefixes.
fn rewrite(
    engine: &dyn Engine,
    split_key: impl Fn(&[u8]) -> Option<(Bytes, &[u8])>,
    split_value: impl Fn(&[u8]) -> Result<(Bytes, crate::versioning::Siblings), StorageError>,
) -> Result<u64, StorageError> {
    let mut rewritten = 0;
    let mut after: Option<Bytes> = None;
    loop {
        let lower = after.as_ref().map_or(Bound::Unbounded, |k| Bound::Excluded(&k[..]));
        let page = engine.scan((lower, Bound::Unbounded), PAGE)?;
        let mut changes: Vec<Change> = Vec::new();
        for (k, v) in &page {
            let Some((prefix, storage_key)) = split_key(k) else { continue };
            if is_current(storage_key) {
                continue;
            }
            let Some(user_key) = layout::format2_user_key(storage_key) else { continue };
            let (value_prefix, state) = split_value(v)?;
            changes.push((k.clone(), None));
            for (row, state) in split_whole_state(&state).into_rows() {
                let mut key = BytesMut::from(&prefix[..]);
                key.put_slice(&layout::row_key(user_key, &row));
                let mut value = BytesMut::from(&value_prefix[..]);
                value.put_slice(&encode(&state));
                changes.push((key.freeze(), Some(value.freeze())));
            }
            rewritten += 1;
        }
        if !changes.is_empty() {
            engine.apply(&changes)?;
        }
        match page.last() {
            Some((k, _)) if page.len() == PAGE => after = Some(k.clone()),
            _ => return Ok(rewritten),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::rows;
    use crate::storage::memory::MemoryEngine;
    use crate::versioning::{Actor, Dot, Siblings, Value, VersionVector};

    fn format2_key(user_key: &[u8]) -> Bytes {
        let mut k = BytesMut::new();
        k.put_u128(layout::ring_position(user_key));
        k.put_slice(user_key);
        k.freeze()
    }

    #[test]
    fn keys_and_hints_move_to_the_new_layout_and_sets_to_rows_once() {
        let (data, hints) = (MemoryEngine::new(), MemoryEngine::new());
        let mut string = Siblings::new();
        string.update(&VersionVector::new(), Dot { actor: Actor(1), counter: 1 }, 5, Some(Bytes::from("v")));
        let mut set = Siblings::new();
        for (i, m) in ["a", "b"].iter().enumerate() {
            let dot = Dot { actor: Actor(2), counter: i as u64 + 1 };
            set.update_value(&VersionVector::new(), dot, 6, Some(Value::Member(Bytes::from(*m))));
        }
        let mut list = Siblings::new();
        for (i, item) in ["x", "y"].iter().enumerate() {
            let dot = Dot { actor: Actor(3), counter: i as u64 + 1 };
            let value = Value::Item { rank: i as i64, value: Bytes::from(*item) };
            list.update_value(&VersionVector::new(), dot, 7, Some(value));
        }
        data.apply(&[
            (format2_key(b"str"), Some(encode(&string))),
            (format2_key(b"set"), Some(encode(&set))),
            (format2_key(b"list"), Some(encode(&list))),
        ])
        .unwrap();
        let mut hint_key = vec![2u8, b'n', b'2'];
        hint_key.extend_from_slice(&format2_key(b"str"));
        let mut hint_value = 77u64.to_be_bytes().to_vec();
        hint_value.extend_from_slice(&encode(&string));
        hints.apply(&[(Bytes::from(hint_key), Some(Bytes::from(hint_value)))]).unwrap();

        assert_eq!(upgrade(&data, &hints).unwrap(), 4);
        assert_eq!(upgrade(&data, &hints).unwrap(), 0, "an upgraded directory is left as it is");
        let get = |k: Bytes| data.get(&k).unwrap().map(|v| decode(&v).unwrap());
        assert_eq!(get(layout::storage_key(b"str")), Some(string.clone()));
        let all: Vec<(Bytes, Bytes)> = data.scan((Bound::Unbounded, Bound::Unbounded), 100).unwrap();
        assert_eq!(all.len(), 7, "the string, the set's and the list's key rows and one row per member or item");
        let rows_of = |key: &[u8]| {
            rows::Rows::from_rows(
                all.iter()
                    .filter_map(|(k, v)| match layout::parse(k) {
                        Some((user_key, row)) if user_key == key => {
                            Some((Bytes::copy_from_slice(row), decode(v).unwrap()))
                        }
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(rows::members(&rows_of(b"set"), 10), vec![Bytes::from("a"), Bytes::from("b")]);
        let items: Vec<Bytes> = rows::items(&rows_of(b"list"), 10).into_iter().map(|(_, v)| v).collect();
        assert_eq!(items, vec![Bytes::from("x"), Bytes::from("y")]);
        let store = crate::storage::hints::HintStore::open(std::sync::Arc::new(hints)).unwrap();
        let batch = store.batch("n2", 10).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!((batch[0].user_key.as_ref(), batch[0].stored_ms), (&b"str"[..], 77));
    }
}
