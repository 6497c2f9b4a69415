//! Typed keys (L0, pure): what a key's versions mean once the kind of value it holds is known.
//!
//! Every key is one [`Siblings`] state, whatever it holds, so replication, read repair, hints, handoff and
//! anti-entropy merge every kind with the same join. The kinds differ in what a write covers and in how a read
//! folds the surviving versions:
//!
//! * a **string** key's live versions are siblings (the client sees them all, with a context to resolve them);
//! * a **counter** key's live versions are per-actor entries whose sum is the value ([`counter`]).
//!
//! When writes of two kinds were concurrent, the kind of the newest live version (coordinator clock, ties by dot)
//! decides what the key is: the same answer on every replica holding the same versions. Versions of the other kind
//! stay hidden until a later write covers them.

pub mod counter;

use bytes::Bytes;

use crate::versioning::{Siblings, Value};

/// The kind of value a key holds. Both are Redis strings to clients (`TYPE` says `string`): a counter is a
/// string whose writes are increments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Written by SET: concurrent writes are siblings.
    String,
    /// Written by INCR and its family: concurrent increments add up.
    Counter,
}

impl Kind {
    /// The kind of a value.
    pub fn of(value: &Value) -> Kind {
        match value {
            Value::String(_) => Kind::String,
            Value::Counter(_) => Kind::Counter,
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
    /// The values a client sees: a string key's live siblings, or a counter's sum as its decimal string.
    pub values: Vec<Bytes>,
    /// Of those, the one a plain-mode read answers (the newest sibling, or the counter's value).
    pub newest: Option<Bytes>,
}

/// Folds a key's state into what a read answers.
pub fn fold(state: &Siblings) -> Folded {
    match kind(state) {
        None => Folded::default(),
        Some(Kind::String) => {
            Folded { values: state.live_values().cloned().collect(), newest: state.newest_live().cloned() }
        }
        Some(Kind::Counter) => {
            let value = Bytes::from(counter::total(state).to_string());
            Folded { values: vec![value.clone()], newest: Some(value) }
        }
    }
}
