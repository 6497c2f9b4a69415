//! Requests parsed into typed commands before anything runs (mini-redis's `Command::from_frame`, then `apply`).
//!
//! [`Command::parse`] reads every argument of a data command: keys and values against the configured limits,
//! numbers, options and their combinations, each refused in Redis's words; leftovers are a syntax error
//! ([`Parse::finish`]). The handlers then take typed values and never look at the request again. The table
//! ([`super::TABLE`]) names each command's handler once; the one match on it is here.

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::table::DataCommand;
use super::{
    NodeContext, counter, del, exists, expire, get, hashes, lists, parse_int, set, sets, syntax_error, wrong_arity,
    zsets,
};
use crate::config::{Limits, ValueMode};
use crate::resp::Reply;
use crate::versioning::RowKind;

/// A request's arguments, read in order. The command's arity was checked against the table before parsing, so a
/// missing argument is an option's missing value: a syntax error.
pub struct Parse<'a> {
    args: &'a [Bytes],
    at: usize,
    limits: &'a Limits,
}

impl<'a> Parse<'a> {
    /// A parse of `args` (the command's name first, skipped).
    pub fn new(args: &'a [Bytes], limits: &'a Limits) -> Self {
        Self { args, at: 1, limits }
    }

    /// The next argument as given.
    pub fn next(&mut self) -> Result<&'a Bytes, Reply> {
        let arg = self.args.get(self.at).ok_or_else(syntax_error)?;
        self.at += 1;
        Ok(arg)
    }

    /// The next argument, owned.
    pub fn bytes(&mut self) -> Result<Bytes, Reply> {
        self.next().cloned()
    }

    /// The next argument as an integer.
    pub fn int(&mut self) -> Result<i64, Reply> {
        parse_int(self.next()?)
    }

    /// The next argument as a key, within `max_key_bytes`.
    pub fn key(&mut self) -> Result<Bytes, Reply> {
        let key = self.bytes()?;
        key_within(self.limits, &key)?;
        Ok(key)
    }

    /// The next argument as a value (a string's value, a member, a field), within `max_value_bytes`.
    pub fn value(&mut self) -> Result<Bytes, Reply> {
        let value = self.bytes()?;
        value_within(self.limits, &value)?;
        Ok(value)
    }

    /// Every argument left, each a key.
    pub fn keys(&mut self) -> Result<Vec<Bytes>, Reply> {
        (0..self.remaining()).map(|_| self.key()).collect()
    }

    /// Every argument left, each a value.
    pub fn values(&mut self) -> Result<Vec<Bytes>, Reply> {
        (0..self.remaining()).map(|_| self.value()).collect()
    }

    /// Every argument left, as given.
    pub fn rest(&mut self) -> &'a [Bytes] {
        let rest = &self.args[self.at.min(self.args.len())..];
        self.at = self.args.len();
        rest
    }

    /// The next argument without taking it.
    pub fn peek(&self) -> Option<&'a Bytes> {
        self.args.get(self.at)
    }

    /// Takes the next argument when it is the token `word` (any case).
    pub fn token(&mut self, word: &[u8]) -> bool {
        let found = self.peek().is_some_and(|a| a.eq_ignore_ascii_case(word));
        self.at += usize::from(found);
        found
    }

    /// How many arguments are left.
    pub fn remaining(&self) -> usize {
        self.args.len().saturating_sub(self.at)
    }

    /// A syntax error when arguments are left over.
    pub fn finish(&self) -> Result<(), Reply> {
        if self.remaining() == 0 { Ok(()) } else { Err(syntax_error()) }
    }

    /// A per-request quorum option (`R n`, `W n`) when it comes next and is the last argument.
    pub fn quorum(&mut self, word: &[u8]) -> Result<Option<usize>, Reply> {
        if self.remaining() == 2 && self.token(word) {
            return super::parse_quorum(self.next()?).map(Some);
        }
        self.finish().map(|()| None)
    }

    /// The optional count of SPOP, LPOP, RPOP, ZPOPMIN and ZPOPMAX (`key [count]`), in Redis's words when it is bad.
    pub fn pop_count(&mut self) -> Result<Option<usize>, Reply> {
        let count = match self.remaining() {
            0 => None,
            1 => match parse_int(self.next()?) {
                Ok(n) if n >= 0 => Some(n as usize),
                _ => return Err(Reply::error("ERR value is out of range, must be positive")),
            },
            _ => return Err(syntax_error()),
        };
        Ok(count)
    }
}

/// `key` within `max_key_bytes`, or the error saying by how much it is not.
pub fn key_within(limits: &Limits, key: &[u8]) -> Result<(), Reply> {
    let max = limits.max_key_bytes;
    if key.len() > max {
        return Err(Reply::error(format!("ERR key is {} bytes, larger than max_key_bytes ({max})", key.len())));
    }
    Ok(())
}

/// `value` within `max_value_bytes`, or the error saying by how much it is not.
fn value_within(limits: &Limits, value: &[u8]) -> Result<(), Reply> {
    let max = limits.max_value_bytes;
    if value.len() > max {
        return Err(Reply::error(format!("ERR value is {} bytes, larger than max_value_bytes ({max})", value.len())));
    }
    Ok(())
}

/// A data command with its arguments parsed and checked.
#[derive(Debug)]
pub enum Command {
    /// GET key [R n].
    Get { key: Bytes, r: Option<usize> },
    /// MGET key [key ...].
    Mget { keys: Vec<Bytes> },
    /// TYPE key.
    Type { key: Bytes },
    /// STRLEN key.
    Strlen { key: Bytes },
    /// SET key value [options].
    Set(set::Set),
    /// GETSET key value.
    GetSet { key: Bytes, value: Bytes },
    /// GETDEL key.
    GetDel { key: Bytes },
    /// MSET key value [key value ...].
    Mset { pairs: Vec<(Bytes, Bytes)> },
    /// SETNX key value.
    SetNx { key: Bytes, value: Bytes },
    /// SETEX key seconds value, PSETEX key milliseconds value: the deadline resolved.
    SetEx { key: Bytes, at_ms: u64, value: Bytes },
    /// GETEX key [option].
    GetEx(expire::GetEx),
    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key amount [NX | XX | GT | LT].
    Expire(expire::Expire),
    /// PERSIST key.
    Persist { key: Bytes },
    /// TTL, PTTL, EXPIRETIME, PEXPIRETIME key.
    Ttl { key: Bytes, unit: expire::TtlUnit },
    /// DEL, UNLINK key [key ...].
    Del { keys: Vec<Bytes> },
    /// DELCTX key context [W n]: the context as sent (decoded by the handler, which holds the key to check it).
    DelCtx { key: Bytes, context: Bytes, w: Option<usize> },
    /// EXISTS key [key ...].
    Exists { keys: Vec<Bytes> },
    /// INCR, DECR, INCRBY, DECRBY: the signed amount to add.
    Incr { key: Bytes, by: i64 },
    /// INCRBYFLOAT and HINCRBYFLOAT: refused, with the reason.
    Refused(Reply),
    /// SADD (`add`) or SREM key member [member ...].
    SetAddOrRemove { key: Bytes, add: bool, members: Vec<Bytes> },
    /// SPOP key [count].
    SetPop { key: Bytes, count: Option<usize> },
    /// SMEMBERS, SISMEMBER, SMISMEMBER, SRANDMEMBER.
    SetRead { key: Bytes, read: sets::SetRead },
    /// HSET, HMSET, HSETNX key field value [field value ...].
    HashSet { key: Bytes, pairs: Vec<(Bytes, Bytes)>, answer: hashes::SetAnswer },
    /// HDEL key field [field ...].
    HashDel { key: Bytes, fields: Vec<Bytes> },
    /// HINCRBY key field increment.
    HashIncrBy { key: Bytes, field: Bytes, by: i64 },
    /// HGET, HMGET, HGETALL, HEXISTS, HKEYS, HVALS, HSTRLEN.
    HashRead { key: Bytes, read: hashes::HashRead },
    /// LPUSH (`head`) or RPUSH key element [element ...].
    ListPush { key: Bytes, head: bool, values: Vec<Bytes> },
    /// LPOP (`head`) or RPOP key [count].
    ListPop { key: Bytes, head: bool, count: Option<usize> },
    /// LREM key count element.
    ListRem { key: Bytes, count: i64, value: Bytes },
    /// LTRIM key start stop.
    ListTrim { key: Bytes, start: i64, stop: i64 },
    /// LRANGE, LINDEX.
    ListRead { key: Bytes, read: lists::ListRead },
    /// ZADD key [options] score member [score member ...].
    ZAdd(zsets::ZAdd),
    /// ZINCRBY key increment member: the increment's bits.
    ZIncrBy { key: Bytes, by: u64, member: Bytes },
    /// ZREM key member [member ...].
    ZRem { key: Bytes, members: Vec<Bytes> },
    /// ZPOPMIN or ZPOPMAX (`max`) key [count].
    ZPop { key: Bytes, max: bool, count: Option<usize> },
    /// ZSCORE, ZMSCORE, ZCOUNT, ZRANK, ZREVRANK, ZRANGE, ZRANGEBYSCORE, ZREVRANGE, ZREVRANGEBYSCORE.
    ZRead { key: Bytes, read: zsets::ZRead },
    /// SCARD, HLEN, ZCARD, LLEN.
    Card { key: Bytes, kind: RowKind },
}

impl Command {
    /// Parses the request `args` of the data command `command` (named `name` in the table: commands that share a
    /// handler differ by it).
    pub fn parse(command: DataCommand, name: &'static str, args: &[Bytes], limits: &Limits) -> Result<Self, Reply> {
        let mut p = Parse::new(args, limits);
        let p = &mut p;
        let parsed = match command {
            DataCommand::Get => Command::Get { key: p.key()?, r: p.quorum(b"R")? },
            DataCommand::Mget => Command::Mget { keys: p.keys()? },
            DataCommand::Type => Command::Type { key: p.key()? },
            DataCommand::Strlen => Command::Strlen { key: p.key()? },
            DataCommand::Set => Command::Set(set::Set::parse(p)?),
            DataCommand::GetSet => Command::GetSet { key: p.key()?, value: p.value()? },
            DataCommand::GetDel => Command::GetDel { key: p.key()? },
            DataCommand::Mset => {
                if !p.remaining().is_multiple_of(2) {
                    return Err(wrong_arity(name));
                }
                let mut pairs = Vec::with_capacity(p.remaining() / 2);
                while p.remaining() > 0 {
                    pairs.push((p.key()?, p.value()?));
                }
                Command::Mset { pairs }
            }
            DataCommand::SetNx => Command::SetNx { key: p.key()?, value: p.value()? },
            DataCommand::SetEx => {
                let key = p.key()?;
                let amount = p.int()?;
                let deadline =
                    if name == "setex" { expire::Deadline::Seconds(amount) } else { expire::Deadline::Millis(amount) };
                let at_ms = expire::positive(deadline, name)?;
                Command::SetEx { key, at_ms, value: p.value()? }
            }
            DataCommand::GetEx => Command::GetEx(expire::GetEx::parse(p)?),
            DataCommand::Expire => Command::Expire(expire::Expire::parse(name, p)?),
            DataCommand::Persist => Command::Persist { key: p.key()? },
            DataCommand::Ttl => Command::Ttl { key: p.key()?, unit: expire::TtlUnit::of(name) },
            DataCommand::Del => Command::Del { keys: p.keys()? },
            DataCommand::DelCtx => Command::DelCtx { key: p.key()?, context: p.bytes()?, w: p.quorum(b"W")? },
            DataCommand::Exists => Command::Exists { keys: p.keys()? },
            DataCommand::Incr => {
                let key = p.key()?;
                let by = match name {
                    "incr" => 1,
                    "decr" => -1,
                    "incrby" => counter::amount(p.next()?)?,
                    _ => counter::amount(p.next()?)?
                        .checked_neg()
                        .ok_or_else(|| Reply::error("ERR decrement would overflow"))?,
                };
                Command::Incr { key, by }
            }
            DataCommand::IncrByFloat => {
                p.rest();
                Command::Refused(counter::incrbyfloat())
            }
            DataCommand::SetAddOrRemove => {
                Command::SetAddOrRemove { key: p.key()?, add: name == "sadd", members: p.values()? }
            }
            DataCommand::SetPop => Command::SetPop { key: p.key()?, count: p.pop_count()? },
            DataCommand::SetRead => Command::SetRead { key: p.key()?, read: sets::SetRead::parse(name, p)? },
            DataCommand::HashSet => {
                let key = p.key()?;
                let answer = hashes::SetAnswer::of(name);
                if !p.remaining().is_multiple_of(2) || (answer == hashes::SetAnswer::OnlyNew && p.remaining() != 2) {
                    return Err(wrong_arity(name));
                }
                let mut pairs = Vec::with_capacity(p.remaining() / 2);
                while p.remaining() > 0 {
                    pairs.push((p.value()?, p.value()?));
                }
                Command::HashSet { key, pairs, answer }
            }
            DataCommand::HashDel => Command::HashDel { key: p.key()?, fields: p.rest().to_vec() },
            DataCommand::HashIncrBy => {
                Command::HashIncrBy { key: p.key()?, field: p.bytes()?, by: counter::amount(p.next()?)? }
            }
            DataCommand::HashIncrByFloat => {
                p.rest();
                Command::Refused(hashes::incrbyfloat())
            }
            DataCommand::HashRead => Command::HashRead { key: p.key()?, read: hashes::HashRead::parse(name, p)? },
            DataCommand::ListPush => Command::ListPush { key: p.key()?, head: name == "lpush", values: p.values()? },
            DataCommand::ListPop => Command::ListPop { key: p.key()?, head: name == "lpop", count: p.pop_count()? },
            DataCommand::ListRem => Command::ListRem { key: p.key()?, count: p.int()?, value: p.bytes()? },
            DataCommand::ListTrim => Command::ListTrim { key: p.key()?, start: p.int()?, stop: p.int()? },
            DataCommand::ListRead => Command::ListRead { key: p.key()?, read: lists::ListRead::parse(name, p)? },
            DataCommand::ZAdd => Command::ZAdd(zsets::ZAdd::parse(p)?),
            DataCommand::ZIncrBy => {
                let key = p.key()?;
                let by = zsets::score(p.next()?)?;
                Command::ZIncrBy { key, by: by.to_bits(), member: p.bytes()? }
            }
            DataCommand::ZRem => Command::ZRem { key: p.key()?, members: p.rest().to_vec() },
            DataCommand::ZPop => Command::ZPop { key: p.key()?, max: name == "zpopmax", count: p.pop_count()? },
            DataCommand::ZRead => Command::ZRead { key: p.key()?, read: zsets::ZRead::parse(name, p)? },
            DataCommand::Card(kind) => Command::Card { key: p.key()?, kind },
        };
        p.finish()?;
        Ok(parsed)
    }

    /// Runs the command; `mode` is how GET-like replies answer.
    ///
    /// Each command's future is boxed on its own: an `async fn` matching over every command would be as large as
    /// the largest of them (10 KB), and each pipelined request would allocate and copy that much.
    pub fn apply(self, node: &NodeContext, mode: ValueMode) -> BoxFuture<'_, Reply> {
        match self {
            Command::Get { key, r } => get::get(node, key, r, mode).boxed(),
            Command::Mget { keys } => get::mget(node, keys, mode).boxed(),
            Command::Type { key } => get::key_type(node, key).boxed(),
            Command::Strlen { key } => get::strlen(node, key).boxed(),
            Command::Set(c) => c.apply(node, mode).boxed(),
            Command::GetSet { key, value } => set::getset(node, key, value, mode).boxed(),
            Command::GetDel { key } => set::getdel(node, key, mode).boxed(),
            Command::Mset { pairs } => set::mset(node, pairs).boxed(),
            Command::SetNx { key, value } => set::setnx(node, key, value).boxed(),
            Command::SetEx { key, at_ms, value } => expire::setex(node, key, at_ms, value).boxed(),
            Command::GetEx(c) => c.apply(node, mode).boxed(),
            Command::Expire(c) => c.apply(node).boxed(),
            Command::Persist { key } => expire::persist(node, key).boxed(),
            Command::Ttl { key, unit } => expire::ttl(node, key, unit).boxed(),
            Command::Del { keys } => del::del(node, keys).boxed(),
            Command::DelCtx { key, context, w } => del::delctx(node, key, context, w).boxed(),
            Command::Exists { keys } => exists::exists(node, keys).boxed(),
            Command::Incr { key, by } => counter::incr(node, key, by).boxed(),
            Command::Refused(reply) => std::future::ready(reply).boxed(),
            Command::SetAddOrRemove { key, add, members } => sets::add_or_remove(node, key, add, members).boxed(),
            Command::SetPop { key, count } => sets::spop(node, key, count).boxed(),
            Command::SetRead { key, read } => read.apply(node, key).boxed(),
            Command::HashSet { key, pairs, answer } => hashes::set(node, key, pairs, answer).boxed(),
            Command::HashDel { key, fields } => hashes::del(node, key, fields).boxed(),
            Command::HashIncrBy { key, field, by } => hashes::incrby(node, key, field, by).boxed(),
            Command::HashRead { key, read } => read.apply(node, key).boxed(),
            Command::ListPush { key, head, values } => lists::push(node, key, head, values).boxed(),
            Command::ListPop { key, head, count } => lists::pop(node, key, head, count).boxed(),
            Command::ListRem { key, count, value } => lists::lrem(node, key, count, value).boxed(),
            Command::ListTrim { key, start, stop } => lists::ltrim(node, key, start, stop).boxed(),
            Command::ListRead { key, read } => read.apply(node, key).boxed(),
            Command::ZAdd(c) => c.apply(node).boxed(),
            Command::ZIncrBy { key, by, member } => zsets::zincrby(node, key, by, member).boxed(),
            Command::ZRem { key, members } => zsets::zrem(node, key, members).boxed(),
            Command::ZPop { key, max, count } => zsets::zpop(node, key, max, count).boxed(),
            Command::ZRead { key, read } => read.apply(node, key).boxed(),
            Command::Card { key, kind } => super::card(node, key, kind).boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::table;

    fn parse(words: &[&str]) -> Result<Command, Reply> {
        let limits = Limits { max_key_bytes: 8, max_value_bytes: 16, ..Limits::default() };
        let args: Vec<Bytes> = words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        let spec = table::lookup(&words[0].to_ascii_lowercase()).expect("a command of the table");
        assert!(spec.arity_ok(args.len()), "{words:?} has the wrong arity");
        let table::Run::Data(command) = spec.run else { panic!("{} is no data command", spec.name) };
        Command::parse(command, spec.name, &args, &limits)
    }

    fn error(words: &[&str]) -> String {
        match parse(words) {
            Err(Reply::Error(text)) => text.to_string(),
            other => panic!("{words:?} parsed: {other:?}"),
        }
    }

    #[test]
    fn arguments_become_typed_values() {
        assert!(matches!(parse(&["GET", "k", "r", "2"]), Ok(Command::Get { r: Some(2), .. })));
        assert!(matches!(parse(&["DECRBY", "k", "5"]), Ok(Command::Incr { by: -5, .. })));
        assert!(matches!(parse(&["decr", "k"]), Ok(Command::Incr { by: -1, .. })));
        assert!(
            matches!(parse(&["RPUSH", "k", "a", "b"]), Ok(Command::ListPush { head: false, values, .. }) if values.len() == 2)
        );
        assert!(matches!(parse(&["ZPOPMAX", "k", "3"]), Ok(Command::ZPop { max: true, count: Some(3), .. })));
        assert!(matches!(
            parse(&["HSETNX", "k", "f", "v"]),
            Ok(Command::HashSet { answer: hashes::SetAnswer::OnlyNew, .. })
        ));
        assert!(matches!(
            parse(&["LINDEX", "k", "-1"]),
            Ok(Command::ListRead { read: lists::ListRead::Index(-1), .. })
        ));
        assert!(matches!(parse(&["PTTL", "k"]), Ok(Command::Ttl { unit: expire::TtlUnit::Millis, .. })));
        assert!(matches!(parse(&["SET", "k", "v", "nx", "GET", "EX", "10", "W", "2"]), Ok(Command::Set(_))));
        assert!(matches!(
            parse(&["ZRANGE", "k", "(1", "5", "BYSCORE", "REV", "LIMIT", "0", "2"]),
            Ok(Command::ZRead { .. })
        ));
        // The refused commands are refused whatever their arguments.
        assert!(matches!(parse(&["INCRBYFLOAT", "k", "1.5"]), Ok(Command::Refused(_))));
    }

    #[test]
    fn bad_arguments_are_refused_in_redis_words_before_anything_runs() {
        assert_eq!(error(&["GET", "k", "X", "2"]), "ERR syntax error");
        assert_eq!(error(&["GET", "k", "R", "0"]), "ERR R and W must be positive integers");
        assert_eq!(error(&["SET", "k", "v", "EX", "1", "PX", "2"]), "ERR syntax error");
        assert_eq!(error(&["SET", "k", "v", "EX", "0"]), "ERR invalid expire time in 'set' command");
        assert_eq!(
            error(&["SET", "k", "v", "GET", "CONTEXT", "t"]),
            "ERR SET GET takes no CONTEXT: it reads the key itself"
        );
        assert_eq!(error(&["SET", "k", "v", "EX"]), "ERR syntax error");
        assert_eq!(error(&["INCRBY", "k", "1.5"]), "ERR value is not an integer or out of range");
        assert_eq!(error(&["DECRBY", "k", "-9223372036854775808"]), "ERR decrement would overflow");
        assert_eq!(error(&["MSET", "a", "1", "b"]), "ERR wrong number of arguments for 'mset' command");
        assert_eq!(error(&["HSET", "k", "f", "v", "g"]), "ERR wrong number of arguments for 'hset' command");
        assert_eq!(error(&["SPOP", "k", "-1"]), "ERR value is out of range, must be positive");
        assert_eq!(error(&["LPOP", "k", "1", "2"]), "ERR syntax error");
        assert_eq!(error(&["ZRANK", "k", "m", "WITHSCORE", "x"]), "ERR syntax error");
        assert_eq!(
            error(&["ZADD", "k", "NX", "XX", "1", "m"]),
            "ERR XX and NX options at the same time are not compatible"
        );
        assert_eq!(error(&["ZADD", "k", "one", "m"]), "ERR value is not a valid float");
        assert_eq!(error(&["ZADD", "k", "1", "m", "2"]), "ERR syntax error");
        assert_eq!(error(&["ZCOUNT", "k", "a", "5"]), "ERR min or max is not a float");
        assert_eq!(error(&["EXPIRE", "k", "10", "FOO"]), "ERR Unsupported option FOO");
        assert_eq!(error(&["GETEX", "k", "EX"]), "ERR syntax error");
        assert_eq!(error(&["SRANDMEMBER", "k", "x"]), "ERR value is not an integer or out of range");
        assert_eq!(error(&["DELCTX", "k", "token", "W"]), "ERR syntax error");
    }

    #[test]
    fn keys_and_values_are_held_to_the_limits() {
        assert!(error(&["GET", "a-long-key"]).contains("larger than max_key_bytes (8)"));
        assert!(error(&["MGET", "k", "a-long-key"]).contains("larger than max_key_bytes (8)"));
        assert!(error(&["SADD", "k", "a", "a-member-over-16-bytes"]).contains("larger than max_value_bytes (16)"));
        assert!(error(&["HSET", "k", "f", "a-value-over-16-bytes"]).contains("larger than max_value_bytes (16)"));
        assert!(error(&["SET", "k", "a-value-over-16-bytes"]).contains("larger than max_value_bytes (16)"));
        assert!(matches!(parse(&["SET", "k", "sixteen-bytes-ok"]), Ok(Command::Set(_))));
    }
}
