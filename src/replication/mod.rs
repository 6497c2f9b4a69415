//! Replication (L3): moving data between replicas outside the client path: [`handoff`], the partition transfers
//! of a membership transition, and [`hinted`], the delivery of hints held for replicas that were unreachable.

pub mod handoff;
pub mod hinted;
pub mod transfer;
