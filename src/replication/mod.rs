//! Replication (L3): what a node does as a replica of a key ([`replica`]: the reads, merges and hints coordinators
//! ask of it), and moving data between replicas outside the client path: [`handoff`], the partition transfers of a
//! membership transition, and [`hinted`], the delivery of hints held for replicas that were unreachable.

pub mod handoff;
pub mod hinted;
pub mod replica;
pub mod transfer;
