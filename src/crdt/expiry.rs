//! Expiry: a key's time to live, kept in its versions, for every kind of key.
//!
//! Each version carries a deadline ([`Expiry`]): `SET ... EX` writes a version with one, a typed write to a key
//! that has a TTL gives its new versions the key's deadline (an `SADD` to an expiring set expires with it), and
//! `EXPIRE`/`PERSIST` set the deadline of every live version their coordinator read, in place. Two replicas that
//! hold one version with different deadlines keep the one set last (a last-writer-wins register per version, by
//! the write's timestamp, then actor), so concurrent `EXPIRE`s converge on the later one, one that read another
//! wins over it (the timestamp is raised past what it read), and a version written
//! concurrently with an `EXPIRE`, which it did not see, keeps its own deadline (usually none).
//!
//! A value whose deadline has passed reads as absent on every replica whose clock has passed it (so every replica
//! agrees up to the skew between the clocks of the coordinators and the readers), a write drops it as it would a
//! superseded value (its dot stays covered, so it never comes back through a merge), and anti-entropy reaps a key
//! whose every version expired like a deleted key, once replicas prove they agree and the grace period is over.

use serde::{Deserialize, Serialize};

use super::{OpError, Stamp, date_removal};
use crate::versioning::{Expiry, Siblings};

/// EXPIRE's condition on the key's current deadline (Redis 7's `NX XX GT LT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Always set it.
    #[default]
    Always,
    /// Only when the key has no deadline.
    Nx,
    /// Only when it has one.
    Xx,
    /// Only when the new deadline is later (no deadline counts as infinitely late).
    Gt,
    /// Only when the new deadline is earlier (likewise).
    Lt,
}

/// Drops the values of `state` whose deadline has passed; when that leaves nothing live, dates the removal with
/// one tombstone, so the key is reaped like a deleted one. Every typed write runs this first.
pub fn drop_expired(state: &mut Siblings, stamp: &Stamp) {
    if state.drop_expired(stamp.now_ms) > 0 && !state.has_live_value() {
        date_removal(state, stamp);
    }
}

/// EXPIRE family (`at_ms`: the new deadline) and PERSIST (`None`) on `state`, already without its expired
/// values: 1 when it changed the key's deadline, 0 when the key has no live value or the condition does not
/// hold. A deadline already past deletes what the key holds, as Redis does.
pub fn expire(state: &mut Siblings, at_ms: Option<u64>, condition: Condition, stamp: &Stamp) -> Result<i64, OpError> {
    let Some(current) = state.deadline(stamp.now_ms) else { return Ok(0) };
    let holds = match (condition, at_ms) {
        // PERSIST: only a key with a deadline changes.
        (_, None) => state.versions().iter().any(|v| v.value.is_some() && v.expiry.at_ms.is_some()),
        (Condition::Always, Some(_)) => true,
        (Condition::Nx, Some(_)) => current.is_none(),
        (Condition::Xx, Some(_)) => current.is_some(),
        (Condition::Gt, Some(at)) => current.is_some_and(|c| at > c),
        (Condition::Lt, Some(at)) => current.is_none_or(|c| at < c),
    };
    if !holds {
        return Ok(0);
    }
    if at_ms.is_some_and(|at| at <= stamp.now_ms) {
        state.remove_versions(|v| v.value.is_some());
        date_removal(state, stamp);
        return Ok(1);
    }
    state.set_expiry(|v| v.value.is_some(), Expiry::new(at_ms, stamp.timestamp_ms, stamp.actor));
    Ok(1)
}

/// Gives the values `state` gained in a write by `stamp` (dots of its actor past `issued`) the key's deadline
/// from before the write (`deadline`), so that what is added to an expiring key expires with it.
pub fn inherit(state: &mut Siblings, deadline: Option<u64>, issued: u64, stamp: &Stamp) {
    if deadline.is_none() {
        return;
    }
    let new = |v: &crate::versioning::Version| {
        v.value.is_some() && v.dot.actor == stamp.actor && v.dot.counter > issued && v.expiry == Expiry::default()
    };
    state.set_expiry(new, Expiry::new(deadline, stamp.timestamp_ms, stamp.actor));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PlainSiblings;
    use crate::crdt::rows::{self, Rows};
    use crate::crdt::{Op, apply, apply_to_rows, kind};
    use crate::versioning::{Actor, Dot};
    use bytes::Bytes;
    use std::cell::Cell;

    fn stamped<T>(actor: u64, now_ms: u64, counter: &Cell<u64>, f: impl FnOnce(&Stamp) -> T) -> T {
        let actor = Actor(actor);
        let next = || {
            counter.set(counter.get() + 1);
            Dot { actor, counter: counter.get() }
        };
        f(&Stamp {
            actor,
            next_dot: &next,
            now_ms,
            timestamp_ms: now_ms,
            siblings: PlainSiblings::Newest,
            may_empty: true,
            read: None,
        })
    }

    fn expire_op(at_ms: Option<u64>, condition: Condition) -> Op {
        Op::Expire { at_ms, condition }
    }

    fn on_rows(rows: &mut Rows, op: &Op, st: &Stamp) -> Result<crate::crdt::OpReply, OpError> {
        apply_to_rows(rows, op, st).map(|(reply, _)| reply)
    }

    fn deadline(rows: &Rows, now_ms: u64) -> Option<Option<u64>> {
        rows.key_row().and_then(|k| k.deadline(now_ms))
    }

    #[test]
    fn members_added_to_an_expiring_set_expire_with_it_and_a_write_after_the_deadline_starts_afresh() {
        let c = Cell::new(0);
        let mut s = Rows::new();
        let add = |m: &str| Op::SetAdd { members: vec![Bytes::from(m.to_string())] };
        stamped(1, 10, &c, |st| on_rows(&mut s, &add("a"), st)).unwrap();
        assert_eq!(
            stamped(1, 11, &c, |st| on_rows(&mut s, &expire_op(Some(100), Condition::Always), st)),
            Ok(crate::crdt::OpReply::Integer(1))
        );
        stamped(1, 20, &c, |st| on_rows(&mut s, &add("b"), st)).unwrap();
        assert_eq!(deadline(&s, 50), Some(Some(100)), "the key keeps its deadline");
        assert_eq!(rows::members(&s, 50).len(), 2);
        assert_eq!(rows::members(&s, 100), Vec::<Bytes>::new(), "both went at the deadline");
        // Past the deadline both are gone; a new member starts a key with no deadline.
        stamped(1, 150, &c, |st| on_rows(&mut s, &add("c"), st)).unwrap();
        assert_eq!(rows::members(&s, 150), vec![Bytes::from("c")]);
        assert_eq!(deadline(&s, 150), Some(None));
    }

    #[test]
    fn conditions_follow_redis() {
        let c = Cell::new(0);
        let mut s = Siblings::new();
        stamped(1, 10, &c, |st| apply(&mut s, &Op::Increment { by: 1 }, st)).unwrap();
        let run = |s: &mut Siblings, at, cond| {
            let c = Cell::new(100);
            match stamped(1, 20, &c, |st| apply(s, &expire_op(at, cond), st)) {
                Ok(crate::crdt::OpReply::Integer(n)) => n,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(run(&mut s, None, Condition::Always), 0, "PERSIST on a key without a deadline");
        assert_eq!(run(&mut s, Some(500), Condition::Xx), 0);
        assert_eq!(run(&mut s, Some(500), Condition::Gt), 0, "no deadline is later than any");
        assert_eq!(run(&mut s, Some(500), Condition::Nx), 1);
        assert_eq!(run(&mut s, Some(400), Condition::Nx), 0);
        assert_eq!(run(&mut s, Some(400), Condition::Gt), 0);
        assert_eq!(run(&mut s, Some(600), Condition::Gt), 1);
        assert_eq!(run(&mut s, Some(300), Condition::Lt), 1);
        assert_eq!(s.deadline(20), Some(Some(300)));
        assert_eq!(run(&mut s, None, Condition::Always), 1);
        assert_eq!(s.deadline(20), Some(None));
        assert_eq!(run(&mut s, Some(5), Condition::Always), 1, "a past deadline deletes");
        assert_eq!(kind(&s), None);
        assert_eq!(run(&mut s, Some(500), Condition::Always), 0, "nothing left to expire");
    }

    #[test]
    fn concurrent_expires_converge_on_the_later_one_and_a_concurrent_write_keeps_the_later_deadline() {
        let (c1, c2) = (Cell::new(0), Cell::new(0));
        let add = |m: &str| Op::SetAdd { members: vec![Bytes::from(m.to_string())] };
        let mut a = Rows::new();
        stamped(1, 10, &c1, |st| on_rows(&mut a, &add("m"), st)).unwrap();
        let mut b = a.clone();
        stamped(1, 20, &c1, |st| on_rows(&mut a, &expire_op(Some(1000), Condition::Always), st)).unwrap();
        stamped(2, 30, &c2, |st| on_rows(&mut b, &expire_op(Some(2000), Condition::Always), st)).unwrap();
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(deadline(&ab, 40), Some(Some(2000)), "the EXPIRE set last wins");
        // A member added on a concurrently with b's EXPIRE (unseen by it): its header keeps the deadline a knew, and
        // the key holds until the later of the two.
        stamped(2, 31, &c2, |st| on_rows(&mut b, &add("n"), st)).unwrap();
        let mut a2 = a.clone();
        stamped(1, 35, &c1, |st| on_rows(&mut a2, &add("o"), st)).unwrap();
        a2.merge(&b);
        assert_eq!(deadline(&a2, 40), Some(Some(2000)));
        assert_eq!(rows::members(&a2, 1500).len(), 3);
        assert_eq!(rows::members(&a2, 2000), Vec::<Bytes>::new());
    }
}
