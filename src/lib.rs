//! dynamo-kv: a Dynamo-style (DeCandia et al., SOSP 2007) highly available key-value store that speaks RESP.
//!
//! Module map, lowest layer first. A module imports only from layers below it.
//!
//! | layer | module          | owns                                                                          |
//! |-------|-----------------|-------------------------------------------------------------------------------|
//! | L0    | [`sys`]         | sockets, wall clock, randomness, blocking threads (simulated under `sim`)      |
//! | L0    | [`config`]      | every setting; flags > `DYNAMO_KV_*` env > TOML file > defaults                 |
//! | L0    | [`versioning`]  | dots, version vectors, sibling sets (DVV update/merge), context tokens          |
//! | L0    | [`crdt`]        | typed keys over sibling sets: counters (PN-counter entries), kind resolution  |
//! | L0    | [`ring`]        | Q partitions, weighted zone-aware claim, preference lists                       |
//! | L0    | [`membership`]  | gossiped cluster state (members, versioned ring, transitions), gossip protocol |
//! | L0/L1 | [`resp`]        | RESP request framing with limits and inline commands; RESP2/RESP3 replies       |
//! | L1    | [`storage`]     | engine trait (fjall, memory), key layout, durability modes, node epoch          |
//! | L1    | [`tls`]         | PEM files into rustls: client-port TLS, mutual TLS under a CA for peers        |
//! | L1    | [`rpc`]         | internal protocol: frames, messages, handshake, peer connections (TLS or not)  |
//! | L2    | [`cluster`]     | drives gossip over rpc, persists the state, routing view, local liveness       |
//! | L3    | [`replication`] | handoff of key ranges during transitions; hinted-handoff delivery              |
//! | L3    | [`antientropy`] | incremental Merkle leaves, top-down exchanges, tombstone reaping after proof   |
//! | L4    | [`coordinator`] | quorum reads and writes over preference lists, forwarding, read repair         |
//! | L5    | [`commands`]    | one handler per RESP command; never sees a socket or a peer                     |
//! | L5    | [`server`]      | client listener and connections, pipelining, protocol errors                    |
//! | L5    | [`http`]        | the HTTP port: web console, JSON admin API (the views of `commands`), metrics   |
//! | top   | [`node`]        | wiring, peer service, start-up, graceful shutdown                               |
//!
//! `main.rs` turns the command line into [`config::Config`]s, sets up tracing and runs [`node::Node`]s (several for
//! `dev`); `admin.rs` prints the ADMIN views as tables.

pub mod antientropy;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod coordinator;
pub mod crdt;
pub mod http;
pub mod membership;
pub mod node;
pub mod replication;
pub mod resp;
pub mod ring;
pub mod rpc;
pub mod server;
pub mod storage;
pub mod sys;
pub mod tls;
pub mod versioning;
