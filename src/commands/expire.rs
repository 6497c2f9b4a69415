//! Expiry commands: EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST, TTL PTTL EXPIRETIME PEXPIRETIME, SETEX PSETEX,
//! GETEX, and the deadline options of SET. See [`crate::crdt::expiry`] for how a key's deadline lives in its
//! versions and how concurrent EXPIREs resolve.

use bytes::Bytes;

use super::{NodeContext, check_key, coord_error, integer_reply, parse_int, printable, syntax_error};
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

/// Parses SET's deadline option at `args[i]` (`EX s`, `PX ms`, `EXAT t`, `PXAT t`, `KEEPTTL`) into `expiry`, if it
/// is one: `Some(Ok(n))` consumed `n` arguments, `Some(Err(reply))` is bad, `None` is not a deadline option.
pub fn parse_set_option(args: &[Bytes], i: usize, expiry: &mut Option<SetExpiry>) -> Option<Result<usize, Reply>> {
    let option = args[i].to_ascii_uppercase();
    if option.as_slice() == b"KEEPTTL" {
        return Some(match expiry {
            None => {
                *expiry = Some(SetExpiry::Keep);
                Ok(1)
            }
            Some(_) => Err(syntax_error()),
        });
    }
    let value = args.get(i + 1)?;
    let deadline = match Deadline::from_option(&option, value)? {
        Ok(d) => d,
        Err(r) => return Some(Err(r)),
    };
    if expiry.is_some() {
        return Some(Err(syntax_error()));
    }
    Some(match positive(deadline, "set") {
        Ok(at) => {
            *expiry = Some(SetExpiry::At(at));
            Ok(2)
        }
        Err(r) => Err(r),
    })
}

/// A deadline of SET, SETEX, PSETEX or GETEX: its amount must be positive, and it must not overflow.
fn positive(deadline: Deadline, name: &str) -> Result<u64, Reply> {
    let amount = match deadline {
        Deadline::Seconds(n) | Deadline::Millis(n) | Deadline::AtSeconds(n) | Deadline::AtMillis(n) => n,
    };
    if amount <= 0 {
        return Err(invalid_expire(name));
    }
    deadline.at_ms(now_ms()).ok_or_else(|| invalid_expire(name))
}

/// SETEX key seconds value, PSETEX key milliseconds value: SET key value EX seconds (PX milliseconds).
pub async fn setex(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    let amount = match parse_int(&args[2]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let deadline = if name == "setex" { Deadline::Seconds(amount) } else { Deadline::Millis(amount) };
    let at = match positive(deadline, name) {
        Ok(at) => at,
        Err(r) => return r,
    };
    let (key, value) = (&args[1], &args[3]);
    if let Err(r) = super::check_key_and_values(node, key, [value]) {
        return r;
    }
    match node.coordinator.put_expiring(key.clone(), value.clone(), WriteContext::Blind, Some(at), None, None).await {
        Ok(_) => Reply::ok(),
        Err(e) => coord_error(e),
    }
}

/// EXPIRE key seconds, PEXPIRE key ms, EXPIREAT key unix-seconds, PEXPIREAT key unix-ms, each with an optional
/// `NX | XX | GT | LT`: 1 when the key's deadline was set (a deadline in the past deletes the key), 0 when the key
/// has no live value or the condition does not hold.
pub async fn expire(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    let key = &args[1];
    let amount = match parse_int(&args[2]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mut condition = Condition::Always;
    for option in &args[3..] {
        let next = match option.to_ascii_uppercase().as_slice() {
            b"NX" => Condition::Nx,
            b"XX" => Condition::Xx,
            b"GT" => Condition::Gt,
            b"LT" => Condition::Lt,
            _ => return Reply::error(format!("ERR Unsupported option {}", printable(option, 32))),
        };
        condition = match (condition, next) {
            (Condition::Always, next) => next,
            (a, b) if a == b => a,
            (Condition::Gt, Condition::Lt) | (Condition::Lt, Condition::Gt) => {
                return Reply::error("ERR GT and LT options at the same time are not compatible");
            }
            _ => return Reply::error("ERR NX and XX, GT or LT options at the same time are not compatible"),
        };
    }
    let deadline = match name {
        "expire" => Deadline::Seconds(amount),
        "pexpire" => Deadline::Millis(amount),
        "expireat" => Deadline::AtSeconds(amount),
        _ => Deadline::AtMillis(amount),
    };
    let Some(at_ms) = deadline.at_ms(now_ms()) else { return invalid_expire(name) };
    if let Err(r) = check_key(node, key) {
        return r;
    }
    integer_reply(node.coordinator.apply(key.clone(), Op::Expire { at_ms: Some(at_ms), condition }, None).await)
}

/// PERSIST key: 1 when the key had a deadline and now has none, else 0.
pub async fn persist(node: &NodeContext, args: &[Bytes]) -> Reply {
    let key = &args[1];
    if let Err(r) = check_key(node, key) {
        return r;
    }
    integer_reply(
        node.coordinator.apply(key.clone(), Op::Expire { at_ms: None, condition: Condition::Always }, None).await,
    )
}

/// TTL (seconds, rounded), PTTL (ms), EXPIRETIME (Unix seconds), PEXPIRETIME (Unix ms) of a key: -2 when it has
/// no live value, -1 when it never expires.
pub async fn ttl(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    let key = &args[1];
    if let Err(r) = check_key(node, key) {
        return r;
    }
    let read = match node.coordinator.get(key, None).await {
        Ok(read) => read,
        Err(e) => return coord_error(e),
    };
    let Some(at) = read.expires_at_ms else { return Reply::Integer(if read.kind.is_some() { -1 } else { -2 }) };
    let left = at.saturating_sub(now_ms());
    Reply::Integer(match name {
        // Redis rounds to the nearest second.
        "ttl" => (left.saturating_add(500) / 1000) as i64,
        "pttl" => left as i64,
        "expiretime" => (at / 1000) as i64,
        _ => at as i64,
    })
}

/// GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]: the value, as GET answers it; with an option, then sets
/// the key's deadline as EXPIRE (or PERSIST) would.
pub async fn getex(node: &NodeContext, args: &[Bytes], mode: ValueMode) -> Reply {
    let key = &args[1];
    let change = match &args[2..] {
        [] => None,
        [option] if option.eq_ignore_ascii_case(b"PERSIST") => Some(None),
        [option, value] => match Deadline::from_option(&option.to_ascii_uppercase(), value) {
            Some(Ok(d)) => match positive(d, "getex") {
                Ok(at) => Some(Some(at)),
                Err(r) => return r,
            },
            Some(Err(r)) => return r,
            None => return syntax_error(),
        },
        _ => return syntax_error(),
    };
    if let Err(r) = check_key(node, key) {
        return r;
    }
    let read = match node.coordinator.get(key, None).await {
        Ok(read) => read,
        Err(e) => return coord_error(e),
    };
    if read.kind.is_some_and(|k| k.redis_type() != "string") {
        return Reply::error(crate::crdt::OpError::WrongType.to_string());
    }
    let found = read.kind.is_some();
    let reply = super::get::read_reply(node, key, read, mode);
    if reply.is_error() || !found {
        return reply;
    }
    if let Some(at_ms) = change {
        let op = Op::Expire { at_ms, condition: Condition::Always };
        if let Err(e) = node.coordinator.apply(key.clone(), op, None).await {
            return coord_error(e);
        }
    }
    reply
}
