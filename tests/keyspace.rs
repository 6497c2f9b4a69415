//! SCAN, KEYS and RANDOMKEY over a real cluster: every key present for the whole scan is returned, through any
//! node, and a node killed in the middle does not end the scan.

mod common;

use std::collections::BTreeSet;

use common::start_cluster;

async fn scan_page(
    con: &mut redis::aio::MultiplexedConnection,
    cursor: u64,
    extra: &[&str],
) -> redis::RedisResult<(u64, Vec<String>)> {
    let (next, keys): (String, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg(extra).query_async(con).await?;
    Ok((next.parse().unwrap(), keys))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_sees_every_key_through_any_node_even_when_one_dies() {
    let mut nodes = start_cluster(4, &[]).await;
    let mut c = nodes[0].conn().await;
    let all: Vec<String> = (0..3000).map(|i| format!("item:{i}")).collect();
    for chunk in all.chunks(500) {
        let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), "v")).collect();
        let _: () = redis::cmd("MSET").arg(&pairs).query_async(&mut c).await.unwrap();
    }
    let deleted: Vec<&String> = all.iter().step_by(30).collect();
    let _: i64 = redis::cmd("DEL").arg(&deleted).query_async(&mut c).await.unwrap();
    let _: () = redis::cmd("SET").arg("other:1").arg("v").query_async(&mut c).await.unwrap();
    let live: BTreeSet<String> = all.iter().filter(|k| !deleted.contains(k)).cloned().collect();

    // Each page through the next node; the fourth node dies after a few pages.
    let mut cons = Vec::new();
    for n in &nodes {
        cons.push(n.conn().await);
    }
    let (mut cursor, mut seen, mut pages) = (0u64, BTreeSet::new(), 0usize);
    loop {
        let i = pages % if pages >= 5 { 3 } else { 4 };
        let (next, keys) = scan_page(&mut cons[i], cursor, &["MATCH", "item:*", "COUNT", "100"]).await.unwrap();
        seen.extend(keys);
        pages += 1;
        if pages == 5 {
            nodes[3].kill9();
        }
        if next == 0 {
            break;
        }
        cursor = next;
        assert!(pages < 10_000, "the scan does not end");
    }
    let missing: Vec<_> = live.difference(&seen).take(5).collect();
    assert!(missing.is_empty(), "keys never returned: {missing:?}");
    let unexpected: Vec<_> = seen.difference(&live).take(5).collect();
    assert!(unexpected.is_empty(), "deleted or unmatched keys returned: {unexpected:?}");
    assert!(pages > 20, "COUNT 100 over 2900 keys takes many pages, not {pages}");

    let keys: Vec<String> = redis::cmd("KEYS").arg("other:*").query_async(&mut c).await.unwrap();
    assert_eq!(keys, vec!["other:1"]);
    let keys: Vec<String> = redis::cmd("KEYS").arg("item:[1-3]0").query_async(&mut c).await.unwrap();
    assert_eq!(keys, vec!["item:10", "item:20"], "item:30 was deleted");
    // Keys of one slot, from the whole cluster: hash tags put these three in one.
    for k in ["{tag}a", "{tag}b", "{tag}c"] {
        let _: () = redis::cmd("SET").arg(k).arg("v").query_async(&mut c).await.unwrap();
    }
    let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg("{tag}").query_async(&mut c).await.unwrap();
    let n: i64 = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query_async(&mut cons[1]).await.unwrap();
    assert_eq!(n, 3);
    let mut some: Vec<String> =
        redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(2).query_async(&mut c).await.unwrap();
    some.sort();
    assert_eq!(some.len(), 2);
    assert!(some.iter().all(|k| k.starts_with("{tag}")), "{some:?}");
    let err = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(16384).query_async::<i64>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("Invalid slot"), "{err}");
    let random: String = redis::cmd("RANDOMKEY").query_async(&mut c).await.unwrap();
    assert!(live.contains(&random) || random == "other:1", "{random}");
    let (_, none) = scan_page(&mut c, 0, &["TYPE", "hash", "COUNT", "1000"]).await.unwrap();
    assert!(none.is_empty(), "every key is a string");
    let err = scan_page(&mut c, 0, &["TYPE", "nope"]).await.unwrap_err();
    assert!(err.to_string().contains("unknown type name"), "{err}");
    let err = redis::cmd("SCAN").arg("-1").query_async::<redis::Value>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("invalid cursor"), "{err}");
}

#[tokio::test]
async fn randomkey_on_an_empty_cluster_is_nil() {
    let node = common::TestNode::start(&[]);
    let mut c = node.conn().await;
    let none: Option<String> = redis::cmd("RANDOMKEY").query_async(&mut c).await.unwrap();
    assert_eq!(none, None);
    let (next, keys) = scan_page(&mut c, 0, &[]).await.unwrap();
    assert!(keys.is_empty());
    let mut cursor = next;
    let mut calls = 1;
    while cursor != 0 {
        cursor = scan_page(&mut c, cursor, &[]).await.unwrap().0;
        calls += 1;
    }
    assert!(calls > 1, "an empty keyspace is walked in bounded pages");
}
