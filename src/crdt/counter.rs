//! Counters: INCR and its family as a PN-counter whose per-actor slots are dotted versions.
//!
//! A counter key holds one [`Value::Counter`] entry per actor that ever coordinated an increment of it: that
//! actor's running total. An increment coordinated by actor A replaces A's own entry (its context covers only
//! that entry's dot) with the old total plus the increment, under a fresh dot. So:
//!
//! * replication is idempotent: a replica merges entries by dot, and the newer entry of an actor supersedes the
//!   older one everywhere (its dot covers it), so no increment is counted twice, and none is lost, since every
//!   entry carries its actor's whole history;
//! * increments coordinated by different actors never cover each other's entries, so concurrent increments all
//!   count (the value is the sum of the entries);
//! * a DEL, or a SET, covers the entries its coordinator had seen, and only those: an increment it had not seen
//!   survives it (Riak's reset-remove counter, Redis Active-Active's "observed reset").
//!
//! Metadata is one entry per actor (a node and its epoch) that incremented the key, however many increments.

use super::{Kind, OpError, kind};
use crate::config::PlainSiblings;
use crate::versioning::{Actor, Dot, Siblings, Value, VersionVector};

/// An increment planned on the coordinator's state: what it covers and the entry it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Increment {
    /// The versions the new entry supersedes: the actor's previous entry, and versions of another kind.
    pub covered: VersionVector,
    /// The actor's new running total.
    pub entry: i64,
    /// The counter's value after the increment, as the coordinator knows it (the reply to INCR).
    pub total: i64,
}

/// The counter's value: the sum of its live entries (a key of another kind, or none, sums to 0).
pub fn total(state: &Siblings) -> i128 {
    entries(state).map(|(_, n)| i128::from(n)).sum()
}

/// The live counter entries of a state: (dot, running total).
fn entries(state: &Siblings) -> impl Iterator<Item = (Dot, i64)> + '_ {
    state.versions().iter().filter_map(|v| match v.value {
        Some(Value::Counter(n)) => Some((v.dot, n)),
        _ => None,
    })
}

/// Plans an increment of `state` by `by`, coordinated by `actor`. A key that holds a string counts from its
/// value when that is an integer, as Redis does; `siblings` says which of several concurrent strings counts.
pub fn plan(state: &Siblings, actor: Actor, by: i64, siblings: PlainSiblings) -> Result<Increment, OpError> {
    match kind(state) {
        Some(Kind::Set | Kind::Hash | Kind::List) => Err(OpError::WrongType),
        None => Ok(Increment { covered: state.context().clone(), entry: by, total: by }),
        Some(Kind::String) => {
            let count = state.live_values().count();
            if count > 1 && siblings == PlainSiblings::Error {
                return Err(OpError::Siblings { count });
            }
            let current = match state.newest_live() {
                Some(b) => parse_integer(std::str::from_utf8(b).map_err(|_| OpError::NotAnInteger)?)?,
                None => 0,
            };
            let total = current.checked_add(by).ok_or(OpError::Overflow)?;
            // The string becomes a counter: everything read is superseded, as a SET would supersede it.
            Ok(Increment { covered: state.context().clone(), entry: total, total })
        }
        Some(Kind::Counter) => {
            let sum = total(state);
            let total = i64::try_from(sum + i128::from(by)).map_err(|_| OpError::Overflow)?;
            let own = entries(state).filter(|(d, _)| d.actor == actor).max_by_key(|(d, _)| d.counter);
            let entry = own.map_or(0, |(_, n)| n).checked_add(by).ok_or(OpError::Overflow)?;
            let mut covered = VersionVector::new();
            if let Some((dot, _)) = own {
                covered.advance(actor, dot.counter, 0);
            }
            // Hidden versions of another kind go too, unless covering one would also cover a live entry of its
            // actor (a vector covers every earlier dot of an actor): then it waits for a later write.
            let counted: Vec<Dot> = entries(state).map(|(d, _)| d).collect();
            for v in state.versions().iter().filter(|v| v.value.as_ref().is_some_and(|x| Kind::of(x) != Kind::Counter))
            {
                let spares_entries =
                    counted.iter().all(|d| d.actor != v.dot.actor || d.counter > v.dot.counter || d.actor == actor);
                if spares_entries && covered.get(v.dot.actor) < v.dot.counter {
                    covered.advance(v.dot.actor, v.dot.counter, 0);
                }
            }
            Ok(Increment { covered, entry, total })
        }
    }
}

/// Applies a planned increment under `dot` (fresh from `actor`).
pub fn apply(state: &mut Siblings, plan: &Increment, dot: Dot, timestamp_ms: u64) {
    state.update_value(&plan.covered, dot, timestamp_ms, Some(Value::Counter(plan.entry)));
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
    use bytes::Bytes;
    use proptest::prelude::*;

    const A: Actor = Actor(1);
    const B: Actor = Actor(2);

    fn incr(s: &mut Siblings, actor: Actor, counter: u64, by: i64) -> i64 {
        let p = plan(s, actor, by, PlainSiblings::Error).unwrap();
        apply(s, &p, Dot { actor, counter }, counter);
        p.total
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
        assert_eq!(s.sibling_count(), 1, "the string was superseded");
        let mut t = Siblings::new();
        t.update(&VersionVector::new(), Dot { actor: B, counter: 1 }, 1, Some(Bytes::from_static(b"ten")));
        assert_eq!(plan(&t, A, 1, PlainSiblings::Error), Err(OpError::NotAnInteger));
    }

    #[test]
    fn overflow_is_refused() {
        let mut s = Siblings::new();
        incr(&mut s, A, 1, i64::MAX);
        assert_eq!(plan(&s, A, 1, PlainSiblings::Error), Err(OpError::Overflow));
        assert_eq!(plan(&s, B, 1, PlainSiblings::Error), Err(OpError::Overflow));
        assert!(plan(&s, B, -1, PlainSiblings::Error).is_ok());
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
                    counters[at] += 1;
                    let p = plan(&replicas[at], actors[at], by, PlainSiblings::Newest).unwrap();
                    apply(&mut replicas[at], &p, Dot { actor: actors[at], counter: counters[at] }, t as u64);
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
