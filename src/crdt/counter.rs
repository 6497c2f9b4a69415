//! Counters: INCR and its family as a PN-counter whose per-actor slots are dotted versions.
//!
//! A counter key holds one [`Value::Counter`] entry per actor that ever coordinated an increment of it (that
//! actor's running total of increments) and, when it began as a string holding an integer, a
//! [`Value::CounterBase`] with that integer. Its value is the base plus the sum of the entries. An increment
//! coordinated by actor A replaces A's own entry (exactly that version) with its total plus the increment, under a
//! fresh dot. So:
//!
//! * replication is idempotent: a replica merges entries by dot, and the newer entry of an actor supersedes the
//!   older one everywhere (the newer one's context covers its dot), so no increment is counted twice, and none is
//!   lost, since every entry carries its actor's whole history;
//! * increments coordinated by different actors never touch each other's entries, so concurrent increments all
//!   count;
//! * two nodes that turn the same string into a counter at once both keep it as the base (the newest base counts,
//!   once) and add their increments as entries: `SET n 10` then two concurrent `INCR n` give 12;
//! * a DEL, or a SET, covers the versions its coordinator had seen, and only those: an increment it had not seen
//!   survives it (Riak's reset-remove counter, Redis Active-Active's "observed reset").
//!
//! Metadata is one entry per actor (a node and its epoch) that incremented the key, however many increments.

use super::{Kind, OpError, Stamp, drop_other_kinds, kind};
use crate::config::PlainSiblings;
use crate::versioning::{Siblings, Value};

/// The counter's value: its newest base plus the sum of its live entries (a key of another kind sums to 0).
pub fn total(state: &Siblings) -> i128 {
    let base = state
        .versions()
        .iter()
        .filter_map(|v| match v.value {
            Some(Value::CounterBase(b)) => Some(((v.timestamp_ms, v.dot), b)),
            _ => None,
        })
        .max_by_key(|(at, _)| *at)
        .map_or(0, |(_, b)| i128::from(b));
    base + state
        .versions()
        .iter()
        .filter_map(|v| match v.value {
            Some(Value::Counter(n)) => Some(n),
            _ => None,
        })
        .sum::<i128>()
}

/// INCRBY on `state` (the coordinator's replica, merged with its quorum read): adds `by`, counting a missing key
/// from 0 and a string from its integer value (`siblings` says which of several concurrent strings). Returns the
/// counter's value after it.
pub fn increment(state: &mut Siblings, by: i64, stamp: &Stamp) -> Result<i64, OpError> {
    let covered = state.context().clone();
    match kind(state) {
        Some(Kind::Set | Kind::Hash | Kind::List | Kind::ZSet) => Err(OpError::WrongType),
        None => {
            // Nothing live: supersede whatever was seen (tombstones) and start the actor's entry.
            state.update_value(&covered, (stamp.next_dot)(), stamp.timestamp_ms, Some(Value::Counter(i128::from(by))));
            Ok(by)
        }
        Some(Kind::String) => {
            let count = state.live_values().count();
            if count > 1 && stamp.siblings == PlainSiblings::Error {
                return Err(OpError::Siblings { count });
            }
            let current = match state.newest_live() {
                Some(b) => parse_integer(std::str::from_utf8(b).map_err(|_| OpError::NotAnInteger)?)?,
                None => 0,
            };
            let total = current.checked_add(by).ok_or(OpError::Overflow)?;
            // The string becomes the counter's base: everything read is superseded, as a SET would supersede it.
            state.update_value(&covered, (stamp.next_dot)(), stamp.timestamp_ms, Some(Value::CounterBase(current)));
            state.update_value(
                &Default::default(),
                (stamp.next_dot)(),
                stamp.timestamp_ms,
                Some(Value::Counter(i128::from(by))),
            );
            Ok(total)
        }
        Some(Kind::Counter) => {
            let total = i64::try_from(total(state) + i128::from(by)).map_err(|_| OpError::Overflow)?;
            let own = state
                .versions()
                .iter()
                .filter(|v| v.dot.actor == stamp.actor)
                .filter_map(|v| match v.value {
                    Some(Value::Counter(n)) => Some((v.dot, n)),
                    _ => None,
                })
                .max_by_key(|(dot, _)| *dot)
                .map_or(0, |(_, n)| n);
            let entry = own.checked_add(i128::from(by)).ok_or(OpError::Overflow)?;
            // The actor's previous entry goes (exactly that version), and so do hidden versions of other kinds.
            state.remove_versions(|v| v.dot.actor == stamp.actor && matches!(v.value, Some(Value::Counter(_))));
            drop_other_kinds(state, Kind::Counter);
            state.update_value(
                &Default::default(),
                (stamp.next_dot)(),
                stamp.timestamp_ms,
                Some(Value::Counter(entry)),
            );
            Ok(total)
        }
    }
}

/// Parses a string as Redis parses an integer value: optional `-`, digits, no leading zeros or spaces, within
/// 64 bits.
pub fn parse_integer(s: &str) -> Result<i64, OpError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    if !canonical {
        return Err(OpError::NotAnInteger);
    }
    s.parse().map_err(|_| OpError::NotAnInteger)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioning::{Actor, Dot, VersionVector};
    use bytes::Bytes;
    use proptest::prelude::*;

    const A: Actor = Actor(1);
    const B: Actor = Actor(2);

    /// INCRBY through `actor`, whose dots start at `counter` (two per call at most), at time `counter`.
    fn try_incr(s: &mut Siblings, actor: Actor, counter: u64, by: i64, rule: PlainSiblings) -> Result<i64, OpError> {
        let next = std::cell::Cell::new(counter * 2);
        let next_dot = || {
            next.set(next.get() + 1);
            Dot { actor, counter: next.get() }
        };
        let stamp = Stamp {
            actor,
            next_dot: &next_dot,
            now_ms: counter,
            timestamp_ms: counter,
            siblings: rule,
            may_empty: true,
            read: None,
        };
        increment(s, by, &stamp)
    }

    fn incr(s: &mut Siblings, actor: Actor, counter: u64, by: i64) -> i64 {
        try_incr(s, actor, counter, by, PlainSiblings::Error).unwrap()
    }

    #[test]
    fn increments_through_two_coordinators_add_up() {
        let (mut r1, mut r2) = (Siblings::new(), Siblings::new());
        assert_eq!(incr(&mut r1, A, 1, 5), 5);
        assert_eq!(incr(&mut r1, A, 2, 1), 6);
        assert_eq!(incr(&mut r2, B, 1, -2), -2);
        let mut m = r1.clone();
        m.merge(&r2);
        assert_eq!(total(&m), 4);
        // Each actor keeps one entry, however many increments it coordinated.
        assert_eq!(m.sibling_count(), 2);
        assert_eq!(super::super::fold(&m).newest.as_deref(), Some(&b"4"[..]));
    }

    #[test]
    fn a_string_that_is_an_integer_becomes_a_counter() {
        let mut s = Siblings::new();
        s.update(&VersionVector::new(), Dot { actor: B, counter: 1 }, 1, Some(Bytes::from_static(b"10")));
        assert_eq!(incr(&mut s, A, 1, 1), 11);
        assert_eq!(kind(&s), Some(Kind::Counter));
        assert_eq!(s.sibling_count(), 2, "the string was superseded by a base and an entry");
        let mut t = Siblings::new();
        t.update(&VersionVector::new(), Dot { actor: B, counter: 1 }, 1, Some(Bytes::from_static(b"ten")));
        assert_eq!(try_incr(&mut t, A, 1, 1, PlainSiblings::Error), Err(OpError::NotAnInteger));
    }

    /// Two nodes turn the same integer string into a counter at once: the base counts once.
    #[test]
    fn concurrent_conversions_count_the_string_once() {
        let mut s = Siblings::new();
        s.update(&VersionVector::new(), Dot { actor: B, counter: 1 }, 1, Some(Bytes::from_static(b"10")));
        let (mut r1, mut r2) = (s.clone(), s.clone());
        assert_eq!(incr(&mut r1, A, 2, 1), 11);
        assert_eq!(incr(&mut r2, B, 3, 1), 11);
        r1.merge(&r2);
        assert_eq!(total(&r1), 12);
        assert_eq!(incr(&mut r1, A, 4, 5), 17);
    }

    #[test]
    fn overflow_is_refused() {
        let mut s = Siblings::new();
        incr(&mut s, A, 1, i64::MAX);
        assert_eq!(try_incr(&mut s.clone(), A, 2, 1, PlainSiblings::Error), Err(OpError::Overflow));
        assert_eq!(try_incr(&mut s.clone(), B, 2, 1, PlainSiblings::Error), Err(OpError::Overflow));
        assert!(try_incr(&mut s.clone(), B, 2, -1, PlainSiblings::Error).is_ok());
    }

    #[test]
    fn integers_parse_as_redis_parses_them() {
        for ok in ["0", "-1", "42", "9223372036854775807", "-9223372036854775808"] {
            assert!(parse_integer(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-", "01", "+1", " 1", "1 ", "-0", "9223372036854775808", "1.5", "0x10"] {
            assert!(parse_integer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_delete_removes_only_the_entries_it_saw() {
        let mut r1 = Siblings::new();
        incr(&mut r1, A, 1, 3);
        let mut r2 = r1.clone();
        // r2 deletes what it saw; r1 concurrently increments again.
        let ctx = r2.context().clone();
        r2.update(&ctx, Dot { actor: B, counter: 1 }, 2, None);
        incr(&mut r1, A, 2, 4);
        let mut m = r1.clone();
        m.merge(&r2);
        // A's second entry (total 7) was not seen by the delete, so it survives whole: an observed reset removes
        // entries, not increments, and A's entry carries every increment A coordinated.
        assert_eq!(total(&m), 7);
    }

    /// One step of a random history over three replicas, each also a coordinating actor.
    #[derive(Clone, Debug)]
    enum Op {
        Incr { at: usize, by: i64 },
        Set { at: usize },
        Del { at: usize },
        Sync { from: usize, to: usize },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0usize..3, -5i64..20).prop_map(|(at, by)| Op::Incr { at, by }),
            1 => (0usize..3).prop_map(|at| Op::Set { at }),
            1 => (0usize..3).prop_map(|at| Op::Del { at }),
            4 => (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    fn arb_increment_or_sync() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..3, -5i64..20).prop_map(|(at, by)| Op::Incr { at, by }),
            (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    /// Runs a history; returns the replicas and, when no SET or DEL ran, the sum of every increment.
    fn run(ops: &[Op]) -> (Vec<Siblings>, Option<i128>) {
        let actors = [Actor(11), Actor(22), Actor(33)];
        let mut counters = [0u64; 3];
        let mut replicas = vec![Siblings::new(); 3];
        let mut sum = Some(0i128);
        for (t, op) in ops.iter().enumerate() {
            match *op {
                Op::Incr { at, by } => {
                    let next = std::cell::Cell::new(counters[at]);
                    let next_dot = || {
                        next.set(next.get() + 1);
                        Dot { actor: actors[at], counter: next.get() }
                    };
                    let stamp = Stamp {
                        actor: actors[at],
                        next_dot: &next_dot,
                        now_ms: t as u64,
                        timestamp_ms: t as u64,
                        siblings: PlainSiblings::Newest,
                        may_empty: true,
                        read: None,
                    };
                    increment(&mut replicas[at], by, &stamp).unwrap();
                    counters[at] = next.get();
                    sum = sum.map(|s| s + i128::from(by));
                }
                Op::Set { at } | Op::Del { at } => {
                    counters[at] += 1;
                    let value = matches!(op, Op::Set { .. }).then(|| Bytes::from(format!("{t}")));
                    let ctx = replicas[at].context().clone();
                    replicas[at].update(&ctx, Dot { actor: actors[at], counter: counters[at] }, t as u64, value);
                    sum = None;
                }
                Op::Sync { from, to } => {
                    let s = replicas[from].clone();
                    replicas[to].merge(&s);
                }
            }
        }
        (replicas, sum)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Merge stays a join with counter entries among the versions.
        #[test]
        fn merge_laws(ops in proptest::collection::vec(arb_op(), 0..40)) {
            let (r, _) = run(&ops);
            let mut ab = r[0].clone(); ab.merge(&r[1]);
            let mut ba = r[1].clone(); ba.merge(&r[0]);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(&r[2]);
            let mut bc = r[1].clone(); bc.merge(&r[2]);
            let mut a_bc = r[0].clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = r[0].clone(); aa.merge(&r[0]);
            prop_assert_eq!(&aa, &r[0]);
        }

        /// No increment is lost or counted twice, however the replicas exchanged their states.
        #[test]
        fn every_increment_counts_once(ops in proptest::collection::vec(arb_increment_or_sync(), 0..60)) {
            let (replicas, sum) = run(&ops);
            let mut all = Siblings::new();
            for r in &replicas {
                all.merge(r);
            }
            prop_assert_eq!(Some(total(&all)), sum);
            for r in replicas.iter().chain([&all]) {
                // Each actor has at most one entry on every replica.
                let mut actors: Vec<Actor> = r.versions().iter().map(|v| v.dot.actor).collect();
                actors.dedup();
                prop_assert_eq!(actors.len(), r.sibling_count());
            }
        }

        /// With SETs and DELs among the increments, every replica that merges everything reads the same value, and
        /// that value is the sum of entries no write had covered.
        #[test]
        fn replicas_converge_with_resets(ops in proptest::collection::vec(arb_op(), 0..60)) {
            let (replicas, _) = run(&ops);
            let mut all = Siblings::new();
            for r in &replicas {
                all.merge(r);
            }
            for r in &replicas {
                let mut x = r.clone();
                x.merge(&all);
                prop_assert_eq!(super::super::fold(&x), super::super::fold(&all));
            }
        }
    }
}
