//! Replication (L3): moving data between replicas outside the client path. Today: [`handoff`], the partition
//! transfers of a membership transition.

pub mod handoff;
