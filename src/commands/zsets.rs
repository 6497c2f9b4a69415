//! Sorted sets: ZADD, ZINCRBY, ZREM, ZPOPMIN, ZPOPMAX (typed writes, see [`crate::crdt::zset`]) and ZSCORE,
//! ZMSCORE, ZCOUNT, ZRANK, ZREVRANK, ZRANGE, ZRANGEBYSCORE, ZREVRANGE, ZREVRANGEBYSCORE (quorum reads of the merged
//! set), with Redis's replies. ZCARD is a count (`commands::card`).

use bytes::Bytes;

use super::{NodeContext, check_key, coord_error, integer_reply, parse_int, pop_count, read_collection, syntax_error};
use crate::coordinator::now_ms;
use crate::crdt::rows;
use crate::crdt::zset::{self, AddFlags};
use crate::crdt::{Op, OpReply};
use crate::resp::Reply;
use crate::versioning::RowKind;

fn not_a_float() -> Reply {
    Reply::error("ERR value is not a valid float")
}

/// ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...].
pub async fn zadd(node: &NodeContext, args: &[Bytes]) -> Reply {
    let key = &args[1];
    if let Err(r) = check_key(node, key) {
        return r;
    }
    let mut flags = AddFlags::default();
    let mut i = 2;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"NX" => flags.nx = true,
            b"XX" => flags.xx = true,
            b"GT" => flags.gt = true,
            b"LT" => flags.lt = true,
            b"CH" => flags.ch = true,
            b"INCR" => flags.incr = true,
            _ => break,
        }
        i += 1;
    }
    let rest = &args[i..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return syntax_error();
    }
    if flags.nx && flags.xx {
        return Reply::error("ERR XX and NX options at the same time are not compatible");
    }
    if [flags.gt, flags.lt, flags.nx].iter().filter(|f| **f).count() > 1 {
        return Reply::error("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if flags.incr && rest.len() != 2 {
        return Reply::error("ERR INCR option supports a single increment-element pair");
    }
    let mut entries = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks(2) {
        match zset::parse_score(&pair[0]) {
            Some(score) => entries.push((score.to_bits(), pair[1].clone())),
            None => return not_a_float(),
        }
    }
    match node.coordinator.apply(key.clone(), Op::ZAdd { entries, flags }, None).await {
        Ok(OpReply::Integer(n)) => Reply::Integer(n),
        Ok(OpReply::Bulk(score)) => score.map_or(Reply::Nil, |s| Reply::Double(parse(&s))),
        Ok(other) => unreachable!("ZADD answers a count or a score, not {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// A score this node printed, read back.
fn parse(b: &Bytes) -> f64 {
    zset::parse_score(b).unwrap_or(f64::NAN)
}

/// ZINCRBY key increment member: the new score.
pub async fn zincrby(node: &NodeContext, args: &[Bytes]) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    let Some(by) = zset::parse_score(&args[2]) else { return not_a_float() };
    match node.coordinator.apply(args[1].clone(), Op::ZIncr { member: args[3].clone(), by: by.to_bits() }, None).await {
        Ok(OpReply::Bulk(Some(score))) => Reply::Double(parse(&score)),
        Ok(other) => unreachable!("ZINCRBY answers a score, not {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// ZREM key member [member ...]: how many were members.
pub async fn zrem(node: &NodeContext, args: &[Bytes]) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    integer_reply(node.coordinator.apply(args[1].clone(), Op::ZRemove { members: args[2..].to_vec() }, None).await)
}

/// ZPOPMIN and ZPOPMAX key [count]: without a count the member and its score (empty when none); with one, pairs.
pub async fn zpop(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    let count = match pop_count(args) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let op = Op::ZPop { max: name == "zpopmax", count: count.unwrap_or(1) };
    match node.coordinator.apply(args[1].clone(), op, None).await {
        Ok(OpReply::Members(flat)) => {
            let pairs: Vec<(Reply, Reply)> =
                flat.chunks(2).map(|p| (Reply::Bulk(p[0].clone()), Reply::Double(parse(&p[1])))).collect();
            match count {
                None => Reply::Array(pairs.into_iter().flat_map(|(m, s)| [m, s]).collect()),
                Some(_) => Reply::Pairs(pairs),
            }
        }
        Ok(other) => unreachable!("a pop answers members, not {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// One end of a score range: the score and whether it is excluded (`(5`).
fn score_bound(b: &[u8]) -> Option<(f64, bool)> {
    match b.strip_prefix(b"(") {
        Some(rest) => zset::parse_score(rest).map(|s| (s, true)),
        None => zset::parse_score(b).map(|s| (s, false)),
    }
}

fn within(score: f64, min: (f64, bool), max: (f64, bool)) -> bool {
    (if min.1 { score > min.0 } else { score >= min.0 }) && (if max.1 { score < max.0 } else { score <= max.0 })
}

/// How a range read answers.
struct RangeQuery {
    by_score: bool,
    rev: bool,
    limit: Option<(i64, i64)>,
    with_scores: bool,
}

/// Parses the options after ZRANGE's start and stop (or after ZRANGEBYSCORE's min and max).
fn range_options(args: &[Bytes], mut q: RangeQuery) -> Result<RangeQuery, Reply> {
    let mut i = 0;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"BYSCORE" => q.by_score = true,
            b"BYLEX" => {
                return Err(Reply::error("ERR ZRANGE BYLEX is not supported: order members by score"));
            }
            b"REV" => q.rev = true,
            b"WITHSCORES" => q.with_scores = true,
            b"LIMIT" if i + 2 < args.len() => {
                q.limit = Some((parse_int(&args[i + 1])?, parse_int(&args[i + 2])?));
                i += 2;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    if q.limit.is_some() && !q.by_score {
        return Err(Reply::error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    Ok(q)
}

/// A read of a sorted set, its arguments parsed (and refused, as Redis does, before the key is read).
enum ZRead {
    Score(Bytes),
    MScore(Vec<Bytes>),
    Count((f64, bool), (f64, bool)),
    Rank { member: Bytes, rev: bool, with_score: bool },
    Range(RangeQuery, Bounds),
}

/// What a range read selects.
enum Bounds {
    /// Redis's inclusive index range.
    Index(i64, i64),
    /// Minimum and maximum scores, each maybe exclusive.
    Score((f64, bool), (f64, bool)),
}

fn parse_read(name: &str, args: &[Bytes]) -> Result<ZRead, Reply> {
    let bounds = |a: &Bytes, b: &Bytes| match (score_bound(a), score_bound(b)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(Reply::error("ERR min or max is not a float")),
    };
    Ok(match name {
        "zscore" => ZRead::Score(args[2].clone()),
        "zmscore" => ZRead::MScore(args[2..].to_vec()),
        "zcount" => {
            let (min, max) = bounds(&args[2], &args[3])?;
            ZRead::Count(min, max)
        }
        "zrank" | "zrevrank" => {
            let with_score = match args.get(3) {
                None => false,
                Some(a) if a.eq_ignore_ascii_case(b"WITHSCORE") && args.len() == 4 => true,
                Some(_) => return Err(syntax_error()),
            };
            ZRead::Rank { member: args[2].clone(), rev: name == "zrevrank", with_score }
        }
        _ => {
            let base = RangeQuery {
                by_score: name.ends_with("byscore"),
                rev: name.starts_with("zrev"),
                limit: None,
                with_scores: false,
            };
            let q = range_options(&args[4..], base)?;
            let b = if q.by_score {
                // With REV (or ZREVRANGEBYSCORE) the first bound is the maximum.
                let (a, b) = bounds(&args[2], &args[3])?;
                if q.rev { Bounds::Score(b, a) } else { Bounds::Score(a, b) }
            } else {
                Bounds::Index(parse_int(&args[2])?, parse_int(&args[3])?)
            };
            ZRead::Range(q, b)
        }
    })
}

/// ZSCORE, ZMSCORE, ZCARD, ZCOUNT, ZRANK, ZREVRANK and the range reads, after a quorum read.
pub async fn read(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    let query = match parse_read(name, args) {
        Ok(q) => q,
        Err(r) => return r,
    };
    // Scores of named members read those members' rows; the others read every member.
    let asked = match &query {
        ZRead::Score(m) => Some(vec![m.clone()]),
        ZRead::MScore(ms) => Some(ms.clone()),
        _ => None,
    };
    let all = match read_collection(node, &args[1], RowKind::ZSet, asked.as_deref()).await {
        Ok(rows) => rows::scored(&rows, now_ms()),
        Err(reply) => return reply,
    };
    let score = |m: &Bytes| all.iter().find(|(x, _)| x == m).map(|(_, s)| *s);
    match query {
        ZRead::Score(m) => score(&m).map_or(Reply::Nil, Reply::Double),
        ZRead::MScore(ms) => Reply::Array(ms.iter().map(|m| score(m).map_or(Reply::Nil, Reply::Double)).collect()),
        ZRead::Count(min, max) => Reply::Integer(all.iter().filter(|(_, s)| within(*s, min, max)).count() as i64),
        ZRead::Rank { member, rev, with_score } => {
            let mut all = all;
            if rev {
                all.reverse();
            }
            match all.iter().position(|(m, _)| *m == member) {
                None => Reply::Nil,
                Some(i) if with_score => Reply::Array(vec![Reply::Integer(i as i64), Reply::Double(all[i].1)]),
                Some(i) => Reply::Integer(i as i64),
            }
        }
        ZRead::Range(q, bounds) => range(all, &q, bounds),
    }
}

/// ZRANGE, ZRANGEBYSCORE, ZREVRANGE and ZREVRANGEBYSCORE over every member, ordered by score.
fn range(mut all: Vec<(Bytes, f64)>, q: &RangeQuery, bounds: Bounds) -> Reply {
    if q.rev {
        all.reverse();
    }
    let picked: Vec<(Bytes, f64)> = match bounds {
        Bounds::Score(min, max) => {
            let matching = all.into_iter().filter(|(_, s)| within(*s, min, max));
            match q.limit {
                Some((offset, _)) if offset < 0 => Vec::new(),
                Some((offset, count)) => {
                    let count = if count < 0 { usize::MAX } else { count as usize };
                    matching.skip(offset as usize).take(count).collect()
                }
                None => matching.collect(),
            }
        }
        Bounds::Index(start, stop) => {
            let r = crate::crdt::list::index_range(start, stop, all.len());
            all[r].to_vec()
        }
    };
    if q.with_scores {
        Reply::Pairs(picked.into_iter().map(|(m, s)| (Reply::Bulk(m), Reply::Double(s))).collect())
    } else {
        Reply::Array(picked.into_iter().map(|(m, _)| Reply::Bulk(m)).collect())
    }
}
