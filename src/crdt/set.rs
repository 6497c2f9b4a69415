//! Sets: SADD, SREM and SPOP as an add-wins observed-remove set (riak_dt's ORSWOT, Redis Active-Active's sets).
//!
//! Each member is a live version `Value::Member(m)` under its own dot, in the member's own row (`crdt::rows`),
//! whose causal context covers every dot of it the replica has seen. The functions here work on such a row. So:
//!
//! * an add stamps the member with a fresh dot and drops the member's older versions (exactly those, by dot);
//! * a remove drops the member's versions the coordinator holds (after merging its quorum read): the context
//!   still covers their dots, so a merge drops them on every replica, while an add it had not seen (a dot the
//!   context does not cover) survives: add wins;
//! * a remove leaves one tombstone version in the member's row, so the row is reaped like a deleted key once every
//!   replica holds the same state and the tombstone is past its grace period.
//!
//! Metadata is one dot (actor, counter, time) per member, plus one tombstone at most, and the row's context.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::{Kind, OpError, Stamp, check_kind, date_removal, drop_other_kinds, kind};
use crate::versioning::{Siblings, Value};

/// The members of a set key, sorted and each once (none for a key of another kind).
pub fn members(state: &Siblings) -> Vec<Bytes> {
    if kind(state) != Some(Kind::Set) {
        return Vec::new();
    }
    let set: BTreeSet<&Bytes> = state
        .versions()
        .iter()
        .filter_map(|v| match &v.value {
            Some(Value::Member(m)) => Some(m),
            _ => None,
        })
        .collect();
    set.into_iter().cloned().collect()
}

/// SADD: adds every member (each stamped anew, so a concurrent remove that did not see this add loses to it).
/// Returns how many were not members before.
pub fn add(state: &mut Siblings, add: &[Bytes], stamp: &Stamp) -> Result<i64, OpError> {
    check_kind(state, Kind::Set)?;
    let wanted: BTreeSet<&Bytes> = add.iter().collect();
    let present: BTreeSet<Bytes> = members(state).into_iter().collect();
    drop_other_kinds(state, Kind::Set);
    state.remove_versions(|v| matches!(&v.value, Some(Value::Member(m)) if wanted.contains(m)));
    let mut added = 0;
    for m in wanted {
        added += i64::from(!present.contains(m));
        state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, Some(Value::Member(m.clone())));
    }
    Ok(added)
}

/// SREM: removes the members' versions this state holds. Returns how many were members.
pub fn remove(state: &mut Siblings, remove: &[Bytes], stamp: &Stamp) -> Result<i64, OpError> {
    check_kind(state, Kind::Set)?;
    let wanted: BTreeSet<&Bytes> = remove.iter().collect();
    let present: BTreeSet<Bytes> = members(state).into_iter().collect();
    let removed = wanted.iter().filter(|m| present.contains(**m)).count();
    if removed > 0 {
        state.remove_versions(|v| matches!(&v.value, Some(Value::Member(m)) if wanted.contains(m)));
        date_removal(state, stamp);
    }
    Ok(removed as i64)
}

/// Up to `count` distinct elements of `all`, picked at random from `seed` (a partial Fisher-Yates shuffle over
/// xorshift: the first `count` positions are a uniform sample).
pub fn sample(mut all: Vec<Bytes>, count: usize, seed: u64) -> Vec<Bytes> {
    let mut rng = seed | 1;
    let n = count.min(all.len());
    for i in 0..n {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let j = i + (rng % (all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::rows::{self, testing::Replica};
    use crate::crdt::{Op, OpReply};
    use crate::versioning::RowKind;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn sadd(ms: &[&str]) -> Op {
        Op::SetAdd { members: ms.iter().map(|m| b(m)).collect() }
    }

    fn srem(ms: &[&str]) -> Op {
        Op::SetRemove { members: ms.iter().map(|m| b(m)).collect() }
    }

    #[test]
    fn add_and_remove_answer_as_redis_does() {
        let mut r = Replica::new(1);
        assert_eq!(r.run(sadd(&["a", "b", "a"]), 1), Ok(OpReply::Integer(2)));
        assert_eq!(r.run(sadd(&["b", "c"]), 2), Ok(OpReply::Integer(1)));
        assert_eq!(r.members(), vec![b("a"), b("b"), b("c")]);
        assert_eq!(r.run(srem(&["a", "z"]), 3), Ok(OpReply::Integer(1)));
        assert_eq!(r.members(), vec![b("b"), b("c")]);
        // A row per member, beside the key row; the removed one holds its tombstone.
        assert_eq!(r.rows.len(), 4);
        let a = r.rows.get(&rows::element_row(RowKind::Set, b"a")).unwrap();
        assert!(!a.has_live_value() && a.sibling_count() == 1);
        assert_eq!(r.run(srem(&["b", "c"]), 4), Ok(OpReply::Integer(2)));
        assert_eq!(rows::kind_of(&r.rows, 4), None, "an emptied set is no key");
        assert_eq!(r.run(srem(&["b"]), 5), Ok(OpReply::Integer(0)));
    }

    #[test]
    fn a_concurrent_add_wins_over_a_remove_that_did_not_see_it() {
        let mut r1 = Replica::new(1);
        r1.run(sadd(&["x"]), 1).unwrap();
        let mut r2 = Replica::new(2);
        r2.rows = r1.rows.clone();
        r1.run(sadd(&["x"]), 2).unwrap(); // re-added concurrently
        r2.run(srem(&["x"]), 3).unwrap();
        let mut m = r1.rows.clone();
        m.merge(&r2.rows);
        assert_eq!(rows::members(&m, 3), vec![b("x")]);
        // Without the concurrent add, the remove wins everywhere.
        let mut r3 = Replica::new(3);
        r3.rows = r2.rows.clone();
        let mut m = r3.rows.clone();
        m.merge(&r2.rows);
        assert_eq!(rows::members(&m, 3), Vec::<Bytes>::new());
    }

    #[test]
    fn a_set_refuses_other_kinds_and_they_refuse_it() {
        let mut r = Replica::new(1);
        r.run(sadd(&["x"]), 1).unwrap();
        assert_eq!(r.run(Op::Increment { by: 1 }, 2), Err(OpError::WrongType));
        assert_eq!(r.run(Op::HashSet { pairs: vec![(b("f"), b("v"))], only_new: false }, 2), Err(OpError::WrongType));
        let mut s = Replica::new(2);
        s.run(Op::Increment { by: 1 }, 1).unwrap();
        assert_eq!(s.run(sadd(&["x"]), 2), Err(OpError::WrongType));
        assert_eq!(r.run(Op::SetPop { count: 5, seed: 7 }, 3), Ok(OpReply::Members(vec![b("x")])));
        assert_eq!(r.members(), Vec::<Bytes>::new());
    }
}
