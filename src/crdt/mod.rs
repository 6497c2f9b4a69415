//! Typed keys (L0, pure): what a key's versions mean once the kind of value it holds is known, and the typed
//! writes (increments, set adds and removes) planned on a coordinator's state.
//!
//! Every row of a key is one [`Siblings`] state, whatever it holds, so replication, read repair, hints, handoff and
//! anti-entropy merge every kind with the same join. A string or counter is one row (its key row); a set, hash,
//! sorted set or list is its key row plus a row per element ([`rows`]). The kinds differ in what a write supersedes
//! and in how a read folds the surviving versions:
//!
//! * a **string** key's live versions are siblings (the client sees them all, with a context to resolve them);
//! * a **counter** key's live versions are per-actor entries whose sum is the value ([`counter`]);
//! * a **set**'s members are each a row of versions, one dot each ([`set`], [`rows`]); a **hash**'s fields too
//!   ([`hash`]);
//! * a **sorted set**'s members too ([`zset`]), and a **list**'s items ([`list`]).
//!
//! When writes of two kinds were concurrent, the kind of the key row's newest live version (coordinator clock, ties
//! by dot) decides what the key is: the same answer on every replica holding the same versions. Versions of the
//! other kind stay hidden until a later write supersedes them.

pub mod counter;
pub mod expiry;
pub mod hash;
pub mod list;
pub mod rows;
pub mod set;
pub mod zorder;
pub mod zset;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::PlainSiblings;
use crate::versioning::{Actor, Dot, RowKind, Siblings, Value, Version};

/// The kind of value a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Written by SET: concurrent writes are siblings.
    String,
    /// Written by INCR and its family: concurrent increments add up. A Redis string to clients.
    Counter,
    /// Written by SADD: an add-wins set.
    Set,
    /// Written by HSET: a map of fields, each last-writer-wins (or a counter, by HINCRBY).
    Hash,
    /// Written by LPUSH and RPUSH: items ordered by rank.
    List,
    /// Written by ZADD and ZINCRBY: members with scores.
    ZSet,
}

impl Kind {
    /// The kind of a value.
    pub fn of(value: &Value) -> Kind {
        match value {
            Value::String(_) => Kind::String,
            Value::Counter(_) | Value::CounterBase(_) => Kind::Counter,
            Value::Member(_) => Kind::Set,
            Value::Field { .. } | Value::FieldCounter { .. } | Value::FieldBase { .. } => Kind::Hash,
            Value::Item { .. } => Kind::List,
            Value::Scored { .. } | Value::ScoreBase { .. } | Value::ScoreIncr { .. } => Kind::ZSet,
            Value::Header(RowKind::Set) => Kind::Set,
            Value::Header(RowKind::Hash) => Kind::Hash,
            Value::Header(RowKind::ZSet) => Kind::ZSet,
            Value::Header(RowKind::List) => Kind::List,
        }
    }

    /// The name `TYPE` answers (a counter is a Redis string).
    pub fn redis_type(self) -> &'static str {
        match self {
            Kind::String | Kind::Counter => "string",
            Kind::Set => "set",
            Kind::Hash => "hash",
            Kind::List => "list",
            Kind::ZSet => "zset",
        }
    }
}

/// The kind of value `state` holds, `None` when it holds no live version.
pub fn kind(state: &Siblings) -> Option<Kind> {
    state.newest_live_version().and_then(|v| v.value.as_ref()).map(Kind::of)
}

/// What a read of a key answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// The kind of the key (`None`: no live value).
    pub kind: Option<Kind>,
    /// The values a string read sees: a string key's live siblings, or a counter's sum as its decimal string
    /// (empty for other kinds).
    pub values: Vec<Bytes>,
    /// Of those, the one a plain-mode read answers (the newest sibling, or the counter's value).
    pub newest: Option<Bytes>,
}

/// Folds a key's state into what a read answers.
pub fn fold(state: &Siblings) -> Folded {
    let kind = kind(state);
    match kind {
        None | Some(Kind::Set | Kind::Hash | Kind::List | Kind::ZSet) => Folded { kind, ..Folded::default() },
        Some(Kind::String) => {
            Folded { kind, values: state.live_values().cloned().collect(), newest: state.newest_live().cloned() }
        }
        Some(Kind::Counter) => {
            let value = Bytes::from(counter::total(state).to_string());
            Folded { kind, values: vec![value.clone()], newest: Some(value) }
        }
    }
}

/// A typed write, applied by a coordinator to its replica after merging what a quorum read found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// INCRBY.
    Increment {
        /// The amount (negative for DECRBY).
        by: i64,
    },
    /// SADD.
    SetAdd {
        /// Members to add.
        members: Vec<Bytes>,
    },
    /// SREM.
    SetRemove {
        /// Members to remove.
        members: Vec<Bytes>,
    },
    /// SPOP: remove up to `count` members the coordinator picks at random.
    SetPop {
        /// How many.
        count: usize,
        /// Seed of the coordinator's pick.
        seed: u64,
    },
    /// HSET (and HMSET), or HSETNX with `only_new`.
    HashSet {
        /// (field, value) pairs.
        pairs: Vec<(Bytes, Bytes)>,
        /// Write only fields that do not exist (HSETNX).
        only_new: bool,
    },
    /// HDEL.
    HashDel {
        /// Fields to remove.
        fields: Vec<Bytes>,
    },
    /// HINCRBY.
    HashIncr {
        /// The field.
        field: Bytes,
        /// The amount.
        by: i64,
    },
    /// LPUSH (`head`) or RPUSH.
    ListPush {
        /// Push to the head (LPUSH) or the tail (RPUSH).
        head: bool,
        /// The elements, pushed one after the other.
        values: Vec<Bytes>,
    },
    /// LPOP (`head`) or RPOP.
    ListPop {
        /// Pop from the head (LPOP) or the tail (RPOP).
        head: bool,
        /// How many.
        count: usize,
    },
    /// LREM.
    ListRemove {
        /// How many occurrences, from the head (> 0) or the tail (< 0); 0: all.
        count: i64,
        /// The element.
        value: Bytes,
    },
    /// ZADD.
    ZAdd {
        /// (score as `f64::to_bits`, member) pairs.
        entries: Vec<(u64, Bytes)>,
        /// Its options.
        flags: zset::AddFlags,
    },
    /// ZINCRBY (and ZADD INCR without options).
    ZIncr {
        /// The member.
        member: Bytes,
        /// The increment, as `f64::to_bits`.
        by: u64,
    },
    /// ZREM.
    ZRemove {
        /// Members to remove.
        members: Vec<Bytes>,
    },
    /// ZPOPMIN (or ZPOPMAX with `max`).
    ZPop {
        /// Pop the highest scores.
        max: bool,
        /// How many.
        count: usize,
    },
    /// LTRIM.
    ListTrim {
        /// First index kept (Redis's index rules, negative from the end).
        start: i64,
        /// Last index kept.
        stop: i64,
    },
    /// EXPIRE and its family, PERSIST: any kind of key.
    Expire {
        /// The new deadline, ms since the Unix epoch; `None`: PERSIST.
        at_ms: Option<u64>,
        /// NX, XX, GT or LT.
        condition: expiry::Condition,
    },
}

/// What a typed write answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpReply {
    /// A count or a counter's value.
    Integer(i64),
    /// Members (SPOP), items (LPOP), or members and scores in turn (ZPOPMIN).
    Members(Vec<Bytes>),
    /// One string or nil (a score from ZINCRBY or ZADD INCR).
    Bulk(Option<Bytes>),
}

/// Why a typed write cannot apply; nothing is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The key holds another kind of value (Redis's words).
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// The key holds a string that is not a 64-bit integer (Redis's words).
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    /// A score increment would give NaN (Redis's words).
    #[error("ERR resulting score is not a number (NaN)")]
    NotANumber,
    /// The hash field holds a value that is not a 64-bit integer (Redis's words).
    #[error("ERR hash value is not an integer")]
    FieldNotAnInteger,
    /// The result would not fit a signed 64-bit integer (Redis's words).
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    /// The key holds several concurrent strings and the node refuses to pick one (`plain_siblings = "error"`).
    #[error(
        "SIBLINGS the key has {count} concurrent values: resolve them with GET and SET ... CONTEXT before \
         incrementing it"
    )]
    Siblings {
        /// How many.
        count: usize,
    },
}

/// Where an operation's fresh dots and time come from.
#[derive(Clone, Copy)]
pub struct Stamp<'a> {
    /// The coordinating actor.
    pub actor: Actor,
    /// Issues a fresh dot of `actor`.
    pub next_dot: &'a dyn Fn() -> Dot,
    /// The coordinator's clock, ms since the Unix epoch: what has expired.
    pub now_ms: u64,
    /// The timestamp of the versions and deadlines the write sets, which orders last-writer-wins fields, scores
    /// and deadlines: [`apply`] raises it past every timestamp the key holds (see
    /// [`Siblings::causal_timestamp`]), so a write orders after what it read even when its coordinator's clock is
    /// behind the one that wrote it.
    pub timestamp_ms: u64,
    /// Which of several concurrent strings an INCR counts from.
    pub siblings: PlainSiblings,
    /// Whether a remove that empties a collection takes the key away (`crdt::rows`): only where the rows the write
    /// reads are all the key has (a single replica, N = 1). Elsewhere an emptied collection keeps its header and
    /// reads as absent, since a remove cannot know that no replica holds an element its read did not show.
    pub may_empty: bool,
    /// What the write's quorum read found of the key's rows (`None`: the rows given are all there is). A remove that
    /// empties the collection does so only if that read showed no other live element, and then supersedes and clears
    /// only what the read's key row saw: a write that reached the replica between the read and the apply survives.
    pub read: Option<&'a rows::Rows>,
}

/// Applies any typed write to `rows`, the rows of its key the coordinator holds merged with what its quorum read
/// found: the key row, and the element rows it reads ([`Op::rows_read`]). Returns the reply and whether
/// a row changed. On an error the rows are unchanged.
pub fn apply_to_rows(rows: &mut rows::Rows, op: &Op, stamp: &Stamp) -> Result<(OpReply, bool), OpError> {
    if op.row_kind().is_some() {
        return rows::apply(rows, op, stamp);
    }
    let before = rows.key_row().cloned();
    let mut key_row = before.clone().unwrap_or_default();
    let reply = apply(&mut key_row, op, stamp)?;
    // A write that found nothing and did nothing (EXPIRE of a missing key) leaves no row behind.
    let changed = match &before {
        Some(b) => *b != key_row,
        None => !key_row.versions().is_empty() || !key_row.context().is_empty(),
    };
    if changed {
        *rows.entry(&[]) = key_row;
    }
    Ok((reply, changed))
}

/// Applies `op`, a write of the key row alone (not [`Op::row_kind`]), to `state` (the coordinator's replica, already
/// merged with its quorum read). On an error the state is unchanged.
pub fn apply(state: &mut Siblings, op: &Op, stamp: &Stamp) -> Result<OpReply, OpError> {
    let had_header = rows::has_header(state);
    let stamp = &Stamp { timestamp_ms: state.causal_timestamp(stamp.timestamp_ms), ..*stamp };
    if !state.versions().iter().any(|v| v.is_expired(stamp.now_ms)) {
        let reply = apply_unexpired(state, op, stamp)?;
        rows::settle(state, had_header);
        return Ok(reply);
    }
    // Expired values are gone before the write looks at the key; an error leaves the state as it was.
    let mut next = state.clone();
    expiry::drop_expired(&mut next, stamp);
    let reply = apply_unexpired(&mut next, op, stamp)?;
    rows::settle(&mut next, had_header);
    *state = next;
    Ok(reply)
}

/// [`apply`] on a state without expired values.
fn apply_unexpired(state: &mut Siblings, op: &Op, stamp: &Stamp) -> Result<OpReply, OpError> {
    if let Op::Expire { at_ms, condition } = op {
        return expiry::expire(state, *at_ms, *condition, stamp).map(OpReply::Integer);
    }
    let deadline = state.deadline(stamp.now_ms).flatten();
    let issued = state.context().get(stamp.actor);
    let reply = apply_op(state, op, stamp)?;
    expiry::inherit(state, deadline, issued, stamp);
    Ok(reply)
}

fn apply_op(state: &mut Siblings, op: &Op, stamp: &Stamp) -> Result<OpReply, OpError> {
    match op {
        Op::Increment { by } => counter::increment(state, *by, stamp).map(OpReply::Integer),
        Op::SetAdd { .. }
        | Op::SetRemove { .. }
        | Op::SetPop { .. }
        | Op::HashSet { .. }
        | Op::HashDel { .. }
        | Op::HashIncr { .. }
        | Op::ZAdd { .. }
        | Op::ZIncr { .. }
        | Op::ZRemove { .. }
        | Op::ZPop { .. }
        | Op::ListPush { .. }
        | Op::ListPop { .. }
        | Op::ListRemove { .. }
        | Op::ListTrim { .. } => unreachable!("a write of elements kept as rows: crdt::rows::apply"),
        Op::Expire { .. } => unreachable!("handled by apply_unexpired"),
    }
}

/// Refuses a key that holds a live value of another kind than `want` (Redis's WRONGTYPE).
fn check_kind(state: &Siblings, want: Kind) -> Result<(), OpError> {
    match kind(state) {
        Some(k) if k != want => Err(OpError::WrongType),
        _ => Ok(()),
    }
}

/// Drops what a write to a collection of kind `want` supersedes besides its own elements: tombstones, and hidden
/// values of another kind (a concurrent write of another type that lost to the collection).
fn drop_other_kinds(state: &mut Siblings, want: Kind) {
    state.remove_versions(|v| v.value.as_ref().is_none_or(|x| Kind::of(x) != want));
}

/// Adds one tombstone dating a removal from a collection (after dropping older tombstones), so that an emptied
/// collection is reaped like a deleted key once its grace period is over.
fn date_removal(state: &mut Siblings, stamp: &Stamp) {
    state.remove_versions(Version::is_tombstone);
    state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, None);
}

/// Runs `f` with the stamp of a coordinator of `actor` whose clock reads `now_ms`, issuing dots from `counter`
/// (tests).
#[cfg(test)]
fn stamped<T>(actor: u64, counter: &std::cell::Cell<u64>, now_ms: u64, f: impl FnOnce(&Stamp) -> T) -> T {
    let next = || {
        counter.set(counter.get() + 1);
        Dot { actor: Actor(actor), counter: counter.get() }
    };
    f(&Stamp {
        actor: Actor(actor),
        next_dot: &next,
        now_ms,
        timestamp_ms: now_ms,
        siblings: PlainSiblings::Error,
        may_empty: true,
        read: None,
    })
}

/// [`apply_to_rows`] as a coordinator of `actor` whose clock reads `now_ms`, issuing dots from `counter` (tests).
#[cfg(test)]
pub(crate) fn apply_rows_as(
    rows: &mut rows::Rows,
    actor: u64,
    counter: &std::cell::Cell<u64>,
    now_ms: u64,
    op: &Op,
) -> Result<OpReply, OpError> {
    stamped(actor, counter, now_ms, |stamp| apply_to_rows(rows, op, stamp).map(|(reply, _)| reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;

    /// One step of a random history over three replicas: a typed write of any kind on one, or a state sent from
    /// one to another (replication, read repair, hints, handoff and anti-entropy all send states).
    #[derive(Clone, Debug)]
    enum Step {
        Write { at: usize, op: Op },
        Sync { from: usize, to: usize },
    }

    fn b(i: u8) -> Bytes {
        Bytes::from(format!("e{i}"))
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let e = 0u8..4;
        prop_oneof![
            (-3i64..5).prop_map(|by| Op::Increment { by }),
            e.clone().prop_map(|m| Op::SetAdd { members: vec![b(m)] }),
            e.clone().prop_map(|m| Op::SetRemove { members: vec![b(m)] }),
            (e.clone(), 0u8..3).prop_map(|(f, v)| Op::HashSet { pairs: vec![(b(f), b(v))], only_new: false }),
            e.clone().prop_map(|f| Op::HashDel { fields: vec![b(f)] }),
            (e.clone(), -2i64..4).prop_map(|(f, by)| Op::HashIncr { field: b(f), by }),
            (any::<bool>(), e.clone()).prop_map(|(head, v)| Op::ListPush { head, values: vec![b(v)] }),
            (any::<bool>(), 1usize..3).prop_map(|(head, count)| Op::ListPop { head, count }),
            (e.clone(), 0u8..4).prop_map(|(m, s)| Op::ZAdd {
                entries: vec![(f64::from(s).to_bits(), b(m))],
                flags: zset::AddFlags::default()
            }),
            (e.clone(), 0u8..3).prop_map(|(m, by)| Op::ZIncr { member: b(m), by: (f64::from(by) / 2.0).to_bits() }),
            e.clone().prop_map(|m| Op::ZRemove { members: vec![b(m)] }),
            (any::<bool>(), 1usize..3).prop_map(|(max, count)| Op::ZPop { max, count }),
            (1usize..3, any::<u64>()).prop_map(|(count, seed)| Op::SetPop { count, seed }),
            (proptest::option::of(0u64..80), 0u8..5).prop_map(|(at_ms, c)| Op::Expire {
                at_ms,
                condition: [
                    expiry::Condition::Always,
                    expiry::Condition::Nx,
                    expiry::Condition::Xx,
                    expiry::Condition::Gt,
                    expiry::Condition::Lt
                ][c as usize],
            }),
        ]
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0usize..3, arb_op()).prop_map(|(at, op)| Step::Write { at, op }),
            2 => (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Sync { from, to }),
        ]
    }

    fn run(steps: &[Step]) -> Vec<rows::Rows> {
        let mut replicas = vec![rows::Rows::new(); 3];
        let counters = [Cell::new(0u64), Cell::new(0), Cell::new(0)];
        for (t, step) in steps.iter().enumerate() {
            match step {
                Step::Write { at, op } => {
                    let actor = Actor(*at as u64 + 1);
                    let counter = &counters[*at];
                    let next = || {
                        counter.set(counter.get() + 1);
                        Dot { actor, counter: counter.get() }
                    };
                    let stamp = Stamp {
                        actor,
                        next_dot: &next,
                        now_ms: t as u64,
                        timestamp_ms: t as u64,
                        siblings: PlainSiblings::Newest,
                        may_empty: true,
                        read: None,
                    };
                    // A refused write (WRONGTYPE, overflow) leaves the rows as they were; one that changed nothing
                    // says so.
                    let before = replicas[*at].clone();
                    match apply_to_rows(&mut replicas[*at], op, &stamp) {
                        Err(_) => assert_eq!(replicas[*at], before, "a refused write changed the rows"),
                        Ok((_, false)) => assert_eq!(replicas[*at], before, "a write that changed nothing did"),
                        Ok((_, true)) => {}
                    }
                }
                Step::Sync { from, to } => {
                    let s = replicas[*from].clone();
                    replicas[*to].merge(&s);
                }
            }
        }
        replicas
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(384))]

        /// Whatever kinds of writes a key saw, the join stays commutative, associative and idempotent, and every
        /// replica that merges everything reads the same: one kind, and the same value of it.
        #[test]
        fn every_kind_merges_as_a_join_and_converges(steps in proptest::collection::vec(arb_step(), 0..60)) {
            let r = run(&steps);
            let mut ab = r[0].clone(); ab.merge(&r[1]);
            let mut ba = r[1].clone(); ba.merge(&r[0]);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(&r[2]);
            let mut bc = r[1].clone(); bc.merge(&r[2]);
            let mut a_bc = r[0].clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = r[0].clone(); aa.merge(&r[0]);
            prop_assert_eq!(&aa, &r[0]);
            let view = |rows: &rows::Rows| {
                // As a read at time 40 shows it.
                let mut key_row = rows.key_row().cloned().unwrap_or_default();
                key_row.drop_expired(40);
                let s = &key_row;
                (rows::kind_of(rows, 40), fold(s), rows::members(rows, 40), rows::fields(rows, 40), rows::items(rows, 40),
                    rows::scored(rows, 40).into_iter().map(|(m, x)| (m, x.to_bits())).collect::<Vec<_>>())
            };
            for replica in &r {
                let mut x = replica.clone();
                x.merge(&ab_c);
                prop_assert_eq!(view(&x), view(&ab_c));
            }
        }
    }

    /// Applies `op` on `rows` as a coordinator of `actor` whose clock reads `clock_ms`.
    fn write_at(rows: &mut rows::Rows, actor: u64, clock_ms: u64, op: Op) -> OpReply {
        let issued = rows.rows().iter().map(|(_, s)| s.context().get(Actor(actor))).max().unwrap_or(0);
        let counter = Cell::new(issued);
        apply_rows_as(rows, actor, &counter, clock_ms, &op).unwrap()
    }

    /// A write that read the key orders after everything it read, though its coordinator's clock is 2 s behind
    /// the previous writer's. For a deadline, which `EXPIRE` and `PERSIST` change in place (a register per
    /// version), this decides what the replicas keep: a `PERSIST` that read an `EXPIRE` must win over it on every
    /// replica, also on one that still holds the `EXPIRE` when they merge.
    #[test]
    fn a_write_orders_after_what_it_read_whatever_its_coordinators_clock_says() {
        let mut s = rows::Rows::new();
        write_at(&mut s, 1, 12_000, Op::HashSet { pairs: vec![(b_("f"), b_("v"))], only_new: false });
        write_at(&mut s, 1, 12_000, Op::Expire { at_ms: Some(50_000), condition: expiry::Condition::Always });
        let replica_with_the_expire = s.clone();
        let persist = Op::Expire { at_ms: None, condition: expiry::Condition::Always };
        assert_eq!(write_at(&mut s, 2, 10_000, persist), OpReply::Integer(1));
        let mut merged = replica_with_the_expire.clone();
        merged.merge(&s);
        let deadline = |rows: &rows::Rows| rows.key_row().unwrap().deadline(10_000);
        assert_eq!(deadline(&merged), Some(None), "the PERSIST wins on the replica that held the EXPIRE");
        let mut other_way = s.clone();
        other_way.merge(&replica_with_the_expire);
        assert_eq!(other_way, merged);
        // A field written by the slow coordinator after reading the key dates after everything it read, by 1 ms
        // (these clocks stand still, so each of the four writes after the first is 1 ms later than the one before).
        write_at(&mut s, 2, 10_000, Op::HashSet { pairs: vec![(b_("g"), b_("w"))], only_new: false });
        let newest = s.rows().iter().flat_map(|(_, s)| s.versions()).map(|v| v.timestamp_ms).max();
        assert_eq!(newest, Some(12_003));
    }

    fn b_(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }
}
