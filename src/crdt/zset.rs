//! Sorted sets: ZADD (with NX, XX, GT, LT, CH, INCR), ZINCRBY, ZREM and ZPOPMIN/ZPOPMAX, over members whose
//! scores resolve as hash fields do (Redis Active-Active's sorted sets).
//!
//! Each member is a group of versions of the key: `Value::Scored` for a score ZADD gave it, or, once ZINCRBY has
//! incremented it, a `Value::ScoreBase` (the score it had) and one `Value::ScoreIncr` per actor (its running total
//! of increments). So:
//!
//! * ZADD stamps the member's new score with a fresh dot and drops the member's versions it holds (exactly those);
//!   two concurrent ZADDs of one member resolve to the one written last (coordinator clock, ties by dot);
//! * concurrent ZINCRBYs of a member all count (its score is the newest base plus the entries, summed in dot
//!   order, so every replica computes the same float);
//! * ZREM and the pops drop the member versions their read saw; a member added concurrently (unseen) survives.
//!   Two clients popping at once through different nodes may both get the same member.
//!
//! Members are ordered by score, then by member bytes, as in Redis.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Kind, OpError, OpReply, Stamp, check_kind, date_removal, drop_other_kinds, kind};
use crate::versioning::{Siblings, Value, Version};

/// ZADD's options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddFlags {
    /// Only add new members.
    pub nx: bool,
    /// Only update existing members.
    pub xx: bool,
    /// Update only to a greater score.
    pub gt: bool,
    /// Update only to a lower score.
    pub lt: bool,
    /// Answer how many changed (added or updated) instead of how many were added.
    pub ch: bool,
    /// Increment the one member's score instead (answers the new score, or nil when a condition stopped it).
    pub incr: bool,
}

fn member_of(v: &Version) -> Option<&Bytes> {
    match &v.value {
        Some(Value::Scored { member, .. } | Value::ScoreBase { member, .. } | Value::ScoreIncr { member, .. }) => {
            Some(member)
        }
        _ => None,
    }
}

/// A member's score from its versions: the newest decides whether it was set (its score) or incremented (the
/// newest base plus the entries in dot order).
fn resolve(versions: &[&Version]) -> Option<f64> {
    let newest = versions.iter().max_by_key(|v| (v.timestamp_ms, v.dot))?;
    match &newest.value {
        Some(Value::Scored { score, .. }) => Some(f64::from_bits(*score)),
        Some(Value::ScoreBase { .. } | Value::ScoreIncr { .. }) => Some(counted(versions)),
        _ => None,
    }
}

fn counted(versions: &[&Version]) -> f64 {
    let base = versions
        .iter()
        .filter_map(|v| match v.value {
            Some(Value::ScoreBase { base, .. }) => Some(((v.timestamp_ms, v.dot), f64::from_bits(base))),
            _ => None,
        })
        .max_by_key(|(at, _)| *at)
        .map_or(0.0, |(_, b)| b);
    let mut entries: Vec<&&Version> =
        versions.iter().filter(|v| matches!(v.value, Some(Value::ScoreIncr { .. }))).collect();
    entries.sort_by_key(|v| v.dot);
    entries.iter().fold(base, |sum, v| match v.value {
        Some(Value::ScoreIncr { total, .. }) => sum + f64::from_bits(total),
        _ => sum,
    })
}

fn groups(state: &Siblings) -> BTreeMap<&Bytes, Vec<&Version>> {
    let mut groups: BTreeMap<&Bytes, Vec<&Version>> = BTreeMap::new();
    for v in state.versions() {
        if let Some(m) = member_of(v) {
            groups.entry(m).or_default().push(v);
        }
    }
    groups
}

/// Every member with its score, ordered by score, then member (none for a key of another kind).
pub fn members(state: &Siblings) -> Vec<(Bytes, f64)> {
    if kind(state) != Some(Kind::ZSet) {
        return Vec::new();
    }
    let mut all: Vec<(Bytes, f64)> =
        groups(state).into_iter().filter_map(|(m, vs)| Some((m.clone(), resolve(&vs)?))).collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    all
}

/// One member's score.
pub fn score(state: &Siblings, member: &Bytes) -> Option<f64> {
    if kind(state) != Some(Kind::ZSet) {
        return None;
    }
    let versions: Vec<&Version> = state.versions().iter().filter(|v| member_of(v) == Some(member)).collect();
    resolve(&versions)
}

/// A score as Redis prints it: the shortest decimal that reads back the same, in `%.17g`'s style (`1.5`, `10`,
/// `1e+21`, `inf`).
pub fn format(x: f64) -> Bytes {
    if x.is_nan() {
        // Only concurrent increments of +inf and -inf through different nodes make one.
        return Bytes::from_static(b"nan");
    }
    if x.is_infinite() {
        return Bytes::from_static(if x > 0.0 { b"inf" } else { b"-inf" });
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    Bytes::from(if !(-4..17).contains(&exp) {
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        format!("{x}")
    })
}

/// Parses a score as Redis does (decimal or exponent notation, `inf`, `+inf`, `-inf`), refusing NaN.
pub fn parse_score(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let x: f64 = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        lower if lower.contains("inf") || lower.contains("nan") => return None,
        _ => s.parse().ok()?,
    };
    (!x.is_nan()).then_some(x)
}

/// Replaces every version of `member` with one score set by ZADD.
fn set_score(state: &mut Siblings, member: &Bytes, score: f64, stamp: &Stamp) {
    state.remove_versions(|v| member_of(v) == Some(member));
    let value = Value::Scored { member: member.clone(), score: score.to_bits() };
    state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, Some(value));
}

/// ZADD: adds or updates members as the flags allow. Answers how many were added (or changed, with CH), or with
/// INCR the member's new score (nil when a condition stopped it).
pub fn add(state: &mut Siblings, entries: &[(u64, Bytes)], flags: AddFlags, stamp: &Stamp) -> Result<OpReply, OpError> {
    check_kind(state, Kind::ZSet)?;
    if flags.incr {
        let (by, member) = &entries[0];
        let current = score(state, member);
        let next = current.unwrap_or(0.0) + f64::from_bits(*by);
        let allowed = !(flags.nx && current.is_some() || flags.xx && current.is_none())
            && current.is_none_or(|c| !(flags.gt && next <= c || flags.lt && next >= c));
        if !allowed {
            return Ok(OpReply::Bulk(None));
        }
        return increment(state, member, f64::from_bits(*by), stamp).map(|s| OpReply::Bulk(Some(format(s))));
    }
    // The last score given for a member counts, as in Redis.
    let wanted: BTreeMap<&Bytes, f64> = entries.iter().map(|(s, m)| (m, f64::from_bits(*s))).collect();
    let (mut added, mut changed) = (0, 0);
    let mut writes = Vec::new();
    for (member, new) in wanted {
        let current = score(state, member);
        let write = match current {
            None => !flags.xx,
            Some(c) => !(flags.nx || c == new || flags.gt && new <= c || flags.lt && new >= c),
        };
        if write {
            added += i64::from(current.is_none());
            changed += 1;
            writes.push((member.clone(), new));
        }
    }
    if !writes.is_empty() {
        drop_other_kinds(state, Kind::ZSet);
    }
    for (member, new) in writes {
        set_score(state, &member, new, stamp);
    }
    Ok(OpReply::Integer(if flags.ch { changed } else { added }))
}

/// ZINCRBY: adds `by` to the member's score (a new member starts from 0). Returns the new score.
pub fn increment(state: &mut Siblings, member: &Bytes, by: f64, stamp: &Stamp) -> Result<f64, OpError> {
    check_kind(state, Kind::ZSet)?;
    let versions: Vec<Version> = state.versions().iter().filter(|v| member_of(v) == Some(member)).cloned().collect();
    let refs: Vec<&Version> = versions.iter().collect();
    let newest = refs.iter().max_by_key(|v| (v.timestamp_ms, v.dot)).and_then(|v| v.value.as_ref());
    let counting = matches!(newest, Some(Value::ScoreBase { .. } | Value::ScoreIncr { .. }));
    let base = match newest {
        Some(Value::Scored { score, .. }) => Some(f64::from_bits(*score)),
        _ => None,
    };
    let current = if counting { counted(&refs) } else { base.unwrap_or(0.0) };
    let next = current + by;
    if next.is_nan() {
        return Err(OpError::NotANumber);
    }
    let own = refs
        .iter()
        .filter(|v| counting && v.dot.actor == stamp.actor)
        .filter_map(|v| match v.value {
            Some(Value::ScoreIncr { total, .. }) => Some((v.dot, f64::from_bits(total))),
            _ => None,
        })
        .max_by_key(|(dot, _)| *dot)
        .map_or(0.0, |(_, t)| t);
    drop_other_kinds(state, Kind::ZSet);
    state.remove_versions(|v| {
        member_of(v) == Some(member)
            && (!counting
                || (v.dot.actor == stamp.actor && matches!(v.value, Some(Value::ScoreIncr { .. })))
                || matches!(v.value, Some(Value::Scored { .. })))
    });
    if let Some(base) = base {
        let value = Value::ScoreBase { member: member.clone(), base: base.to_bits() };
        state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, Some(value));
    }
    let value = Value::ScoreIncr { member: member.clone(), total: (own + by).to_bits() };
    state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, Some(value));
    Ok(score(state, member).unwrap_or(next))
}

/// Drops every version of the members and dates the removal.
fn drop_members(state: &mut Siblings, members: &BTreeSet<&Bytes>, stamp: &Stamp) {
    state.remove_versions(|v| member_of(v).is_some_and(|m| members.contains(m)));
    date_removal(state, stamp);
}

/// ZREM: removes the members' versions this state holds. Returns how many were members.
pub fn remove(state: &mut Siblings, remove: &[Bytes], stamp: &Stamp) -> Result<i64, OpError> {
    check_kind(state, Kind::ZSet)?;
    let present: BTreeSet<Bytes> = members(state).into_iter().map(|(m, _)| m).collect();
    let wanted: BTreeSet<&Bytes> = remove.iter().filter(|m| present.contains(*m)).collect();
    if !wanted.is_empty() {
        drop_members(state, &wanted, stamp);
    }
    Ok(wanted.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::Op;
    use crate::crdt::rows::{self, Rows};
    use std::cell::Cell;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn run(state: &mut Rows, actor: u64, counter: &Cell<u64>, op: Op) -> Result<OpReply, OpError> {
        crate::crdt::apply_rows_as(state, actor, counter, counter.get(), &op)
    }

    fn members(state: &Rows) -> Vec<(Bytes, f64)> {
        rows::scored(state, 0)
    }

    fn score(state: &Rows, member: &Bytes) -> Option<f64> {
        members(state).into_iter().find(|(m, _)| m == member).map(|(_, s)| s)
    }

    fn zadd(entries: &[(f64, &str)], flags: AddFlags) -> Op {
        Op::ZAdd { entries: entries.iter().map(|(s, m)| (s.to_bits(), b(m))).collect(), flags }
    }

    #[test]
    fn scores_and_flags_answer_as_redis_does() {
        let (mut s, c) = (Rows::new(), Cell::new(0));
        let none = AddFlags::default();
        assert_eq!(run(&mut s, 1, &c, zadd(&[(1.0, "a"), (2.0, "b"), (3.0, "a")], none)), Ok(OpReply::Integer(2)));
        assert_eq!(members(&s), vec![(b("b"), 2.0), (b("a"), 3.0)]);
        let ch = AddFlags { ch: true, ..none };
        assert_eq!(run(&mut s, 1, &c, zadd(&[(3.0, "a"), (5.0, "b"), (0.5, "c")], ch)), Ok(OpReply::Integer(2)));
        let gt = AddFlags { gt: true, ch: true, ..none };
        assert_eq!(run(&mut s, 1, &c, zadd(&[(1.0, "a"), (9.0, "b")], gt)), Ok(OpReply::Integer(1)));
        let xx = AddFlags { xx: true, ..none };
        assert_eq!(run(&mut s, 1, &c, zadd(&[(1.0, "new")], xx)), Ok(OpReply::Integer(0)));
        let nx = AddFlags { nx: true, ..none };
        assert_eq!(run(&mut s, 1, &c, zadd(&[(7.0, "a"), (4.0, "d")], nx)), Ok(OpReply::Integer(1)));
        assert_eq!(score(&s, &b("a")), Some(3.0));
        let incr = AddFlags { incr: true, ..none };
        assert_eq!(run(&mut s, 1, &c, zadd(&[(1.5, "a")], incr)), Ok(OpReply::Bulk(Some(b("4.5")))));
        let incr_nx = AddFlags { incr: true, nx: true, ..none };
        assert_eq!(run(&mut s, 1, &c, zadd(&[(1.0, "a")], incr_nx)), Ok(OpReply::Bulk(None)));
        let zincr = Op::ZIncr { member: b("a"), by: f64::INFINITY.to_bits() };
        assert_eq!(run(&mut s, 1, &c, zincr), Ok(OpReply::Bulk(Some(b("inf")))));
        let nan = Op::ZIncr { member: b("a"), by: f64::NEG_INFINITY.to_bits() };
        assert_eq!(run(&mut s, 1, &c, nan), Err(OpError::NotANumber));
        assert_eq!(run(&mut s, 1, &c, Op::ZRemove { members: vec![b("c"), b("zz")] }), Ok(OpReply::Integer(1)));
        let popped = run(&mut s, 1, &c, Op::ZPop { max: false, count: 1 });
        assert_eq!(popped, Ok(OpReply::Members(vec![b("d"), b("4")])));
        let popped = run(&mut s, 1, &c, Op::ZPop { max: true, count: 5 });
        assert_eq!(popped, Ok(OpReply::Members(vec![b("a"), b("inf"), b("b"), b("9")])));
        assert_eq!(rows::kind_of(&s, 0), None);
    }

    #[test]
    fn concurrent_increments_all_count_and_scores_print_as_in_redis() {
        let (mut r1, mut r2) = (Rows::new(), Rows::new());
        let (c1, c2) = (Cell::new(0), Cell::new(0));
        run(&mut r1, 1, &c1, zadd(&[(10.0, "m")], AddFlags::default())).unwrap();
        r2.merge(&r1);
        run(&mut r1, 1, &c1, Op::ZIncr { member: b("m"), by: 0.5f64.to_bits() }).unwrap();
        run(&mut r2, 2, &c2, Op::ZIncr { member: b("m"), by: 2.0f64.to_bits() }).unwrap();
        let mut m = r1.clone();
        m.merge(&r2);
        assert_eq!(score(&m, &b("m")), Some(12.5));
        for (x, text) in [(1.5, "1.5"), (10.0, "10"), (1e21, "1e+21"), (-0.25, "-0.25"), (1e-5, "1e-05")] {
            assert_eq!(format(x), b(text), "{x}");
        }
        assert_eq!(parse_score(b"+inf"), Some(f64::INFINITY));
        assert_eq!(parse_score(b"1e3"), Some(1000.0));
        assert_eq!(parse_score(b"nan"), None);
        assert_eq!(parse_score(b" 1"), None);
    }
}
