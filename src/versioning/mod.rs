//! Versioning (L0, pure): dots, version vectors, per-key sibling sets and the client context token.
//!
//! See [`siblings`] for the update and merge rules every other layer relies on.

pub mod clock;
pub mod context;
pub mod siblings;

pub use clock::{Actor, Dot, Entry, VersionVector};
pub use context::{ContextError, ContextKey, Token};
pub use siblings::{Expiry, RowKind, Siblings, Value, Version};
