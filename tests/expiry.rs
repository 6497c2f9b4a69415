//! Expiry over real nodes: SET EX and its family, EXPIRE and its conditions, TTL and PERSIST on every kind of key
//! with Redis's replies; and on a cluster, a key expires through every node, a replica that missed the EXPIRE
//! does not bring the value back, and the expired key is reaped like a deleted one.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, start_cluster, wait_members};

type Conn = redis::aio::MultiplexedConnection;

async fn cmd<T: redis::FromRedisValue>(con: &mut Conn, args: &[&str]) -> T {
    redis::cmd(args[0]).arg(&args[1..]).query_async(con).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

async fn err(con: &mut Conn, args: &[&str]) -> String {
    let r: redis::RedisResult<redis::Value> = redis::cmd(args[0]).arg(&args[1..]).query_async(con).await;
    r.expect_err(&format!("{args:?} should fail")).to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn strings_expire_as_in_redis() {
    let node = TestNode::start(&["--values", "plain"]);
    let mut c = node.conn().await;
    let _: () = cmd(&mut c, &["SET", "k", "v", "EX", "100"]).await;
    assert!((99..=100).contains(&cmd::<i64>(&mut c, &["TTL", "k"]).await));
    assert!((98_000..=100_000).contains(&cmd::<i64>(&mut c, &["PTTL", "k"]).await));
    let at: i64 = cmd(&mut c, &["PEXPIRETIME", "k"]).await;
    assert!((at - now_ms() - 100_000).abs() < 2_000, "{at}");
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRETIME", "k"]).await, at / 1000);
    // KEEPTTL keeps the deadline; a plain SET clears it.
    let _: () = cmd(&mut c, &["SET", "k", "v2", "KEEPTTL"]).await;
    assert!(cmd::<i64>(&mut c, &["TTL", "k"]).await > 90);
    let _: () = cmd(&mut c, &["SET", "k", "v3"]).await;
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "k"]).await, -1);
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "missing"]).await, -2);
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "missing", "10"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["PERSIST", "missing"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["PERSIST", "k"]).await, 0, "k has no deadline");
    // A write that found nothing stores nothing (no empty row that nothing would ever reap).
    for args in [["EXPIRE", "missing", "10"], ["PERSIST", "missing", ""], ["SREM", "missing", "m"]] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let _: i64 = cmd(&mut c, &args).await;
        let local: redis::Value = cmd(&mut c, &["ADMIN", "LOCALGET", "missing"]).await;
        assert_eq!(common::parse_local_get(local).1, None, "{args:?} stored a state");
    }

    // Redis's errors.
    assert!(err(&mut c, &["SET", "k", "v", "EX", "0"]).await.contains("invalid expire time in 'set' command"));
    assert!(err(&mut c, &["SET", "k", "v", "PX", "-5"]).await.contains("invalid expire time"));
    assert!(err(&mut c, &["SET", "k", "v", "EX", "ten"]).await.contains("not an integer"));
    assert!(err(&mut c, &["SET", "k", "v", "EX", "10", "KEEPTTL"]).await.contains("syntax error"));
    assert!(err(&mut c, &["SET", "k", "v", "EX", "10", "PX", "10"]).await.contains("syntax error"));
    assert!(err(&mut c, &["SET", "k", "v", "EX", "9223372036854775807"]).await.contains("invalid expire time"));
    assert!(err(&mut c, &["SETEX", "k", "0", "v"]).await.contains("invalid expire time in 'setex' command"));
    assert!(err(&mut c, &["EXPIRE", "k", "10", "GT", "LT"]).await.contains("GT and LT"));
    assert!(err(&mut c, &["EXPIRE", "k", "10", "NX", "XX"]).await.contains("NX and XX"));
    assert!(err(&mut c, &["EXPIRE", "k", "10", "SOON"]).await.contains("Unsupported option SOON"));
    assert!(err(&mut c, &["EXPIRE", "k", "9223372036854775807"]).await.contains("invalid expire time"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "k"]).await.as_deref(), Some("v3"), "left as it was");

    // Conditions.
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "k", "100", "XX"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "k", "100", "GT"]).await, 0, "no deadline is later than any");
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "k", "100", "NX"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "k", "50", "NX"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "k", "50", "GT"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "k", "200", "GT"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "k", "150", "LT"]).await, 1);
    assert!((149..=150).contains(&cmd::<i64>(&mut c, &["TTL", "k"]).await));
    assert_eq!(cmd::<i64>(&mut c, &["PERSIST", "k"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "k"]).await, -1);

    // GETEX reads and sets the deadline.
    assert_eq!(cmd::<Option<String>>(&mut c, &["GETEX", "k", "EX", "30"]).await.as_deref(), Some("v3"));
    assert!((29..=30).contains(&cmd::<i64>(&mut c, &["TTL", "k"]).await));
    assert_eq!(cmd::<Option<String>>(&mut c, &["GETEX", "k", "PERSIST"]).await.as_deref(), Some("v3"));
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "k"]).await, -1);
    assert_eq!(cmd::<Option<String>>(&mut c, &["GETEX", "missing", "EX", "30"]).await, None);

    // A deadline in the past deletes.
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "k", "-1"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "k"]).await, 0);

    // Once the deadline passes the key is gone for every command, and a new write starts it afresh.
    let _: () = cmd(&mut c, &["PSETEX", "short", "300", "v"]).await;
    let _: () = cmd(&mut c, &["SET", "other", "v", "PXAT", &(now_ms() + 300).to_string()]).await;
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "short", "other"]).await, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "short"]).await, None);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "short", "other"]).await, 0);
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "short"]).await, "none");
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "short"]).await, -2);
    let keys: Vec<String> = cmd(&mut c, &["KEYS", "*"]).await;
    assert!(!keys.contains(&"short".to_string()) && !keys.contains(&"other".to_string()), "{keys:?}");
    assert_eq!(cmd::<i64>(&mut c, &["SETNX", "short", "again"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "short"]).await, -1);

    // redis-py's lock(): SET NX PX, refused while held, free again after its deadline.
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "lock", "a", "NX", "PX", "300"]).await.as_deref(), Some("OK"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "lock", "b", "NX", "PX", "300"]).await, None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "lock", "b", "NX", "PX", "300"]).await.as_deref(), Some("OK"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "lock", "c", "GET", "EX", "5"]).await.as_deref(), Some("b"));
    assert!((4..=5).contains(&cmd::<i64>(&mut c, &["TTL", "lock"]).await));
}

#[tokio::test]
async fn every_kind_of_key_expires_and_what_is_added_to_it_expires_with_it() {
    let node = TestNode::start(&["--values", "plain"]);
    let mut c = node.conn().await;
    let _: i64 = cmd(&mut c, &["INCR", "counter"]).await;
    let _: i64 = cmd(&mut c, &["SADD", "set", "a"]).await;
    let _: i64 = cmd(&mut c, &["HSET", "hash", "f", "v"]).await;
    let _: i64 = cmd(&mut c, &["RPUSH", "list", "a"]).await;
    let _: i64 = cmd(&mut c, &["ZADD", "zset", "1", "a"]).await;
    let keys = ["counter", "set", "hash", "list", "zset"];
    for key in keys {
        assert_eq!(cmd::<i64>(&mut c, &["PEXPIRE", key, "600"]).await, 1, "{key}");
    }
    // Writes to an expiring key keep its deadline (Redis: only a SET clears it).
    assert_eq!(cmd::<i64>(&mut c, &["INCR", "counter"]).await, 2);
    let _: i64 = cmd(&mut c, &["SADD", "set", "b"]).await;
    let _: i64 = cmd(&mut c, &["HSET", "hash", "g", "w"]).await;
    let _: i64 = cmd(&mut c, &["LPUSH", "list", "b"]).await;
    let _: i64 = cmd(&mut c, &["ZINCRBY", "zset", "2", "b"]).await;
    for key in keys {
        let ttl: i64 = cmd(&mut c, &["PTTL", key]).await;
        assert!((1..=600).contains(&ttl), "{key}: {ttl}");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "counter", "set", "hash", "list", "zset"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["SCARD", "set"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["HLEN", "hash"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["LLEN", "list"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["ZCARD", "zset"]).await, 0);
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "counter"]).await, None);
    // A write after the deadline starts from nothing, with no deadline: INCR counts from 0 again.
    assert_eq!(cmd::<i64>(&mut c, &["INCR", "counter"]).await, 1);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["SMEMBERS", "set"]).await, Vec::<String>::new());
    let _: i64 = cmd(&mut c, &["SADD", "set", "c"]).await;
    assert_eq!(cmd::<Vec<String>>(&mut c, &["SMEMBERS", "set"]).await, vec!["c"]);
    assert_eq!(cmd::<i64>(&mut c, &["TTL", "set"]).await, -1);
    // A key of another kind: SET turns it into a string without a deadline; TYPE follows.
    assert_eq!(cmd::<i64>(&mut c, &["EXPIRE", "set", "100"]).await, 1);
    assert!(cmd::<i64>(&mut c, &["TTL", "set"]).await > 0);
}

#[tokio::test]
async fn a_key_expires_through_every_node_and_a_replica_that_missed_the_expire_never_brings_it_back() {
    let mut nodes = start_cluster(3, &["--anti-entropy-interval-ms", "20", "--tombstone-grace-secs", "1"]).await;
    let mut c = nodes[0].conn().await;
    let _: () = cmd(&mut c, &["SET", "session", "data"]).await;
    let _: () = cmd(&mut c, &["SET", "kept", "k"]).await;
    // A rate limiter's pattern, through three different nodes.
    let mut via: Vec<Conn> = Vec::new();
    for node in &nodes {
        via.push(node.conn().await);
    }
    assert_eq!(cmd::<i64>(&mut via[0], &["INCR", "hits"]).await, 1);
    assert_eq!(cmd::<i64>(&mut via[1], &["PEXPIRE", "hits", "1500"]).await, 1);
    assert_eq!(cmd::<i64>(&mut via[2], &["INCR", "hits"]).await, 2);
    assert!(cmd::<i64>(&mut via[0], &["PTTL", "hits"]).await > 0);

    // c3 is down while the session gets its deadline: its copy has none.
    nodes[2].stop();
    assert_eq!(cmd::<i64>(&mut c, &["PEXPIRE", "session", "1500"]).await, 1);
    nodes[2].restart();
    wait_members(&nodes, 3).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;

    // Expired through every node, and it stays so while anti-entropy and hints spread the deadline and reaping
    // removes the key everywhere; live data is never touched.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut reaped = true;
        for node in &nodes {
            let mut conn = node.conn().await;
            for key in ["session", "hits"] {
                let (values, _) = common::get(&mut conn, key).await;
                assert!(values.is_empty(), "{} answered the expired {key}: {values:?}", node.node_id);
                let local: redis::Value =
                    redis::cmd("ADMIN").arg("LOCALGET").arg(key).query_async(&mut conn).await.unwrap();
                reaped &= common::parse_local_get(local).1.is_none();
            }
        }
        if reaped {
            break;
        }
        assert!(Instant::now() < deadline, "the expired keys were never reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in &nodes {
        assert_eq!(common::local_get(node, "kept").await, vec!["k"], "live data is never reaped");
    }
    // The counter starts afresh after its deadline.
    assert_eq!(cmd::<i64>(&mut via[1], &["INCR", "hits"]).await, 1);
}

#[tokio::test]
async fn expired_keys_are_dropped_in_the_background_and_dbsize_stops_counting_them() {
    let node = TestNode::start(&["--anti-entropy-interval-ms", "20", "--tombstone-grace-secs", "1"]);
    let mut c = node.conn().await;
    let _: () = cmd(&mut c, &["SET", "kept", "k"]).await;
    for i in 0..50 {
        let _: () = cmd(&mut c, &["SET", &format!("cache{i}"), "v", "PX", "300"]).await;
    }
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]).await, 51);
    // No read touches them: the sweep alone removes the values, then reaping removes the keys.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dbsize: i64 = cmd(&mut c, &["DBSIZE"]).await;
        let local: redis::Value = cmd(&mut c, &["ADMIN", "LOCALGET", "cache7"]).await;
        if dbsize == 1 && common::parse_local_get(local).1.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "expired keys still counted ({dbsize}) or stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(common::local_get(&node, "kept").await, vec!["k"], "live data is never swept");
}
