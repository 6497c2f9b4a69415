//! Expiry commands: EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST, TTL PTTL EXPIRETIME PEXPIRETIME, SETEX PSETEX,
//! GETEX, and the deadline options of SET. See [`crate::crdt::expiry`] for how a key's deadline lives in its
//! versions and how concurrent EXPIREs resolve.

use bytes::Bytes;

use super::parse::Parse;
use super::{NodeContext, coord_error, integer_reply, parse_int, printable, syntax_error};
use crate::config::ValueMode;
use crate::coordinator::{WriteContext, now_ms};
use crate::crdt::Op;
use crate::crdt::expiry::Condition;
use crate::resp::Reply;

/// A deadline as a command gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// EX / SETEX / EXPIRE: seconds from now.
    Seconds(i64),
    /// PX / PSETEX / PEXPIRE: milliseconds from now.
    Millis(i64),
    /// EXAT / EXPIREAT: a Unix time in seconds.
    AtSeconds(i64),
    /// PXAT / PEXPIREAT: a Unix time in milliseconds.
    AtMillis(i64),
}

impl Deadline {
    /// The deadline in ms since the Unix epoch at `now_ms`, or `None` when it overflows (Redis: "invalid expire
    /// time"). A deadline in the past is clamped to 0 (it has passed).
    pub fn at_ms(self, now_ms: u64) -> Option<u64> {
        let now = i64::try_from(now_ms).ok()?;
        let at = match self {
            Deadline::Seconds(s) => s.checked_mul(1000)?.checked_add(now)?,
            Deadline::Millis(ms) => ms.checked_add(now)?,
            Deadline::AtSeconds(s) => s.checked_mul(1000)?,
            Deadline::AtMillis(ms) => ms,
        };
        Some(at.max(0) as u64)
    }

    /// The option of SET or GETEX naming this kind of deadline (`EX`, `PX`, `EXAT`, `PXAT`), with its value.
    fn from_option(option: &[u8], value: &[u8]) -> Option<Result<Deadline, Reply>> {
        let make: fn(i64) -> Deadline = match option {
            b"EX" => Deadline::Seconds,
            b"PX" => Deadline::Millis,
            b"EXAT" => Deadline::AtSeconds,
            b"PXAT" => Deadline::AtMillis,
            _ => return None,
        };
        Some(parse_int(value).map(make))
    }
}

/// The "invalid expire time" error of command `name`.
fn invalid_expire(name: &str) -> Reply {
    Reply::error(format!("ERR invalid expire time in '{name}' command"))
}

/// What SET (or GETEX) does to the key's deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetExpiry {
    /// The new value never expires (SET without options).
    #[default]
    Never,
    /// It expires at this deadline (ms since the Unix epoch).
    At(u64),
    /// It keeps the deadline the key has (KEEPTTL): the write reads the key first.
    Keep,
}

impl SetExpiry {
    /// The deadline to write, given what a read of the key found (`read`: its deadline) when the option needs it.
    pub fn resolve(self, read: Option<u64>) -> Option<u64> {
        match self {
            SetExpiry::Never => None,
            SetExpiry::At(at) => Some(at),
            SetExpiry::Keep => read,
        }
    }
}

/// Parses SET's deadline option that comes next (`EX s`, `PX ms`, `EXAT t`, `PXAT t`, `KEEPTTL`) into `expiry`: a
/// syntax error when it is no deadline option, or a second one.
pub fn parse_set_option(p: &mut Parse, expiry: &mut Option<SetExpiry>) -> Result<(), Reply> {
    let option = p.next()?.to_ascii_uppercase();
    if option.as_slice() == b"KEEPTTL" {
        if expiry.is_some() {
            return Err(syntax_error());
        }
        *expiry = Some(SetExpiry::Keep);
        return Ok(());
    }
    let value = p.peek().ok_or_else(syntax_error)?;
    let deadline = Deadline::from_option(&option, value).ok_or_else(syntax_error)??;
    p.next()?;
    if expiry.is_some() {
        return Err(syntax_error());
    }
    *expiry = Some(SetExpiry::At(positive(deadline, "set")?));
    Ok(())
}

/// A deadline of SET, SETEX, PSETEX or GETEX: its amount must be positive, and it must not overflow.
pub fn positive(deadline: Deadline, name: &str) -> Result<u64, Reply> {
    let amount = match deadline {
        Deadline::Seconds(n) | Deadline::Millis(n) | Deadline::AtSeconds(n) | Deadline::AtMillis(n) => n,
    };
    if amount <= 0 {
        return Err(invalid_expire(name));
    }
    deadline.at_ms(now_ms()).ok_or_else(|| invalid_expire(name))
}

/// SETEX key seconds value, PSETEX key milliseconds value: SET key value EX seconds (PX milliseconds), the
/// deadline resolved when parsed.
pub async fn setex(node: &NodeContext, key: Bytes, at_ms: u64, value: Bytes) -> Reply {
    match node.coordinator.put_expiring(key, value, WriteContext::Blind, Some(at_ms), None, None).await {
        Ok(_) => Reply::ok(),
        Err(e) => coord_error(e),
    }
}

/// EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT, parsed: the deadline resolved, and the condition.
#[derive(Debug)]
pub struct Expire {
    key: Bytes,
    at_ms: u64,
    condition: Condition,
}

impl Expire {
    /// EXPIRE key seconds, PEXPIRE key ms, EXPIREAT key unix-seconds, PEXPIREAT key unix-ms, each with an optional
    /// `NX | XX | GT | LT`.
    pub fn parse(name: &str, p: &mut Parse) -> Result<Self, Reply> {
        let key = p.key()?;
        let amount = p.int()?;
        let mut condition = Condition::Always;
        for option in p.rest() {
            let next = match option.to_ascii_uppercase().as_slice() {
                b"NX" => Condition::Nx,
                b"XX" => Condition::Xx,
                b"GT" => Condition::Gt,
                b"LT" => Condition::Lt,
                _ => return Err(Reply::error(format!("ERR Unsupported option {}", printable(option, 32)))),
            };
            condition = match (condition, next) {
                (Condition::Always, next) => next,
                (a, b) if a == b => a,
                (Condition::Gt, Condition::Lt) | (Condition::Lt, Condition::Gt) => {
                    return Err(Reply::error("ERR GT and LT options at the same time are not compatible"));
                }
                _ => return Err(Reply::error("ERR NX and XX, GT or LT options at the same time are not compatible")),
            };
        }
        let deadline = match name {
            "expire" => Deadline::Seconds(amount),
            "pexpire" => Deadline::Millis(amount),
            "expireat" => Deadline::AtSeconds(amount),
            _ => Deadline::AtMillis(amount),
        };
        let at_ms = deadline.at_ms(now_ms()).ok_or_else(|| invalid_expire(name))?;
        Ok(Expire { key, at_ms, condition })
    }

    /// 1 when the key's deadline was set (a deadline in the past deletes the key), 0 when the key has no live
    /// value or the condition does not hold.
    pub async fn apply(self, node: &NodeContext) -> Reply {
        let op = Op::Expire { at_ms: Some(self.at_ms), condition: self.condition };
        integer_reply(node.coordinator.apply(self.key, op, None).await)
    }
}

/// PERSIST key: 1 when the key had a deadline and now has none, else 0.
pub async fn persist(node: &NodeContext, key: Bytes) -> Reply {
    integer_reply(node.coordinator.apply(key, Op::Expire { at_ms: None, condition: Condition::Always }, None).await)
}

/// What a TTL-like command answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlUnit {
    /// TTL: seconds left, rounded.
    Seconds,
    /// PTTL: milliseconds left.
    Millis,
    /// EXPIRETIME: the deadline in Unix seconds.
    AtSeconds,
    /// PEXPIRETIME: the deadline in Unix milliseconds.
    AtMillis,
}

impl TtlUnit {
    /// The unit of the command `name`.
    pub fn of(name: &str) -> Self {
        match name {
            "ttl" => TtlUnit::Seconds,
            "pttl" => TtlUnit::Millis,
            "expiretime" => TtlUnit::AtSeconds,
            _ => TtlUnit::AtMillis,
        }
    }
}

/// TTL (seconds, rounded), PTTL (ms), EXPIRETIME (Unix seconds), PEXPIRETIME (Unix ms) of a key: -2 when it has
/// no live value, -1 when it never expires.
pub async fn ttl(node: &NodeContext, key: Bytes, unit: TtlUnit) -> Reply {
    let read = match node.coordinator.get(&key, None).await {
        Ok(read) => read,
        Err(e) => return coord_error(e),
    };
    let Some(at) = read.expires_at_ms else { return Reply::Integer(if read.kind.is_some() { -1 } else { -2 }) };
    let left = at.saturating_sub(now_ms());
    Reply::Integer(match unit {
        // Redis rounds to the nearest second.
        TtlUnit::Seconds => (left.saturating_add(500) / 1000) as i64,
        TtlUnit::Millis => left as i64,
        TtlUnit::AtSeconds => (at / 1000) as i64,
        TtlUnit::AtMillis => at as i64,
    })
}

/// GETEX, parsed: the deadline change it makes, if any (`Some(None)`: PERSIST).
#[derive(Debug)]
pub struct GetEx {
    key: Bytes,
    change: Option<Option<u64>>,
}

impl GetEx {
    /// GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST].
    pub fn parse(p: &mut Parse) -> Result<Self, Reply> {
        let key = p.key()?;
        let change = match p.rest() {
            [] => None,
            [option] if option.eq_ignore_ascii_case(b"PERSIST") => Some(None),
            [option, value] => match Deadline::from_option(&option.to_ascii_uppercase(), value) {
                Some(deadline) => Some(Some(positive(deadline?, "getex")?)),
                None => return Err(syntax_error()),
            },
            _ => return Err(syntax_error()),
        };
        Ok(GetEx { key, change })
    }

    /// The value, as GET answers it; with an option, then sets the key's deadline as EXPIRE (or PERSIST) would.
    pub async fn apply(self, node: &NodeContext, mode: ValueMode) -> Reply {
        let key = self.key;
        let read = match node.coordinator.get(&key, None).await {
            Ok(read) => read,
            Err(e) => return coord_error(e),
        };
        if read.kind.is_some_and(|k| k.redis_type() != "string") {
            return Reply::error(crate::crdt::OpError::WrongType.to_string());
        }
        let found = read.kind.is_some();
        let reply = super::get::read_reply(node, &key, read, mode);
        if reply.is_error() || !found {
            return reply;
        }
        if let Some(at_ms) = self.change {
            let op = Op::Expire { at_ms, condition: Condition::Always };
            if let Err(e) = node.coordinator.apply(key, op, None).await {
                return coord_error(e);
            }
        }
        reply
    }
}
