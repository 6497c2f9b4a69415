//! Typed keys over real nodes: counters (INCR and its family) on one node with Redis's reply shapes and errors, and
//! on a cluster, where concurrent increments through every node all count, a killed replica loses none, and a DEL
//! removes only what it saw.

mod common;

use common::{TestNode, start_cluster};
use futures::future::join_all;

async fn cmd<T: redis::FromRedisValue>(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> T {
    redis::cmd(args[0]).arg(&args[1..]).query_async(con).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// A seeded xorshift generator: `next(n)` is a number below `n`.
fn seeded(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

async fn err(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> String {
    let r: redis::RedisResult<redis::Value> = redis::cmd(args[0]).arg(&args[1..]).query_async(con).await;
    r.expect_err(&format!("{args:?} should fail")).to_string()
}

#[tokio::test]
async fn counters_answer_as_redis_does() {
    let node = TestNode::start(&["--values", "plain"]);
    let mut c = node.conn().await;
    assert_eq!(cmd::<i64>(&mut c, &["INCR", "n"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["INCRBY", "n", "41"]).await, 42);
    assert_eq!(cmd::<i64>(&mut c, &["DECR", "n"]).await, 41);
    assert_eq!(cmd::<i64>(&mut c, &["DECRBY", "n", "-9"]).await, 50);
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "n"]).await.as_deref(), Some("50"));
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "n"]).await, "string");
    assert_eq!(cmd::<i64>(&mut c, &["STRLEN", "n"]).await, 2);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "n"]).await, 1);

    // A string that is an integer counts from its value; anything else is refused and left as it was.
    let _: () = cmd(&mut c, &["SET", "s", "-7"]).await;
    assert_eq!(cmd::<i64>(&mut c, &["INCRBY", "s", "10"]).await, 3);
    let _: () = cmd(&mut c, &["SET", "t", "seven"]).await;
    assert!(err(&mut c, &["INCR", "t"]).await.contains("value is not an integer or out of range"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "t"]).await.as_deref(), Some("seven"));
    for bad in ["01", "+1", " 1", "1.5", ""] {
        let _: () = cmd(&mut c, &["SET", "u", bad]).await;
        assert!(err(&mut c, &["INCR", "u"]).await.contains("not an integer"), "{bad:?}");
    }
    assert!(err(&mut c, &["INCRBY", "n", "x"]).await.contains("not an integer"));
    assert!(err(&mut c, &["INCRBY", "n", "9223372036854775808"]).await.contains("not an integer"));

    // Overflow is refused in both directions and changes nothing.
    assert_eq!(cmd::<i64>(&mut c, &["INCRBY", "big", "9223372036854775807"]).await, i64::MAX);
    assert!(err(&mut c, &["INCR", "big"]).await.contains("increment or decrement would overflow"));
    assert!(err(&mut c, &["DECRBY", "big", "-9223372036854775808"]).await.contains("decrement would overflow"));
    assert_eq!(cmd::<i64>(&mut c, &["DECRBY", "big", "1"]).await, i64::MAX - 1);

    // A SET makes a counter a string again; a DEL removes it, and it counts from 0 after.
    let _: () = cmd(&mut c, &["SET", "n", "5"]).await;
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "n"]).await.as_deref(), Some("5"));
    assert_eq!(cmd::<i64>(&mut c, &["INCR", "n"]).await, 6);
    assert_eq!(cmd::<i64>(&mut c, &["DEL", "n"]).await, 1);
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "n"]).await, None);
    assert_eq!(cmd::<i64>(&mut c, &["INCR", "n"]).await, 1);

    assert!(err(&mut c, &["INCRBYFLOAT", "n", "1.5"]).await.contains("INCRBYFLOAT is not supported"));
    assert!(err(&mut c, &["INCR"]).await.contains("wrong number of arguments"));
    assert!(err(&mut c, &["INCRBY", "n"]).await.contains("wrong number of arguments"));

    // In the versioned mode a counter reads as one version, with a context that a SET can supersede it with.
    let _: () = cmd(&mut c, &["CLIENT", "VALUES", "VERSIONED"]).await;
    let (values, ctx) = common::get(&mut c, "n").await;
    assert_eq!(values, vec!["1".to_string()]);
    let _: () = cmd(&mut c, &["SET", "n", "x", "CONTEXT", &ctx.unwrap()]).await;
    assert_eq!(common::get(&mut c, "n").await.0, vec!["x".to_string()]);

    // Counters survive a restart.
    drop(c);
    let mut node = node;
    node.stop();
    node.restart();
    let mut c = node.conn().await;
    assert_eq!(cmd::<i64>(&mut c, &["INCR", "s"]).await, 4);
}

/// Many clients increment one counter through every node at once; a replica is killed halfway. Every
/// acknowledged increment counts exactly once, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_through_every_node_all_count() {
    let mut nodes = start_cluster(3, &["--values", "plain"]).await;
    const CLIENTS: usize = 12;
    const EACH: i64 = 40;
    let run = |nodes: &[TestNode], round: usize| {
        let urls: Vec<String> = nodes.iter().map(TestNode::url).collect();
        async move {
            let tasks = (0..CLIENTS).map(|i| {
                let url = urls[i % urls.len()].clone();
                async move {
                    let client = redis::Client::open(url).unwrap();
                    let mut c = common::connect(&client).await;
                    let (mut acked, mut failed) = (0i64, 0i64);
                    for j in 0..EACH {
                        let by = 1 + (i as i64 + j + round as i64) % 3;
                        match redis::cmd("INCRBY").arg("hits").arg(by).query_async::<i64>(&mut c).await {
                            Ok(_) => acked += by,
                            Err(_) => failed += by,
                        }
                    }
                    (acked, failed)
                }
            });
            join_all(tasks).await.into_iter().fold((0, 0), |(a, f), (x, y)| (a + x, f + y))
        }
    };
    let (acked1, failed1) = run(&nodes, 0).await;
    assert_eq!(failed1, 0, "no failure with every node up");
    nodes[2].kill9();
    let (acked2, failed2) = run(&nodes[..2], 1).await;
    let acked = acked1 + acked2;
    for node in &nodes[..2] {
        let mut c = node.conn().await;
        let value: i64 = cmd::<String>(&mut c, &["GET", "hits"]).await.parse().unwrap();
        assert!(
            (acked..=acked + failed2).contains(&value),
            "value {value} is not between the acknowledged {acked} and {} with unknown outcomes",
            acked + failed2
        );
    }
    // The killed replica comes back and catches up (read repair, hints); a DEL through it removes what it read.
    nodes[2].restart();
    common::wait_members(&nodes, 3).await;
    let mut c = nodes[2].conn().await;
    let value: i64 = cmd::<String>(&mut c, &["GET", "hits"]).await.parse().unwrap();
    assert!((acked..=acked + failed2).contains(&value));
    assert_eq!(cmd::<i64>(&mut c, &["DEL", "hits"]).await, 1);
    let mut c0 = nodes[0].conn().await;
    assert_eq!(cmd::<Option<String>>(&mut c0, &["GET", "hits"]).await, None);
    assert_eq!(cmd::<i64>(&mut c0, &["INCR", "hits"]).await, 1);
}

#[tokio::test]
async fn sets_answer_as_redis_does() {
    let node = TestNode::start(&["--values", "plain"]);
    let mut c = node.conn().await;
    assert_eq!(cmd::<i64>(&mut c, &["SADD", "s", "a", "b", "a", "c"]).await, 3);
    assert_eq!(cmd::<i64>(&mut c, &["SADD", "s", "c", "d"]).await, 1);
    let mut members: Vec<String> = cmd(&mut c, &["SMEMBERS", "s"]).await;
    members.sort();
    assert_eq!(members, ["a", "b", "c", "d"]);
    assert_eq!(cmd::<i64>(&mut c, &["SCARD", "s"]).await, 4);
    assert_eq!(cmd::<i64>(&mut c, &["SISMEMBER", "s", "b"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["SISMEMBER", "s", "z"]).await, 0);
    assert_eq!(cmd::<Vec<i64>>(&mut c, &["SMISMEMBER", "s", "a", "z", "d"]).await, vec![1, 0, 1]);
    assert_eq!(cmd::<i64>(&mut c, &["SREM", "s", "a", "z"]).await, 1);
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "s"]).await, "set");
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "s"]).await, 1);
    let one: String = cmd(&mut c, &["SRANDMEMBER", "s"]).await;
    assert!(["b", "c", "d"].contains(&one.as_str()));
    assert_eq!(cmd::<Vec<String>>(&mut c, &["SRANDMEMBER", "s", "10"]).await.len(), 3);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["SRANDMEMBER", "s", "-7"]).await.len(), 7);
    assert_eq!(cmd::<i64>(&mut c, &["SCARD", "s"]).await, 3, "SRANDMEMBER removes nothing");
    let popped: String = cmd(&mut c, &["SPOP", "s"]).await;
    let rest: Vec<String> = cmd(&mut c, &["SPOP", "s", "5"]).await;
    assert_eq!(rest.len(), 2);
    assert!(!rest.contains(&popped));
    assert_eq!(cmd::<Option<String>>(&mut c, &["SPOP", "s"]).await, None);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "s"]).await, 0, "an emptied set is no key");
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "s"]).await, "none");
    assert_eq!(cmd::<Vec<String>>(&mut c, &["SMEMBERS", "missing"]).await, Vec::<String>::new());
    assert_eq!(cmd::<i64>(&mut c, &["SREM", "missing", "x"]).await, 0);

    // One key, one type: Redis's WRONGTYPE both ways, and DEL or SET replace any type.
    let _: i64 = cmd(&mut c, &["SADD", "t", "x"]).await;
    for args in [&["GET", "t"][..], &["INCR", "t"], &["STRLEN", "t"]] {
        let e = err(&mut c, args).await;
        assert!(e.contains("WRONGTYPE"), "{args:?}: {e}");
    }
    assert_eq!(cmd::<Vec<Option<String>>>(&mut c, &["MGET", "t", "n"]).await, vec![None, None]);
    let _: () = cmd(&mut c, &["SET", "str", "v"]).await;
    for args in [
        &["SADD", "str", "x"][..],
        &["SMEMBERS", "str"],
        &["SREM", "str", "x"],
        &["SPOP", "str"],
        &["SRANDMEMBER", "str"],
    ] {
        let e = err(&mut c, args).await;
        assert!(e.contains("WRONGTYPE"), "{args:?}: {e}");
    }
    assert_eq!(cmd::<i64>(&mut c, &["DEL", "t"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "t"]).await, 0);
    let _: () = cmd(&mut c, &["SET", "str", "v2"]).await;
    let _: i64 = cmd(&mut c, &["SADD", "u", "x"]).await;
    let _: () = cmd(&mut c, &["SET", "u", "now a string"]).await;
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "u"]).await, "string");

    // SCAN's TYPE filter knows sets; a set survives a restart.
    let (_, keys): (String, Vec<String>) = cmd(&mut c, &["SCAN", "0", "COUNT", "1000", "TYPE", "set"]).await;
    assert!(keys.is_empty(), "{keys:?}");
    let _: i64 = cmd(&mut c, &["SADD", "kept", "m1", "m2"]).await;
    let (_, keys): (String, Vec<String>) = cmd(&mut c, &["SCAN", "0", "COUNT", "1000", "TYPE", "set"]).await;
    assert_eq!(keys, ["kept"]);
    drop(c);
    let mut node = node;
    node.stop();
    node.restart();
    let mut c = node.conn().await;
    assert_eq!(cmd::<i64>(&mut c, &["SCARD", "kept"]).await, 2);
}

/// Adds through every node at once all land; a remove removes what it read and nothing it did not; the set reads
/// the same through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_adds_through_every_node_all_land() {
    let nodes = start_cluster(3, &[]).await;
    let tasks = (0..9).map(|i| {
        let url = nodes[i % 3].url();
        async move {
            let client = redis::Client::open(url).unwrap();
            let mut c = common::connect(&client).await;
            for j in 0..30 {
                let _: i64 =
                    redis::cmd("SADD").arg("cart").arg(format!("item-{i}-{j}")).query_async(&mut c).await.unwrap();
            }
        }
    });
    join_all(tasks).await;
    let mut cons = Vec::new();
    for n in &nodes {
        cons.push(n.conn().await);
    }
    for c in cons.iter_mut() {
        assert_eq!(cmd::<i64>(c, &["SCARD", "cart"]).await, 270);
    }
    assert_eq!(cmd::<i64>(&mut cons[1], &["SREM", "cart", "item-0-0", "item-1-1", "nope"]).await, 2);
    assert_eq!(cmd::<i64>(&mut cons[2], &["SISMEMBER", "cart", "item-0-0"]).await, 0);
    assert_eq!(cmd::<i64>(&mut cons[0], &["SADD", "cart", "item-0-0"]).await, 1);
    for c in cons.iter_mut() {
        assert_eq!(cmd::<i64>(c, &["SCARD", "cart"]).await, 269);
    }
    // SRANDMEMBER with a small count answers from a sample of the set: distinct live members, from across it.
    let live = |m: &str| m.starts_with("item-") && m != "item-1-1";
    for c in cons.iter_mut() {
        let mut picked: Vec<String> = cmd(c, &["SRANDMEMBER", "cart", "20"]).await;
        assert!(picked.iter().all(|m| live(m)), "{picked:?}");
        picked.sort();
        picked.dedup();
        assert_eq!(picked.len(), 20);
        let mut singles = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let one: String = cmd(c, &["SRANDMEMBER", "cart"]).await;
            assert!(live(&one), "{one}");
            singles.insert(one);
        }
        assert!(singles.len() >= 10, "40 picks found only {singles:?}");
    }
}

/// A set or hash is a row per element: a `DEL` through one node removes every member it saw at once, the next set
/// on the key starts empty on every node, and a remove that empties a collection frees the key for another type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_key_removals_of_collections_clear_what_they_saw() {
    let nodes = start_cluster(3, &[]).await;
    let mut cons = Vec::new();
    for n in &nodes {
        cons.push(n.conn().await);
    }
    let members: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let mut sadd = vec!["SADD", "big"];
    sadd.extend(members.iter().map(String::as_str));
    assert_eq!(cmd::<i64>(&mut cons[0], &sadd).await, 200);
    let _: i64 = cmd(&mut cons[0], &["HSET", "h", "f", "1", "g", "2"]).await;
    assert_eq!(cmd::<i64>(&mut cons[1], &["DEL", "big", "h"]).await, 2);
    for c in cons.iter_mut() {
        assert_eq!(cmd::<i64>(c, &["EXISTS", "big"]).await, 0);
        assert_eq!(cmd::<i64>(c, &["SCARD", "big"]).await, 0);
        assert_eq!(cmd::<String>(c, &["TYPE", "h"]).await, "none");
    }
    // A new set on the key holds only what was added since.
    assert_eq!(cmd::<i64>(&mut cons[2], &["SADD", "big", "m7", "fresh"]).await, 2);
    assert_eq!(cmd::<i64>(&mut cons[2], &["HSET", "h", "g", "3"]).await, 1);
    for c in cons.iter_mut() {
        let mut got: Vec<String> = cmd(c, &["SMEMBERS", "big"]).await;
        got.sort();
        assert_eq!(got, vec!["fresh", "m7"]);
        assert_eq!(cmd::<Vec<String>>(c, &["HKEYS", "h"]).await, vec!["g"]);
    }
    // Overwritten by a string, deleted, then a set again: still nothing old. (A blind SET supersedes what its
    // coordinator holds: through the node that coordinated the last SADD, that is the whole set.)
    let _: () = cmd(&mut cons[2], &["SET", "big", "text"]).await;
    let e = err(&mut cons[1], &["SADD", "big", "x"]).await;
    assert!(e.contains("WRONGTYPE"), "{e}");
    assert_eq!(cmd::<i64>(&mut cons[1], &["DEL", "big"]).await, 1);
    assert_eq!(cmd::<i64>(&mut cons[1], &["SADD", "big", "x"]).await, 1);
    assert_eq!(cmd::<Vec<String>>(&mut cons[2], &["SMEMBERS", "big"]).await, vec!["x"]);
    // The remove that empties a collection removes the key: another type may take it.
    assert_eq!(cmd::<i64>(&mut cons[0], &["SREM", "big", "x"]).await, 1);
    assert_eq!(cmd::<i64>(&mut cons[0], &["HDEL", "h", "g"]).await, 1);
    assert_eq!(cmd::<i64>(&mut cons[1], &["LPUSH", "big", "a"]).await, 1);
    assert_eq!(cmd::<i64>(&mut cons[2], &["INCR", "h"]).await, 1);
}

#[tokio::test]
async fn hashes_answer_as_redis_does() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    assert_eq!(cmd::<i64>(&mut c, &["HSET", "h", "name", "ann", "age", "40", "name", "bea"]).await, 2);
    assert_eq!(cmd::<Option<String>>(&mut c, &["HGET", "h", "name"]).await.as_deref(), Some("bea"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["HGET", "h", "none"]).await, None);
    assert_eq!(cmd::<i64>(&mut c, &["HSET", "h", "age", "41", "city", "Oslo"]).await, 1);
    let _: () = cmd(&mut c, &["HMSET", "h", "zip", "0150"]).await;
    assert_eq!(cmd::<i64>(&mut c, &["HSETNX", "h", "zip", "9999"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["HSETNX", "h", "country", "NO"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["HLEN", "h"]).await, 5);
    assert_eq!(
        cmd::<Vec<Option<String>>>(&mut c, &["HMGET", "h", "age", "nope", "zip"]).await,
        vec![Some("41".into()), None, Some("0150".into())]
    );
    let all: std::collections::HashMap<String, String> = cmd(&mut c, &["HGETALL", "h"]).await;
    assert_eq!(all.len(), 5);
    assert_eq!(all["city"], "Oslo");
    assert_eq!(cmd::<Vec<String>>(&mut c, &["HKEYS", "h"]).await, ["age", "city", "country", "name", "zip"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["HVALS", "h"]).await.len(), 5);
    assert_eq!(cmd::<i64>(&mut c, &["HEXISTS", "h", "city"]).await, 1);
    assert_eq!(cmd::<i64>(&mut c, &["HSTRLEN", "h", "city"]).await, 4);
    assert_eq!(cmd::<i64>(&mut c, &["HINCRBY", "h", "age", "2"]).await, 43);
    assert_eq!(cmd::<i64>(&mut c, &["HINCRBY", "h", "visits", "-3"]).await, -3);
    assert!(err(&mut c, &["HINCRBY", "h", "name", "1"]).await.contains("hash value is not an integer"));
    assert!(err(&mut c, &["HINCRBY", "h", "age", "x"]).await.contains("not an integer"));
    assert!(err(&mut c, &["HINCRBYFLOAT", "h", "age", "1.5"]).await.contains("not supported"));
    assert!(err(&mut c, &["HSET", "h", "a"]).await.contains("wrong number of arguments"));
    assert!(err(&mut c, &["HSET", "h", "a", "1", "b"]).await.contains("wrong number of arguments"));
    assert_eq!(cmd::<i64>(&mut c, &["HDEL", "h", "name", "nope", "age"]).await, 2);
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "h"]).await, "hash");
    let e = err(&mut c, &["SADD", "h", "x"]).await;
    assert!(e.contains("WRONGTYPE"), "{e}");
    let _: i64 = cmd(&mut c, &["SADD", "s", "x"]).await;
    let e = err(&mut c, &["HGET", "s", "x"]).await;
    assert!(e.contains("WRONGTYPE"), "{e}");
    assert_eq!(cmd::<i64>(&mut c, &["HDEL", "h", "city", "zip", "country", "visits"]).await, 4);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "h"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["HLEN", "h"]).await, 0);
}

#[tokio::test]
async fn lists_answer_as_redis_does() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    assert_eq!(cmd::<i64>(&mut c, &["LPUSH", "l", "a", "b", "c"]).await, 3);
    assert_eq!(cmd::<i64>(&mut c, &["RPUSH", "l", "x", "y"]).await, 5);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["LRANGE", "l", "0", "-1"]).await, ["c", "b", "a", "x", "y"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["LRANGE", "l", "-2", "100"]).await, ["x", "y"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["LRANGE", "l", "4", "2"]).await, Vec::<String>::new());
    assert_eq!(cmd::<i64>(&mut c, &["LLEN", "l"]).await, 5);
    assert_eq!(cmd::<Option<String>>(&mut c, &["LINDEX", "l", "-1"]).await.as_deref(), Some("y"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["LINDEX", "l", "9"]).await, None);
    assert_eq!(cmd::<Option<String>>(&mut c, &["LPOP", "l"]).await.as_deref(), Some("c"));
    assert_eq!(cmd::<Vec<String>>(&mut c, &["RPOP", "l", "2"]).await, ["y", "x"]);
    let _: i64 = cmd(&mut c, &["RPUSH", "l", "a", "b", "a"]).await;
    assert_eq!(cmd::<i64>(&mut c, &["LREM", "l", "0", "a"]).await, 3);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["LRANGE", "l", "0", "-1"]).await, ["b", "b"]);
    let _: () = cmd(&mut c, &["LTRIM", "l", "1", "-1"]).await;
    assert_eq!(cmd::<Vec<String>>(&mut c, &["LRANGE", "l", "0", "-1"]).await, ["b"]);
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "l"]).await, "list");
    assert!(err(&mut c, &["LRANGE", "l", "a", "1"]).await.contains("not an integer"));
    let e = err(&mut c, &["SADD", "l", "m"]).await;
    assert!(e.contains("WRONGTYPE"), "{e}");
    assert_eq!(cmd::<Option<String>>(&mut c, &["RPOP", "l"]).await.as_deref(), Some("b"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["RPOP", "l"]).await, None);
    assert_eq!(cmd::<Option<Vec<String>>>(&mut c, &["LPOP", "l", "3"]).await, None);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "l"]).await, 0);
}

/// A list driven by a seeded mix of every command that moves its ends (pushes and pops at both ends, LREM, LTRIM,
/// DEL) answers as a plain double-ended queue would, checked after every step: the store remembers where each
/// list's items begin and end, and reads an end's first item by a point read of that bound when it is still live,
/// so every way an end item can leave must send the next read past it.
#[tokio::test]
async fn list_ends_follow_every_way_items_leave() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let mut model = std::collections::VecDeque::<String>::new();
    let mut next = seeded(0x9e37_79b9_7f4a_7c15_u64);
    for step in 0..400 {
        let v = format!("v{}", next(6));
        match next(10) {
            0..=2 => {
                assert_eq!(cmd::<usize>(&mut c, &["LPUSH", "l", &v]).await, model.len() + 1);
                model.push_front(v);
            }
            3..=4 => {
                assert_eq!(cmd::<usize>(&mut c, &["RPUSH", "l", &v]).await, model.len() + 1);
                model.push_back(v);
            }
            5 => assert_eq!(cmd::<Option<String>>(&mut c, &["LPOP", "l"]).await, model.pop_front(), "step {step}"),
            6 => assert_eq!(cmd::<Option<String>>(&mut c, &["RPOP", "l"]).await, model.pop_back(), "step {step}"),
            7 => {
                // One occurrence from the head or the tail: often an end item.
                let (count, removed) = match next(2) {
                    0 => ("1", model.iter().position(|x| *x == v)),
                    _ => ("-1", model.iter().rposition(|x| *x == v)),
                };
                assert_eq!(cmd::<usize>(&mut c, &["LREM", "l", count, &v]).await, usize::from(removed.is_some()));
                if let Some(i) = removed {
                    model.remove(i);
                }
            }
            8 => {
                let _: () = cmd(&mut c, &["LTRIM", "l", "1", "-2"]).await;
                model.pop_front();
                model.pop_back();
            }
            _ if next(4) == 0 => {
                let _: i64 = cmd(&mut c, &["DEL", "l"]).await;
                model.clear();
            }
            _ => {}
        }
        let all: Vec<String> = cmd(&mut c, &["LRANGE", "l", "0", "-1"]).await;
        assert_eq!(all, Vec::from(model.clone()), "step {step}");
        assert_eq!(cmd::<usize>(&mut c, &["LLEN", "l"]).await, model.len(), "step {step}");
        assert_eq!(cmd::<Option<String>>(&mut c, &["LINDEX", "l", "0"]).await.as_ref(), model.front(), "step {step}");
    }
}

/// A DEL coordinated by another node clears the items whose ends this node remembers: its next pushes and pops
/// at either end go past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ends_follow_a_delete_through_another_node() {
    let nodes = start_cluster(3, &[]).await;
    let (mut a, mut b) = (nodes[0].conn().await, nodes[1].conn().await);
    for round in 0..5 {
        assert_eq!(cmd::<i64>(&mut a, &["RPUSH", "q", "x", "y", "z"]).await, 3, "round {round}");
        assert_eq!(cmd::<Option<String>>(&mut a, &["LPOP", "q"]).await.as_deref(), Some("x"));
        assert_eq!(cmd::<Option<String>>(&mut a, &["RPOP", "q"]).await.as_deref(), Some("z"));
        assert_eq!(cmd::<i64>(&mut b, &["DEL", "q"]).await, 1);
        assert_eq!(cmd::<i64>(&mut a, &["LPUSH", "q", "h"]).await, 1, "round {round}");
        assert_eq!(cmd::<i64>(&mut a, &["RPUSH", "q", "t"]).await, 2, "round {round}");
        assert_eq!(cmd::<Vec<String>>(&mut a, &["LRANGE", "q", "0", "-1"]).await, ["h", "t"]);
        assert_eq!(cmd::<Option<String>>(&mut a, &["LPOP", "q"]).await.as_deref(), Some("h"));
        assert_eq!(cmd::<Option<String>>(&mut a, &["RPOP", "q"]).await.as_deref(), Some("t"));
        assert_eq!(cmd::<Option<String>>(&mut a, &["RPOP", "q"]).await, None);
    }
}

/// Pushes through every node all land, each client's own in the order it pushed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pushes_through_every_node_all_land() {
    let nodes = start_cluster(3, &[]).await;
    let tasks = (0..6).map(|i| {
        let url = nodes[i % 3].url();
        async move {
            let client = redis::Client::open(url).unwrap();
            let mut c = common::connect(&client).await;
            for j in 0..25 {
                let _: i64 = redis::cmd("RPUSH").arg("q").arg(format!("{i}:{j}")).query_async(&mut c).await.unwrap();
            }
        }
    });
    join_all(tasks).await;
    let mut c = nodes[1].conn().await;
    let all: Vec<String> = cmd(&mut c, &["LRANGE", "q", "0", "-1"]).await;
    assert_eq!(all.len(), 150);
    for i in 0..6 {
        let mine: Vec<&String> = all.iter().filter(|v| v.starts_with(&format!("{i}:"))).collect();
        let expected: Vec<String> = (0..25).map(|j| format!("{i}:{j}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "client {i}'s pushes in order");
    }
    let mut c2 = nodes[2].conn().await;
    assert_eq!(cmd::<Vec<String>>(&mut c2, &["LRANGE", "q", "0", "-1"]).await, all, "one order on every node");
}

#[tokio::test]
async fn sorted_sets_answer_as_redis_does() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    assert_eq!(cmd::<i64>(&mut c, &["ZADD", "z", "1", "a", "2", "b", "3", "c"]).await, 3);
    assert_eq!(cmd::<i64>(&mut c, &["ZADD", "z", "CH", "5", "a", "2", "b", "0.5", "d"]).await, 2);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZRANGE", "z", "0", "-1"]).await, ["d", "b", "c", "a"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZRANGE", "z", "0", "1", "WITHSCORES"]).await, ["d", "0.5", "b", "2"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZRANGE", "z", "0", "0", "REV"]).await, ["a"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZRANGE", "z", "(1", "5", "BYSCORE", "LIMIT", "1", "5"]).await, ["c", "a"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZRANGE", "z", "+inf", "3", "BYSCORE", "REV"]).await, ["a", "c"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZRANGEBYSCORE", "z", "-inf", "(3"]).await, ["d", "b"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZREVRANGEBYSCORE", "z", "5", "3"]).await, ["a", "c"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZREVRANGE", "z", "0", "1"]).await, ["a", "c"]);
    assert_eq!(cmd::<i64>(&mut c, &["ZCOUNT", "z", "2", "+inf"]).await, 3);
    assert_eq!(cmd::<i64>(&mut c, &["ZCARD", "z"]).await, 4);
    assert_eq!(cmd::<Option<String>>(&mut c, &["ZSCORE", "z", "d"]).await.as_deref(), Some("0.5"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["ZSCORE", "z", "none"]).await, None);
    assert_eq!(
        cmd::<Vec<Option<String>>>(&mut c, &["ZMSCORE", "z", "a", "x"]).await,
        vec![Some("5".to_string()), None]
    );
    assert_eq!(cmd::<Option<i64>>(&mut c, &["ZRANK", "z", "c"]).await, Some(2));
    assert_eq!(cmd::<Option<i64>>(&mut c, &["ZREVRANK", "z", "c"]).await, Some(1));
    assert_eq!(cmd::<Option<i64>>(&mut c, &["ZRANK", "z", "none"]).await, None);
    assert_eq!(cmd::<String>(&mut c, &["ZINCRBY", "z", "2.5", "d"]).await, "3");
    assert_eq!(cmd::<String>(&mut c, &["ZADD", "z", "INCR", "1", "d"]).await, "4");
    assert_eq!(cmd::<Option<String>>(&mut c, &["ZADD", "z", "NX", "INCR", "1", "d"]).await, None);
    assert_eq!(cmd::<i64>(&mut c, &["ZADD", "z", "XX", "9", "nope"]).await, 0);
    assert_eq!(cmd::<i64>(&mut c, &["ZADD", "z", "GT", "CH", "1", "a", "6", "b"]).await, 1);
    assert!(err(&mut c, &["ZADD", "z", "NX", "XX", "1", "a"]).await.contains("not compatible"));
    assert!(err(&mut c, &["ZADD", "z", "GT", "LT", "1", "a"]).await.contains("not compatible"));
    assert!(err(&mut c, &["ZADD", "z", "x", "a"]).await.contains("not a valid float"));
    assert!(err(&mut c, &["ZADD", "z", "1", "a", "2"]).await.contains("syntax error"));
    assert!(err(&mut c, &["ZADD", "z", "INCR", "1", "a", "2", "b"]).await.contains("single increment"));
    assert!(err(&mut c, &["ZCOUNT", "z", "x", "1"]).await.contains("min or max is not a float"));
    assert!(err(&mut c, &["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"]).await.contains("LIMIT is only supported"));
    assert!(err(&mut c, &["ZINCRBY", "z", "nan", "a"]).await.contains("not a valid float"));
    assert_eq!(cmd::<i64>(&mut c, &["ZREM", "z", "c", "nope"]).await, 1);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZPOPMIN", "z"]).await, ["d", "4"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZPOPMAX", "z", "5"]).await, ["b", "6", "a", "5"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["ZPOPMIN", "z"]).await, Vec::<String>::new());
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "z"]).await, 0);
    let _: i64 = cmd(&mut c, &["ZADD", "z2", "1", "m"]).await;
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "z2"]).await, "zset");
    let e = err(&mut c, &["LPUSH", "z2", "x"]).await;
    assert!(e.contains("WRONGTYPE"), "{e}");
}

/// GETSET, GETDEL and SET ... GET answer what their read found and supersede exactly that.
#[tokio::test]
async fn get_and_write_in_one_command() {
    let node = TestNode::start(&["--values", "plain"]);
    let mut c = node.conn().await;
    assert_eq!(cmd::<Option<String>>(&mut c, &["GETSET", "g", "1"]).await, None);
    assert_eq!(cmd::<Option<String>>(&mut c, &["GETSET", "g", "2"]).await.as_deref(), Some("1"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "g", "3", "GET"]).await.as_deref(), Some("2"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "g", "4", "NX", "GET"]).await.as_deref(), Some("3"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "g"]).await.as_deref(), Some("3"), "NX did not write");
    assert_eq!(cmd::<Option<String>>(&mut c, &["GETDEL", "g"]).await.as_deref(), Some("3"));
    assert_eq!(cmd::<Option<String>>(&mut c, &["GETDEL", "g"]).await, None);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "g"]).await, 0);
    let _: i64 = cmd(&mut c, &["INCRBY", "n", "5"]).await;
    assert_eq!(cmd::<Option<String>>(&mut c, &["GETSET", "n", "0"]).await.as_deref(), Some("5"));
    let _: i64 = cmd(&mut c, &["SADD", "s", "m"]).await;
    let e = err(&mut c, &["GETDEL", "s"]).await;
    assert!(e.contains("WRONGTYPE"), "{e}");
    assert_eq!(cmd::<i64>(&mut c, &["SCARD", "s"]).await, 1, "nothing deleted");
    assert_eq!(cmd::<Option<String>>(&mut c, &["SET", "g", "v", "GET", "EX", "10"]).await, None);
    assert!((9..=10).contains(&cmd::<i64>(&mut c, &["TTL", "g"]).await));
}

/// Every collection's count (SCARD, HLEN, ZCARD, LLEN: a replica's tally, kept as rows change) equals the number of
/// elements a read of the whole collection shows, through a seeded mix of adds, removes, pops, whole-key deletes,
/// expiry and a key changing type, on one node.
#[tokio::test]
async fn counts_follow_every_way_elements_come_and_go() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let mut next = seeded(0x2545_f491_4f6c_dd1d_u64);
    let keys = ["s", "h", "z", "l"];
    for step in 0..500 {
        let key = keys[next(4) as usize];
        let e = format!("e{}", next(8));
        let args: Vec<String> = match (key, next(10)) {
            (_, 0) => vec!["DEL".into(), key.into()],
            // A key that changes type: a DEL then a write of another kind, or a string over it.
            (_, 1) if next(3) == 0 => vec!["SET".into(), key.into(), "a string now".into()],
            (_, 1) => vec!["EXPIRE".into(), key.into(), "100".into()],
            ("s", 2..=5) => vec!["SADD".into(), key.into(), e.clone(), format!("e{}", next(8))],
            ("s", 6..=7) => vec!["SREM".into(), key.into(), e],
            ("s", _) => vec!["SPOP".into(), key.into()],
            ("h", 2..=5) => vec!["HSET".into(), key.into(), e, format!("v{step}")],
            ("h", 6..=8) => vec!["HDEL".into(), key.into(), e],
            ("h", _) => vec!["HINCRBY".into(), key.into(), e, "2".into()],
            ("z", 2..=5) => vec!["ZADD".into(), key.into(), next(5).to_string(), e],
            ("z", 6..=7) => vec!["ZREM".into(), key.into(), e],
            ("z", _) => vec!["ZPOPMIN".into(), key.into()],
            ("l", 2..=4) => vec!["RPUSH".into(), key.into(), e],
            ("l", 5) => vec!["LPOP".into(), key.into()],
            ("l", 6) => vec!["LREM".into(), key.into(), "0".into(), e],
            ("l", 7) => vec!["LTRIM".into(), key.into(), "1".into(), "-1".into()],
            _ => vec!["LPUSH".into(), key.into(), e],
        };
        // A write to a key of another kind is refused (WRONGTYPE): the counts must not move then either.
        let _: redis::RedisResult<redis::Value> = redis::cmd(&args[0]).arg(&args[1..]).query_async(&mut c).await;
        let kind: String = cmd(&mut c, &["TYPE", key]).await;
        let (count, whole) = match key {
            "s" => ("SCARD", vec!["SMEMBERS", key]),
            "h" => ("HLEN", vec!["HKEYS", key]),
            "z" => ("ZCARD", vec!["ZRANGE", key, "0", "-1"]),
            _ => ("LLEN", vec!["LRANGE", key, "0", "-1"]),
        };
        let expected = match kind.as_str() {
            "set" | "hash" | "zset" | "list" => cmd::<Vec<String>>(&mut c, &whole).await.len(),
            _ => 0,
        };
        let counted: redis::RedisResult<usize> = redis::cmd(count).arg(key).query_async(&mut c).await;
        match counted {
            Ok(n) => assert_eq!(n, expected, "step {step}, {args:?}, {count} of a {kind}"),
            Err(e) => assert!(e.to_string().contains("WRONGTYPE") && kind == "string", "step {step}: {e}"),
        }
    }
}

/// The full-read counts a node's metrics report so far.
fn count_full_reads(node: &TestNode) -> u64 {
    metric_sum(node, "dynamo_count_full_reads_total")
}

/// The sum of every series of a counter on a node's metrics endpoint.
fn metric_sum(node: &TestNode, name: &str) -> u64 {
    use std::io::{Read, Write};
    let addr = format!("127.0.0.1:{}", node.http_port.expect("the ready line names the metrics address"));
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
}

/// On a cluster, counts come from the replicas' tallies once they agree, with no read of the elements, and read
/// every row when they differ: a replica that was down while elements were added answers a different tally, and
/// the count through it is still right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_read_tallies_while_replicas_agree() {
    let mut nodes = start_cluster(3, &["--metrics-listen", "127.0.0.1:0"]).await;
    let mut a = nodes[0].conn().await;
    for i in 0..60 {
        let _: i64 = cmd(&mut a, &["SADD", "s", &format!("m{i}")]).await;
        let _: i64 = cmd(&mut a, &["HSET", "h", &format!("f{i}"), "v"]).await;
        let _: i64 = cmd(&mut a, &["ZADD", "z", &i.to_string(), &format!("m{i}")]).await;
        let _: i64 = cmd(&mut a, &["RPUSH", "l", &format!("i{i}")]).await;
    }
    let _: i64 = cmd(&mut a, &["SREM", "s", "m0", "m1"]).await;
    let _: Option<String> = cmd(&mut a, &["LPOP", "l"]).await;
    let expected = [("SCARD", "s", 58), ("HLEN", "h", 60), ("ZCARD", "z", 60), ("LLEN", "l", 59)];
    // Once the third replica has every write, no count reads the rows.
    let healthy = &nodes;
    common::eventually(std::time::Duration::from_secs(20), "counts answered from tallies", || async move {
        let before: Vec<u64> = healthy.iter().map(count_full_reads).collect();
        for node in healthy {
            let mut c = node.conn().await;
            for (command, key, n) in expected {
                assert_eq!(cmd::<i64>(&mut c, &[command, key]).await, n, "{command} through {}", node.node_id);
            }
        }
        let after: Vec<u64> = healthy.iter().map(count_full_reads).collect();
        (before == after).then_some(()).ok_or(format!("full reads {before:?} -> {after:?}"))
    })
    .await;

    // A replica down while the set grows holds a smaller tally when it returns.
    nodes[2].stop();
    for i in 60..90 {
        let _: i64 = cmd(&mut a, &["SADD", "s", &format!("m{i}")]).await;
    }
    nodes[2].restart();
    let mut c = nodes[2].conn().await;
    for _ in 0..5 {
        assert_eq!(cmd::<i64>(&mut c, &["SCARD", "s"]).await, 88);
        assert_eq!(cmd::<i64>(&mut a, &["SCARD", "s"]).await, 88);
    }
    assert_eq!(cmd::<Vec<String>>(&mut c, &["SMEMBERS", "s"]).await.len(), 88);
}

/// Under a stream of pushes, replicas answer a count at different points of it: their tallies differ, and the count
/// merges them by their latest changes rather than reading the list. Each count lies between the pushes
/// acknowledged before it was sent and those sent before it returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_under_a_stream_of_writes_merge_the_replicas_tallies() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let nodes = start_cluster(3, &["--metrics-listen", "127.0.0.1:0"]).await;
    let (sent, acked, stop) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (sent, acked, stop) = (sent.clone(), acked.clone(), stop.clone());
            let url = nodes[w % 2].url();
            tokio::spawn(async move {
                let client = redis::Client::open(url).unwrap();
                let mut c = common::connect(&client).await;
                while !stop.load(Ordering::SeqCst) {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let _: i64 = cmd(&mut c, &["RPUSH", "q", "x"]).await;
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let mut c = nodes[2].conn().await;
    let mut counts = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while counts < 50 || merged_tallies(&nodes[2]) == 0 {
        assert!(std::time::Instant::now() < deadline, "no count merged replicas' tallies in {counts} counts");
        let at_least = acked.load(Ordering::SeqCst);
        let n: u64 = cmd(&mut c, &["LLEN", "q"]).await;
        let at_most = sent.load(Ordering::SeqCst);
        assert!((at_least..=at_most).contains(&n), "LLEN {n}, acknowledged {at_least}, sent {at_most}");
        counts += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(cmd::<u64>(&mut c, &["LLEN", "q"]).await, acked.load(Ordering::SeqCst));
}

/// How many counts a node's metrics say merged replicas' differing tallies.
fn merged_tallies(node: &TestNode) -> u64 {
    metric_sum(node, "dynamo_count_merged_tallies_total")
}

/// A model of a sorted set with integer scores: its members in Redis's order (score, then member).
fn ordered(model: &std::collections::HashMap<String, i64>) -> Vec<(String, i64)> {
    let mut all: Vec<(String, i64)> = model.iter().map(|(m, s)| (m.clone(), *s)).collect();
    all.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    all
}

/// Every read of a sorted set's order (ZRANGE by index and by score, with REV and LIMIT, ZRANK, ZREVRANK, ZCOUNT)
/// answers as a model does through a seeded mix of adds, increments, removes, pops, deletes and a string over the
/// key, sent through every node of a cluster in turn: the replicas' score orders, kept as their rows change, must
/// answer what a read of every member would.
async fn ranked_reads_follow_the_model(nodes: &[TestNode], seed: u64, steps: usize) {
    let mut conns = Vec::new();
    for node in nodes {
        conns.push(node.conn().await);
    }
    let mut next = seeded(seed);
    let mut model = std::collections::HashMap::<String, i64>::new();
    for step in 0..steps {
        let c = &mut conns[step % nodes.len()];
        let m = format!("m{}", next(12));
        let score = next(9) as i64 - 4;
        match next(20) {
            0 => {
                let _: i64 = cmd(c, &["DEL", "z"]).await;
                model.clear();
            }
            1 if next(4) == 0 => {
                let _: String = cmd(c, &["SET", "z", "a string now"]).await;
                let e = err(c, &["ZRANGE", "z", "0", "-1"]).await;
                assert!(e.contains("WRONGTYPE"), "{e}");
                let _: i64 = cmd(c, &["DEL", "z"]).await;
                model.clear();
            }
            2..=9 => {
                let _: i64 = cmd(c, &["ZADD", "z", &score.to_string(), &m]).await;
                model.insert(m.clone(), score);
            }
            10..=11 => {
                let _: String = cmd(c, &["ZINCRBY", "z", &score.to_string(), &m]).await;
                *model.entry(m.clone()).or_insert(0) += score;
            }
            12..=14 => {
                let _: i64 = cmd(c, &["ZREM", "z", &m]).await;
                model.remove(&m);
            }
            15 => {
                let popped: Vec<String> = cmd(c, &["ZPOPMIN", "z"]).await;
                if let Some((first, _)) = ordered(&model).first() {
                    assert_eq!(&popped[0], first, "step {step}: ZPOPMIN");
                    model.remove(first);
                }
            }
            _ => {}
        }
        let all = ordered(&model);
        let flat: Vec<String> = all.iter().flat_map(|(m, s)| [m.clone(), s.to_string()]).collect();
        let c = &mut conns[(step + 1) % nodes.len()];
        assert_eq!(cmd::<Vec<String>>(c, &["ZRANGE", "z", "0", "-1", "WITHSCORES"]).await, flat, "step {step}");
        let (a, b) = (next(7) as i64 - 3, next(7) as i64 - 1);
        let by_index: Vec<String> = cmd(c, &["ZREVRANGE", "z", &a.to_string(), &b.to_string()]).await;
        let n = all.len() as i64;
        let (from, to) = (if a < 0 { (n + a).max(0) } else { a }, if b < 0 { n + b } else { b.min(n - 1) });
        let rev: Vec<String> = all.iter().rev().map(|(m, _)| m.clone()).collect();
        let expected = if from > to || from >= n { vec![] } else { rev[from as usize..=to as usize].to_vec() };
        assert_eq!(by_index, expected, "step {step}: ZREVRANGE {a} {b}");
        let (min, max) = (next(9) as i64 - 4, next(9) as i64 - 4);
        let within: Vec<String> = all.iter().filter(|(_, s)| min < *s && *s <= max).map(|(m, _)| m.clone()).collect();
        let (offset, count) = (next(3) as usize, next(4) as i64 - 1);
        let limited: Vec<String> =
            within.iter().skip(offset).take(if count < 0 { usize::MAX } else { count as usize }).cloned().collect();
        let args = ["ZRANGE", "z", &format!("({min}"), &max.to_string(), "BYSCORE"];
        assert_eq!(cmd::<Vec<String>>(c, &args).await, within, "step {step}: {args:?}");
        let (offset, count) = (offset.to_string(), count.to_string());
        let args = [&args[..], &["LIMIT", &offset, &count]].concat();
        assert_eq!(cmd::<Vec<String>>(c, &args).await, limited, "step {step}: {args:?}");
        let args = ["ZCOUNT", "z", &format!("({min}"), &max.to_string()];
        assert_eq!(cmd::<usize>(c, &args).await, within.len(), "step {step}: {args:?}");
        let rank = all.iter().position(|(x, _)| *x == m);
        assert_eq!(cmd::<Option<usize>>(c, &["ZRANK", "z", &m]).await, rank, "step {step}: ZRANK {m}");
        let rev_rank = rank.map(|r| all.len() - 1 - r);
        assert_eq!(cmd::<Option<usize>>(c, &["ZREVRANK", "z", &m]).await, rev_rank, "step {step}: ZREVRANK {m}");
    }
}

/// The sum of a node's reads of a sorted set's order that read every member.
fn ranked_full_reads(node: &TestNode) -> u64 {
    metric_sum(node, "dynamo_ranked_full_reads_total")
}

#[tokio::test]
async fn ranked_reads_follow_every_write_on_one_node() {
    let node = TestNode::start(&["--metrics-listen", "127.0.0.1:0"]);
    ranked_reads_follow_the_model(std::slice::from_ref(&node), 0x9e37_79b9_7f4a_7c15, 400).await;
    assert_eq!(ranked_full_reads(&node), 0, "one replica always answers from its order");
}

/// On a cluster the reads of a sorted set's order answer from the replicas' score orders once they agree, with no
/// read of the members, and read every member when they differ: a replica that was down while members changed
/// answers differently, and the reads through it are still right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranked_reads_on_a_cluster_use_the_replicas_orders_while_they_agree() {
    let mut nodes = start_cluster(3, &["--metrics-listen", "127.0.0.1:0"]).await;
    ranked_reads_follow_the_model(&nodes, 0x2545_f491_4f6c_dd1d, 150).await;
    let mut a = nodes[0].conn().await;
    let _: i64 = cmd(&mut a, &["DEL", "z"]).await;
    for i in 0..100 {
        let _: i64 = cmd(&mut a, &["ZADD", "z", &i.to_string(), &format!("m{i:03}")]).await;
    }
    let healthy = &nodes;
    common::eventually(std::time::Duration::from_secs(20), "ranked reads answered from orders", || async move {
        let before: Vec<u64> = healthy.iter().map(ranked_full_reads).collect();
        for node in healthy {
            let mut c = node.conn().await;
            assert_eq!(cmd::<Vec<String>>(&mut c, &["ZRANGE", "z", "10", "11"]).await, ["m010", "m011"]);
            assert_eq!(cmd::<Option<i64>>(&mut c, &["ZREVRANK", "z", "m090"]).await, Some(9));
            assert_eq!(cmd::<i64>(&mut c, &["ZCOUNT", "z", "(50", "+inf"]).await, 49);
        }
        let after: Vec<u64> = healthy.iter().map(ranked_full_reads).collect();
        (before == after).then_some(()).ok_or(format!("full reads {before:?} -> {after:?}"))
    })
    .await;

    // A replica down while members move holds an older order when it returns.
    nodes[2].stop();
    for i in 0..20 {
        let _: i64 = cmd(&mut a, &["ZADD", "z", &(1000 + i).to_string(), &format!("m{i:03}")]).await;
    }
    nodes[2].restart();
    let mut c = nodes[2].conn().await;
    for _ in 0..5 {
        assert_eq!(cmd::<Vec<String>>(&mut c, &["ZRANGE", "z", "0", "0"]).await, ["m020"]);
        assert_eq!(cmd::<Vec<String>>(&mut c, &["ZRANGE", "z", "-1", "-1"]).await, ["m019"]);
        assert_eq!(cmd::<Option<i64>>(&mut c, &["ZRANK", "z", "m000"]).await, Some(80));
        assert_eq!(cmd::<i64>(&mut a, &["ZCOUNT", "z", "1000", "+inf"]).await, 20);
    }
}

/// ZPOPMIN and ZPOPMAX name their members from a read of the order: through a replica that missed lower scores
/// while it was down they still pop the lowest, and pops racing adds through every node lose no member (each added
/// member is popped or still there at the end; two pops through different nodes may take the same one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pops_take_the_ends_of_the_merged_order() {
    let mut nodes = start_cluster(3, &[]).await;
    let mut a = nodes[0].conn().await;
    for i in 0..50 {
        let _: i64 = cmd(&mut a, &["ZADD", "z", &(100 + i).to_string(), &format!("m{i:02}")]).await;
    }
    nodes[2].stop();
    for i in 0..10 {
        let _: i64 = cmd(&mut a, &["ZADD", "z", &i.to_string(), &format!("low{i}")]).await;
    }
    nodes[2].restart();
    let mut c = nodes[2].conn().await;
    let popped: Vec<String> = cmd(&mut c, &["ZPOPMIN", "z", "3"]).await;
    assert_eq!(popped, ["low0", "0", "low1", "1", "low2", "2"]);
    let popped: Vec<String> = cmd(&mut c, &["ZPOPMAX", "z", "2"]).await;
    assert_eq!(popped, ["m49", "149", "m48", "148"]);
    assert_eq!(cmd::<Vec<String>>(&mut a, &["ZRANGE", "z", "0", "0"]).await, ["low3"]);
    assert_eq!(cmd::<i64>(&mut a, &["ZCARD", "z"]).await, 55);

    let pops = nodes.iter().enumerate().map(|(n, node)| {
        let url = node.url();
        async move {
            let mut c = common::connect(&redis::Client::open(url).unwrap()).await;
            let mut popped = Vec::new();
            for i in 0..40 {
                let _: i64 = cmd(&mut c, &["ZADD", "z", &(i % 7).to_string(), &format!("n{n}-{i}")]).await;
                let got: Vec<String> = cmd(&mut c, &["ZPOPMIN", "z"]).await;
                popped.extend(got.into_iter().step_by(2));
            }
            popped
        }
    });
    let popped: std::collections::HashSet<String> = join_all(pops).await.into_iter().flatten().collect();
    let left: std::collections::HashSet<String> =
        cmd::<Vec<String>>(&mut a, &["ZRANGE", "z", "0", "-1"]).await.into_iter().collect();
    for n in 0..3 {
        for i in 0..40 {
            let m = format!("n{n}-{i}");
            assert!(popped.contains(&m) || left.contains(&m), "{m} was added, and neither popped nor left");
        }
    }
}
