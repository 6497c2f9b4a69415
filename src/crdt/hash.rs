//! Hashes: HSET, HSETNX, HDEL and HINCRBY as a map of fields (riak_dt's map, Redis Active-Active's hashes).
//!
//! Each field is a group of versions in the field's own row (`crdt::rows`; the functions here work on such a row):
//! `Value::Field { field, value }` for a value written by HSET, or `Value::FieldCounter { field, total }`, one per
//! actor, for a field incremented by HINCRBY. So:
//!
//! * HSET stamps the field's new value with a fresh dot and drops the field's versions it holds (exactly those);
//!   two HSETs of one field through different nodes leave two versions, and a read answers the one written last
//!   (coordinator clock, ties broken by dot): the same on every replica;
//! * HINCRBY keeps a per-actor running total for the field, as INCR does for a key (with the field's integer
//!   value as its base, `Value::FieldBase`), so concurrent increments of a field all count; HSET of the field
//!   replaces the totals it saw;
//! * HDEL drops the field's versions its read saw; a field set concurrently (unseen) survives it: add wins.
//!
//! Metadata is one dot per field (per actor for an incremented field), plus one tombstone at most.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::counter::parse_integer;
use super::{Kind, OpError, Stamp, check_kind, date_removal, drop_other_kinds, kind};
use crate::versioning::{Siblings, Value, Version};

/// The field a version belongs to, if it is a hash version.
fn field_of(v: &Version) -> Option<&Bytes> {
    match &v.value {
        Some(Value::Field { field, .. } | Value::FieldCounter { field, .. } | Value::FieldBase { field, .. }) => {
            Some(field)
        }
        _ => None,
    }
}

/// A field's value from its versions: the newest decides whether it is a counter (the sum of the per-actor
/// totals) or a value (the newest one).
fn resolve<'a>(versions: impl Iterator<Item = &'a Version> + Clone) -> Option<Bytes> {
    let newest = versions.clone().max_by_key(|v| (v.timestamp_ms, v.dot))?;
    match &newest.value {
        Some(Value::Field { value, .. }) => Some(value.clone()),
        Some(Value::FieldCounter { .. } | Value::FieldBase { .. }) => {
            Some(Bytes::from(counter_sum(versions).to_string()))
        }
        _ => None,
    }
}

/// A counted field's value: its newest base plus the sum of its per-actor entries.
fn counter_sum<'a>(versions: impl Iterator<Item = &'a Version> + Clone) -> i128 {
    let base = versions
        .clone()
        .filter_map(|v| match v.value {
            Some(Value::FieldBase { base, .. }) => Some(((v.timestamp_ms, v.dot), base)),
            _ => None,
        })
        .max_by_key(|(at, _)| *at)
        .map_or(0, |(_, b)| i128::from(b));
    base + versions
        .filter_map(|v| match v.value {
            Some(Value::FieldCounter { total, .. }) => Some(total),
            _ => None,
        })
        .sum::<i128>()
}

/// Every field of a hash key with its value, sorted by field (none for a key of another kind).
pub fn fields(state: &Siblings) -> Vec<(Bytes, Bytes)> {
    if kind(state) != Some(Kind::Hash) {
        return Vec::new();
    }
    let mut groups: BTreeMap<&Bytes, Vec<&Version>> = BTreeMap::new();
    for v in state.versions() {
        if let Some(f) = field_of(v) {
            groups.entry(f).or_default().push(v);
        }
    }
    groups.into_iter().filter_map(|(f, vs)| Some((f.clone(), resolve(vs.into_iter())?))).collect()
}

/// The value of one field.
pub fn get(state: &Siblings, field: &Bytes) -> Option<Bytes> {
    if kind(state) != Some(Kind::Hash) {
        return None;
    }
    resolve(state.versions().iter().filter(|v| field_of(v) == Some(field)))
}

/// HSET (`only_new`: HSETNX): writes each field's value, the last one given for a field repeated. Returns how
/// many fields are new.
pub fn set(state: &mut Siblings, pairs: &[(Bytes, Bytes)], only_new: bool, stamp: &Stamp) -> Result<i64, OpError> {
    check_kind(state, Kind::Hash)?;
    let present: BTreeSet<Bytes> = fields(state).into_iter().map(|(f, _)| f).collect();
    let wanted: BTreeMap<&Bytes, &Bytes> =
        pairs.iter().filter(|(f, _)| !(only_new && present.contains(f))).map(|(f, v)| (f, v)).collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    drop_other_kinds(state, Kind::Hash);
    state.remove_versions(|v| field_of(v).is_some_and(|f| wanted.contains_key(f)));
    let mut added = 0;
    for (field, value) in wanted {
        added += i64::from(!present.contains(field));
        let value = Value::Field { field: field.clone(), value: value.clone() };
        state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, Some(value));
    }
    Ok(added)
}

/// HDEL: removes the fields' versions this state holds. Returns how many fields existed.
pub fn delete(state: &mut Siblings, remove: &[Bytes], stamp: &Stamp) -> Result<i64, OpError> {
    check_kind(state, Kind::Hash)?;
    let wanted: BTreeSet<&Bytes> = remove.iter().collect();
    let removed = fields(state).iter().filter(|(f, _)| wanted.contains(f)).count();
    if removed > 0 {
        state.remove_versions(|v| field_of(v).is_some_and(|f| wanted.contains(f)));
        date_removal(state, stamp);
    }
    Ok(removed as i64)
}

/// HINCRBY: adds `by` to the field's counter (a missing field counts from 0, a value from its integer, which
/// becomes the counter's base). Returns the field's value after it.
pub fn increment(state: &mut Siblings, field: &Bytes, by: i64, stamp: &Stamp) -> Result<i64, OpError> {
    check_kind(state, Kind::Hash)?;
    let of_field = |v: &&Version| field_of(v) == Some(field);
    let newest = state.versions().iter().filter(of_field).max_by_key(|v| (v.timestamp_ms, v.dot));
    let (base, counting) = match newest.and_then(|v| v.value.as_ref()) {
        Some(Value::FieldCounter { .. } | Value::FieldBase { .. }) => (None, true),
        Some(Value::Field { value, .. }) => {
            let n = std::str::from_utf8(value).ok().and_then(|s| parse_integer(s).ok());
            (Some(n.ok_or(OpError::FieldNotAnInteger)?), false)
        }
        _ => (None, false),
    };
    let current = if counting { counter_sum(state.versions().iter().filter(of_field)) } else { 0 };
    let total =
        i64::try_from(current + i128::from(base.unwrap_or(0)) + i128::from(by)).map_err(|_| OpError::Overflow)?;
    let own = state
        .versions()
        .iter()
        .filter(of_field)
        .filter(|v| counting && v.dot.actor == stamp.actor)
        .filter_map(|v| match v.value {
            Some(Value::FieldCounter { total, .. }) => Some((v.dot, total)),
            _ => None,
        })
        .max_by_key(|(dot, _)| *dot)
        .map_or(0, |(_, n)| n);
    let entry = own.checked_add(i128::from(by)).ok_or(OpError::Overflow)?;
    drop_other_kinds(state, Kind::Hash);
    // Counting already: only this actor's entry is replaced. Otherwise the field's versions go (a value becomes the
    // base; hidden entries lost to it).
    state.remove_versions(|v| {
        field_of(v) == Some(field)
            && (!counting
                || (v.dot.actor == stamp.actor && matches!(v.value, Some(Value::FieldCounter { .. })))
                || matches!(v.value, Some(Value::Field { .. })))
    });
    if let Some(base) = base {
        let value = Value::FieldBase { field: field.clone(), base };
        state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, Some(value));
    }
    let value = Value::FieldCounter { field: field.clone(), total: entry };
    state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, Some(value));
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::rows::{self, Rows};
    use crate::crdt::{Op, OpReply};
    use std::cell::Cell;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn run(state: &mut Rows, actor: u64, counter: &Cell<u64>, now_ms: u64, op: Op) -> Result<OpReply, OpError> {
        crate::crdt::apply_rows_as(state, actor, counter, now_ms, &op)
    }

    fn fields(state: &Rows) -> Vec<(Bytes, Bytes)> {
        rows::fields(state, 0)
    }

    fn get(state: &Rows, field: &Bytes) -> Option<Bytes> {
        fields(state).into_iter().find(|(f, _)| f == field).map(|(_, v)| v)
    }

    fn hset(pairs: &[(&str, &str)]) -> Op {
        Op::HashSet { pairs: pairs.iter().map(|(f, v)| (b(f), b(v))).collect(), only_new: false }
    }

    #[test]
    fn fields_answer_as_redis_does() {
        let (mut s, c) = (Rows::new(), Cell::new(0));
        assert_eq!(run(&mut s, 1, &c, 1, hset(&[("a", "1"), ("b", "2"), ("a", "3")])), Ok(OpReply::Integer(2)));
        assert_eq!(fields(&s), vec![(b("a"), b("3")), (b("b"), b("2"))]);
        let nx = Op::HashSet { pairs: vec![(b("a"), b("x"))], only_new: true };
        assert_eq!(run(&mut s, 1, &c, 2, nx), Ok(OpReply::Integer(0)));
        assert_eq!(get(&s, &b("a")), Some(b("3")));
        assert_eq!(run(&mut s, 1, &c, 3, Op::HashIncr { field: b("a"), by: 4 }), Ok(OpReply::Integer(7)));
        assert_eq!(run(&mut s, 1, &c, 4, Op::HashIncr { field: b("n"), by: -2 }), Ok(OpReply::Integer(-2)));
        assert_eq!(get(&s, &b("a")), Some(b("7")));
        let bad = run(&mut s, 1, &c, 5, Op::HashIncr { field: b("b"), by: i64::MAX });
        assert_eq!(bad, Err(OpError::Overflow));
        run(&mut s, 1, &c, 6, hset(&[("t", "text")])).unwrap();
        assert_eq!(run(&mut s, 1, &c, 7, Op::HashIncr { field: b("t"), by: 1 }), Err(OpError::FieldNotAnInteger));
        assert_eq!(run(&mut s, 1, &c, 8, Op::HashDel { fields: vec![b("a"), b("zz")] }), Ok(OpReply::Integer(1)));
        assert_eq!(fields(&s).len(), 3);
    }

    #[test]
    fn concurrent_field_increments_add_up_and_values_resolve_by_last_writer() {
        let (mut r1, mut r2) = (Rows::new(), Rows::new());
        let (c1, c2) = (Cell::new(0), Cell::new(0));
        run(&mut r1, 1, &c1, 1, Op::HashIncr { field: b("hits"), by: 2 }).unwrap();
        run(&mut r2, 2, &c2, 2, Op::HashIncr { field: b("hits"), by: 3 }).unwrap();
        run(&mut r1, 1, &c1, 3, hset(&[("name", "ann")])).unwrap();
        run(&mut r2, 2, &c2, 4, hset(&[("name", "bob")])).unwrap();
        let mut m = r1.clone();
        m.merge(&r2);
        let mut m2 = r2.clone();
        m2.merge(&r1);
        assert_eq!(m, m2);
        assert_eq!(get(&m, &b("hits")), Some(b("5")));
        assert_eq!(get(&m, &b("name")), Some(b("bob")), "written last");
        // The next HINCRBY through node 1 counts from the merged 5.
        assert_eq!(run(&mut m, 1, &c1, 5, Op::HashIncr { field: b("hits"), by: 1 }), Ok(OpReply::Integer(6)));
        // Two nodes start counting from the same value at once: it counts once.
        let mut s = Rows::new();
        run(&mut s, 1, &c1, 6, hset(&[("n", "10")])).unwrap();
        let (mut a, mut b_) = (s.clone(), s.clone());
        run(&mut a, 1, &c1, 7, Op::HashIncr { field: b("n"), by: 1 }).unwrap();
        run(&mut b_, 2, &c2, 8, Op::HashIncr { field: b("n"), by: 2 }).unwrap();
        a.merge(&b_);
        assert_eq!(get(&a, &b("n")), Some(b("13")));
    }
}
