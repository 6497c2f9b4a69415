//! Sets: SADD, SREM, SPOP (typed writes, see [`crate::crdt::set`]) and SMEMBERS, SISMEMBER, SMISMEMBER,
//! SRANDMEMBER (quorum reads of the merged set), with Redis's replies. SCARD is a count (`commands::card`).

use bytes::Bytes;

use super::parse::Parse;
use super::{NodeContext, coord_error, integer_reply, read_collection, read_set_sample, syntax_error};
use crate::coordinator::now_ms;
use crate::crdt::{Op, OpReply, rows};
use crate::resp::Reply;
use crate::versioning::RowKind;

/// SADD and SREM: how many members were added (were not there) or removed (were there).
pub async fn add_or_remove(node: &NodeContext, key: Bytes, add: bool, members: Vec<Bytes>) -> Reply {
    let op = if add { Op::SetAdd { members } } else { Op::SetRemove { members } };
    integer_reply(node.coordinator.apply(key, op, None).await)
}

/// SPOP key [count]: removes and returns random members (without a count: one, or nil; with: an array).
pub async fn spop(node: &NodeContext, key: Bytes, count: Option<usize>) -> Reply {
    let op = Op::SetPop { count: count.unwrap_or(1), seed: random_seed() };
    match node.coordinator.apply(key, op, None).await {
        Ok(OpReply::Members(members)) => match count {
            None => members.into_iter().next().map_or(Reply::Nil, Reply::Bulk),
            Some(_) => Reply::Array(members.into_iter().map(Reply::Bulk).collect()),
        },
        Ok(other) => unreachable!("SPOP answers members, not {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// The members of a set key after a quorum read (of `asked` only, or of every member), sorted, or the reply to
/// give instead (WRONGTYPE, a failed read).
async fn read_members(node: &NodeContext, key: &Bytes, asked: Option<&[Bytes]>) -> Result<Vec<Bytes>, Reply> {
    Ok(rows::members(&read_collection(node, key, RowKind::Set, asked).await?, now_ms()))
}

/// A read of a set, parsed.
#[derive(Debug)]
pub enum SetRead {
    /// SMEMBERS.
    Members,
    /// SISMEMBER key member.
    IsMember(Bytes),
    /// SMISMEMBER key member [member ...].
    AreMembers(Vec<Bytes>),
    /// SRANDMEMBER key [count].
    RandomMember(Option<i64>),
}

impl SetRead {
    /// The read command `name`'s arguments after the key. SRANDMEMBER's count is refused, as Redis does, before
    /// the key is read.
    pub fn parse(name: &str, p: &mut Parse) -> Result<Self, Reply> {
        Ok(match name {
            "smembers" => SetRead::Members,
            "sismember" => SetRead::IsMember(p.bytes()?),
            "smismember" => SetRead::AreMembers(p.rest().to_vec()),
            "srandmember" => SetRead::RandomMember(srandmember_count(p)?),
            other => unreachable!("'{other}' is not a set read"),
        })
    }

    /// Runs the read on the set at `key`.
    pub async fn apply(self, node: &NodeContext, key: Bytes) -> Reply {
        if let SetRead::RandomMember(count) = self
            && let Some(wanted) = sampled(count)
        {
            // A few members picked from across the set, not the whole set read to pick among it.
            let seed = random_seed();
            match read_set_sample(node, &key, wanted, seed).await {
                Ok(rows) => {
                    let members = rows::members(&rows, now_ms());
                    // Fewer than asked: the set may be that small, which only the whole set tells.
                    if members.len() >= wanted as usize {
                        return srandmember(members, count);
                    }
                }
                Err(reply) => return reply,
            }
        }
        // Membership tests read the rows of the members asked; the others read every member.
        let asked = match &self {
            SetRead::IsMember(m) => Some(std::slice::from_ref(m)),
            SetRead::AreMembers(ms) => Some(ms.as_slice()),
            _ => None,
        };
        let members = match read_members(node, &key, asked).await {
            Ok(m) => m,
            Err(reply) => return reply,
        };
        let has = |m: &Bytes| i64::from(members.binary_search(m).is_ok());
        match self {
            SetRead::IsMember(m) => Reply::Integer(has(&m)),
            SetRead::AreMembers(ms) => Reply::Array(ms.iter().map(|m| Reply::Integer(has(m))).collect()),
            SetRead::Members => Reply::Set(members.into_iter().map(Reply::Bulk).collect()),
            SetRead::RandomMember(count) => srandmember(members, count),
        }
    }
}

/// The largest SRANDMEMBER count answered from a sample of the set ([`read_set_sample`]); a larger one, and a
/// negative one (repeats drawn uniformly from the whole set), read every member.
const MAX_SAMPLED: i64 = 64;

/// How many members SRANDMEMBER's `count` samples, or `None` when it reads the whole set.
fn sampled(count: Option<i64>) -> Option<u32> {
    match count {
        None => Some(1),
        Some(n) if (1..=MAX_SAMPLED).contains(&n) => Some(n as u32),
        Some(_) => None,
    }
}

/// The most members a negative SRANDMEMBER count returns.
const MAX_RANDOM_REPEATS: i64 = 1 << 20;

/// SRANDMEMBER key [count]: without a count one member (or nil); a positive count that many distinct members at
/// most; a negative one exactly |count| members, repeats allowed.
fn srandmember_count(p: &mut Parse) -> Result<Option<i64>, Reply> {
    match p.remaining() {
        0 => Ok(None),
        1 => match p.int() {
            // Repeats are allowed with a negative count: bound them, so one request cannot ask for gigabytes.
            Ok(n) if n >= -MAX_RANDOM_REPEATS => Ok(Some(n)),
            Ok(_) => Err(Reply::error(format!("ERR value is out of range (at most {MAX_RANDOM_REPEATS} repeats)"))),
            Err(r) => Err(r),
        },
        _ => Err(syntax_error()),
    }
}

fn srandmember(members: Vec<Bytes>, count: Option<i64>) -> Reply {
    let mut rng = random_seed() | 1;
    let mut next = |bound: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % bound as u64) as usize
    };
    match count {
        None if members.is_empty() => Reply::Nil,
        None => Reply::Bulk(members[next(members.len())].clone()),
        Some(n) if n >= 0 => {
            let picked = crate::crdt::set::sample(members, n as usize, random_seed());
            Reply::Array(picked.into_iter().map(Reply::Bulk).collect())
        }
        Some(_) if members.is_empty() => Reply::Array(Vec::new()),
        Some(n) => {
            Reply::Array((0..n.unsigned_abs()).map(|_| Reply::Bulk(members[next(members.len())].clone())).collect())
        }
    }
}

/// A random seed for a pick.
fn random_seed() -> u64 {
    crate::sys::random_u64().expect("the OS gives randomness")
}
