//! dynamo-kv: a Dynamo-style key-value store that speaks RESP.
pub mod config;
pub mod storage;
pub mod versioning;
