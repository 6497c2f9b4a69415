//! Sets: SADD, SREM and SPOP as an add-wins observed-remove set (riak_dt's ORSWOT, Redis Active-Active's sets).
//!
//! Each member is a live version `Value::Member(m)` under its own dot; the key's causal context covers every dot
//! the replica has seen. So:
//!
//! * an add stamps the member with a fresh dot and drops the member's older versions (exactly those, by dot);
//! * a remove drops the member's versions the coordinator holds (after merging its quorum read): the context
//!   still covers their dots, so a merge drops them on every replica, while an add it had not seen (a dot the
//!   context does not cover) survives: add wins;
//! * a remove leaves one tombstone version, so an emptied set is reaped like a deleted key once every replica holds
//!   the same state and the tombstone is past its grace period.
//!
//! Metadata is one dot (actor, counter, time) per member, plus one tombstone at most.

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

/// Up to `count` distinct members, picked at random from `seed`.
pub fn pick(state: &Siblings, count: usize, seed: u64) -> Result<Vec<Bytes>, OpError> {
    check_kind(state, Kind::Set)?;
    Ok(sample(members(state), count, seed))
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
    use crate::config::PlainSiblings;
    use crate::crdt::{Op, OpReply, apply};
    use crate::versioning::{Actor, Dot};
    use proptest::prelude::*;
    use std::cell::Cell;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    struct Replica {
        actor: Actor,
        counter: Cell<u64>,
        state: Siblings,
    }

    impl Replica {
        fn new(actor: u64) -> Self {
            Replica { actor: Actor(actor), counter: Cell::new(0), state: Siblings::new() }
        }

        fn run(&mut self, op: Op, now_ms: u64) -> OpReply {
            crate::crdt::apply_as(&mut self.state, self.actor.0, &self.counter, now_ms, &op).unwrap()
        }
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
        assert_eq!(r.run(sadd(&["a", "b", "a"]), 1), OpReply::Integer(2));
        assert_eq!(r.run(sadd(&["b", "c"]), 2), OpReply::Integer(1));
        assert_eq!(members(&r.state), vec![b("a"), b("b"), b("c")]);
        assert_eq!(r.run(srem(&["a", "z"]), 3), OpReply::Integer(1));
        assert_eq!(members(&r.state), vec![b("b"), b("c")]);
        // One version per member, plus the removal's tombstone.
        assert_eq!(r.state.sibling_count(), 3);
        assert_eq!(r.run(srem(&["b", "c"]), 4), OpReply::Integer(2));
        assert_eq!(kind(&r.state), None, "an emptied set is no key");
        assert_eq!(r.state.sibling_count(), 1, "only the tombstone, reaped like a delete");
    }

    #[test]
    fn a_concurrent_add_wins_over_a_remove_that_did_not_see_it() {
        let mut r1 = Replica::new(1);
        r1.run(sadd(&["x"]), 1);
        let mut r2 = Replica::new(2);
        r2.state = r1.state.clone();
        r1.run(sadd(&["x"]), 2); // re-added concurrently
        r2.run(srem(&["x"]), 3);
        let mut m = r1.state.clone();
        m.merge(&r2.state);
        assert_eq!(members(&m), vec![b("x")]);
        // Without the concurrent add, the remove wins everywhere.
        let mut r3 = Replica::new(3);
        r3.state = r2.state.clone();
        let mut m = r3.state.clone();
        m.merge(&r2.state);
        assert_eq!(members(&m), Vec::<Bytes>::new());
    }

    #[test]
    fn a_set_refuses_other_kinds_and_they_refuse_it() {
        let mut r = Replica::new(1);
        r.run(sadd(&["x"]), 1);
        let stamp_next = || Dot { actor: Actor(1), counter: 99 };
        let stamp = Stamp {
            actor: Actor(1),
            next_dot: &stamp_next,
            now_ms: 2,
            timestamp_ms: 2,
            siblings: PlainSiblings::Error,
        };
        assert_eq!(apply(&mut r.state.clone(), &Op::Increment { by: 1 }, &stamp), Err(OpError::WrongType));
        let mut s = Siblings::new();
        s.update(&Default::default(), Dot { actor: Actor(2), counter: 1 }, 1, Some(b("str")));
        assert_eq!(apply(&mut s, &sadd(&["x"]), &stamp), Err(OpError::WrongType));
        assert_eq!(pick(&r.state, 5, 7).unwrap(), vec![b("x")]);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Add { at: usize, m: u8 },
        Remove { at: usize, m: u8 },
        Sync { from: usize, to: usize },
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..3, 0u8..6).prop_map(|(at, m)| Step::Add { at, m }),
            (0usize..3, 0u8..6).prop_map(|(at, m)| Step::Remove { at, m }),
            (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Sync { from, to }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The join laws hold, and no add disappears except by a remove that saw it: a member is in the merged set
        /// exactly when one of its adds was never observed (held by a replica that then added or removed it again).
        #[test]
        fn merge_laws_and_add_wins(steps in proptest::collection::vec(arb_step(), 0..50)) {
            let mut rs: Vec<Replica> = (1..=3).map(Replica::new).collect();
            // For each member, the dots of its adds and whether a remove has covered each one.
            let mut adds: Vec<(u8, Dot, bool)> = Vec::new();
            for (t, step) in steps.iter().enumerate() {
                match *step {
                    Step::Add { at, m } | Step::Remove { at, m } => {
                        // The add dots of m this replica holds are observed: superseded by an add, or removed.
                        let member = Some(Value::Member(b(&m.to_string())));
                        let held: Vec<Dot> =
                            rs[at].state.versions().iter().filter(|v| v.value == member).map(|v| v.dot).collect();
                        for a in adds.iter_mut().filter(|a| held.contains(&a.1)) {
                            a.2 = true;
                        }
                        if matches!(step, Step::Add { .. }) {
                            rs[at].run(sadd(&[&m.to_string()]), t as u64);
                            adds.push((m, Dot { actor: rs[at].actor, counter: rs[at].counter.get() }, false));
                        } else {
                            rs[at].run(srem(&[&m.to_string()]), t as u64);
                        }
                    }
                    Step::Sync { from, to } => {
                        let s = rs[from].state.clone();
                        rs[to].state.merge(&s);
                    }
                }
            }
            let (a, b_, c) = (&rs[0].state, &rs[1].state, &rs[2].state);
            let mut ab = a.clone(); ab.merge(b_);
            let mut ba = b_.clone(); ba.merge(a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(c);
            let mut bc = b_.clone(); bc.merge(c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            // A member is present exactly when one of its adds was never observed by a later add or remove.
            for m in 0u8..6 {
                let present = members(&ab_c).contains(&b(&m.to_string()));
                let unobserved = adds.iter().any(|a| a.0 == m && !a.2);
                prop_assert_eq!(present, unobserved, "member {}", m);
            }
        }
    }
}
