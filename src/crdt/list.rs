//! Lists: LPUSH, RPUSH, LPOP, RPOP, LREM and LTRIM over items ordered by rank.
//!
//! Each item is a version `Value::Item { rank, value }` under its own dot; the list is the items sorted by
//! (rank, dot). A push to the head takes ranks below the lowest its coordinator holds (after merging its quorum
//! read), a push to the tail ranks above the highest. So:
//!
//! * concurrent pushes through different nodes all land; two that took the same rank are ordered by dot, the same
//!   way on every replica;
//! * a pop, LREM or LTRIM removes the item versions its read saw, exactly (by dot); an item pushed concurrently
//!   survives. **Two clients popping at once through different nodes, or under a partition, may both get the same
//!   item**: a pop is a read and a remove, not a consensus;
//! * a removal leaves one tombstone, so an emptied list is reaped like a deleted key.
//!
//! Metadata is one dot and one rank per item, plus one tombstone at most.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::{Kind, OpError, Stamp, check_kind, date_removal, drop_other_kinds, kind};
use crate::versioning::{Dot, Siblings, Value};

/// The items of a list key in order: (rank, dot, value) (none for a key of another kind).
pub fn items(state: &Siblings) -> Vec<(i64, Dot, Bytes)> {
    if kind(state) != Some(Kind::List) {
        return Vec::new();
    }
    let mut items: Vec<(i64, Dot, Bytes)> = state
        .versions()
        .iter()
        .filter_map(|v| match &v.value {
            Some(Value::Item { rank, value }) => Some((*rank, v.dot, value.clone())),
            _ => None,
        })
        .collect();
    items.sort_by_key(|(rank, dot, _)| (*rank, *dot));
    items
}

/// The values of a list key in order.
pub fn values(state: &Siblings) -> Vec<Bytes> {
    items(state).into_iter().map(|(_, _, v)| v).collect()
}

/// Redis's inclusive index range `[start, stop]` (negative from the end) over a list of `len`, as a half-open
/// range of positions (empty when nothing is in range).
pub fn index_range(start: i64, stop: i64, len: usize) -> std::ops::Range<usize> {
    let len = len as i64;
    let start = if start < 0 { (len + start).max(0) } else { start };
    let stop = if stop < 0 { len + stop } else { stop.min(len - 1) };
    if start > stop || start >= len { 0..0 } else { start as usize..stop as usize + 1 }
}

/// LPUSH (`head`) or RPUSH: pushes each value in turn. Returns the list's length after.
pub fn push(state: &mut Siblings, head: bool, values: &[Bytes], stamp: &Stamp) -> Result<i64, OpError> {
    check_kind(state, Kind::List)?;
    let current = items(state);
    let mut rank =
        if head { current.first().map_or(0, |(r, _, _)| *r) } else { current.last().map_or(0, |(r, _, _)| *r) };
    drop_other_kinds(state, Kind::List);
    for value in values {
        rank = if head { rank.checked_sub(1) } else { rank.checked_add(1) }.ok_or(OpError::Overflow)?;
        let item = Value::Item { rank, value: value.clone() };
        state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, Some(item));
    }
    Ok((current.len() + values.len()) as i64)
}

/// Removes the items at `dots` (if any) and dates the removal.
fn remove_dots(state: &mut Siblings, dots: &BTreeSet<Dot>, stamp: &Stamp) {
    if !dots.is_empty() {
        state.remove_versions(|v| dots.contains(&v.dot));
        date_removal(state, stamp);
    }
}

/// LPOP (`head`) or RPOP: removes and returns up to `count` items from that end.
pub fn pop(state: &mut Siblings, head: bool, count: usize, stamp: &Stamp) -> Result<Vec<Bytes>, OpError> {
    check_kind(state, Kind::List)?;
    let mut current = items(state);
    if !head {
        current.reverse();
    }
    current.truncate(count);
    let dots = current.iter().map(|(_, d, _)| *d).collect();
    remove_dots(state, &dots, stamp);
    Ok(current.into_iter().map(|(_, _, v)| v).collect())
}

/// LREM: removes up to |count| occurrences of `value`, from the head (count > 0) or the tail (< 0); all for 0.
/// Returns how many.
pub fn remove(state: &mut Siblings, count: i64, value: &Bytes, stamp: &Stamp) -> Result<i64, OpError> {
    check_kind(state, Kind::List)?;
    let mut current = items(state);
    if count < 0 {
        current.reverse();
    }
    let limit = if count == 0 { usize::MAX } else { count.unsigned_abs() as usize };
    let dots: BTreeSet<Dot> = current.iter().filter(|(_, _, v)| v == value).take(limit).map(|(_, d, _)| *d).collect();
    let removed = dots.len() as i64;
    remove_dots(state, &dots, stamp);
    Ok(removed)
}

/// LTRIM: keeps the items in Redis's index range `[start, stop]`, removing the others. Returns how many went.
pub fn trim(state: &mut Siblings, start: i64, stop: i64, stamp: &Stamp) -> Result<i64, OpError> {
    check_kind(state, Kind::List)?;
    let current = items(state);
    let keep = index_range(start, stop, current.len());
    let dots: BTreeSet<Dot> =
        current.iter().enumerate().filter(|(i, _)| !keep.contains(i)).map(|(_, (_, d, _))| *d).collect();
    let removed = dots.len() as i64;
    remove_dots(state, &dots, stamp);
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{Op, OpReply};
    use std::cell::Cell;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn run(state: &mut Siblings, actor: u64, counter: &Cell<u64>, op: Op) -> OpReply {
        crate::crdt::apply_as(state, actor, counter, counter.get(), &op).unwrap()
    }

    fn push(head: bool, vs: &[&str]) -> Op {
        Op::ListPush { head, values: vs.iter().map(|v| b(v)).collect() }
    }

    fn strs(s: &Siblings) -> Vec<String> {
        values(s).iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect()
    }

    #[test]
    fn pushes_pops_and_trims_answer_as_redis_does() {
        let (mut s, c) = (Siblings::new(), Cell::new(0));
        assert_eq!(run(&mut s, 1, &c, push(true, &["a", "b", "c"])), OpReply::Integer(3));
        assert_eq!(run(&mut s, 1, &c, push(false, &["x", "y"])), OpReply::Integer(5));
        assert_eq!(strs(&s), ["c", "b", "a", "x", "y"]);
        assert_eq!(run(&mut s, 1, &c, Op::ListPop { head: true, count: 1 }), OpReply::Members(vec![b("c")]));
        assert_eq!(run(&mut s, 1, &c, Op::ListPop { head: false, count: 2 }), OpReply::Members(vec![b("y"), b("x")]));
        run(&mut s, 1, &c, push(false, &["a", "b", "a"]));
        assert_eq!(strs(&s), ["b", "a", "a", "b", "a"]);
        assert_eq!(run(&mut s, 1, &c, Op::ListRemove { count: -2, value: b("a") }), OpReply::Integer(2));
        assert_eq!(strs(&s), ["b", "a", "b"]);
        assert_eq!(run(&mut s, 1, &c, Op::ListTrim { start: 1, stop: -1 }), OpReply::Integer(1));
        assert_eq!(strs(&s), ["a", "b"]);
        assert_eq!(run(&mut s, 1, &c, Op::ListTrim { start: 5, stop: 10 }), OpReply::Integer(2));
        assert_eq!(kind(&s), None, "an emptied list is no key");
    }

    #[test]
    fn index_ranges_follow_redis() {
        assert_eq!(index_range(0, -1, 5), 0..5);
        assert_eq!(index_range(-2, -1, 5), 3..5);
        assert_eq!(index_range(1, 100, 5), 1..5);
        assert_eq!(index_range(-100, 1, 5), 0..2);
        assert_eq!(index_range(3, 1, 5), 0..0);
        assert_eq!(index_range(5, 6, 5), 0..0);
        assert_eq!(index_range(0, -1, 0), 0..0);
    }

    #[test]
    fn concurrent_pushes_all_land_in_one_order() {
        let (mut r1, mut r2) = (Siblings::new(), Siblings::new());
        let (c1, c2) = (Cell::new(0), Cell::new(0));
        run(&mut r1, 1, &c1, push(false, &["base"]));
        r2.merge(&r1);
        run(&mut r1, 1, &c1, push(false, &["from-1"]));
        run(&mut r2, 2, &c2, push(false, &["from-2"]));
        run(&mut r2, 2, &c2, push(true, &["head-2"]));
        let mut m1 = r1.clone();
        m1.merge(&r2);
        let mut m2 = r2.clone();
        m2.merge(&r1);
        assert_eq!(m1, m2);
        assert_eq!(strs(&m1), ["head-2", "base", "from-1", "from-2"]);
        // A pop that saw only the base keeps the concurrent pushes.
        let mut p = Siblings::new();
        let c3 = Cell::new(0);
        p.merge(&r1);
        run(&mut p, 3, &c3, Op::ListPop { head: true, count: 1 });
        let mut all = m1.clone();
        all.merge(&p);
        assert_eq!(strs(&all), ["head-2", "from-1", "from-2"]);
    }
}
