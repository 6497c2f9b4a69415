//! Clusters of real node processes on loopback: replication, quorums with nodes down, read repair, concurrent
//! writes through different coordinators, and peers that do not hold the cluster secret.

mod common;

use std::time::Duration;

use common::{TestNode, eventually, get, local_get, start_cluster, wait_members};
use redis::AsyncCommands;

/// True for the quorum error (redis-rs shows the code word apart from the message).
fn unavailable(err: &redis::RedisError) -> bool {
    let text = err.to_string();
    text.contains("UNAVAILABLE") && text.contains("needed 2 replicas, got 1")
}

async fn set_ctx(c: &mut redis::aio::MultiplexedConnection, key: &str, value: &str, ctx: &str) {
    let r: String = redis::cmd("SET").arg(key).arg(value).arg("CONTEXT").arg(ctx).query_async(c).await.unwrap();
    assert_eq!(r, "OK");
}

#[tokio::test]
async fn a_write_through_any_node_reads_back_through_every_other() {
    for n in [3usize, 5] {
        let nodes = start_cluster(n, &[]).await;
        let mut conns = Vec::new();
        for node in &nodes {
            conns.push(node.conn().await);
        }
        for i in 0..40 {
            let _: () = conns[i % n].set(format!("k{i}"), format!("v{i}")).await.unwrap();
        }
        for c in conns.iter_mut() {
            for i in 0..40 {
                assert_eq!(get(c, &format!("k{i}")).await.0, vec![format!("v{i}")], "{n} nodes, key k{i}");
            }
        }
        // Every key lives on exactly N = 3 replicas; with 5 nodes the other 2 are fallbacks.
        let mut c = nodes[0].conn().await;
        let placement: redis::Value = redis::cmd("ADMIN").arg("KEY").arg("k7").query_async(&mut c).await.unwrap();
        let text = format!("{placement:?}");
        let holders: Vec<&TestNode> = {
            let mut h = Vec::new();
            for node in &nodes {
                if local_get(node, "k7").await == vec!["v7"] {
                    h.push(node);
                }
            }
            h
        };
        assert_eq!(holders.len(), 3, "{n} nodes: k7 stored on N replicas ({text})");
        for node in holders {
            assert!(text.contains(&node.node_id), "{} holds k7 but is not listed as a replica: {text}", node.node_id);
        }
    }
}

#[tokio::test]
async fn one_node_down_keeps_working_two_down_is_unavailable() {
    let mut nodes = start_cluster(3, &[]).await;
    let mut c = nodes[0].conn().await;
    let _: () = c.set("before", "1").await.unwrap();

    nodes[2].stop();
    for i in 0..10 {
        let _: () = c.set(format!("k{i}"), i).await.unwrap();
        assert_eq!(get(&mut c, &format!("k{i}")).await.0, vec![i.to_string()]);
    }
    assert_eq!(get(&mut c, "before").await.0, vec!["1"]);

    nodes[1].stop();
    let err = c.set::<_, _, ()>("k-lost", "x").await.unwrap_err();
    assert!(unavailable(&err), "{err}");
    let err = redis::cmd("GET").arg("before").query_async::<redis::Value>(&mut c).await.unwrap_err();
    assert!(unavailable(&err), "{err}");
    // A client may lower its quorum per request.
    let v: redis::Value = redis::cmd("GET").arg("before").arg("R").arg("1").query_async(&mut c).await.unwrap();
    assert_eq!(common::parse_get(v).0, vec!["1"]);
    let ok: String = redis::cmd("SET").arg("k-w1").arg("y").arg("W").arg("1").query_async(&mut c).await.unwrap();
    assert_eq!(ok, "OK");

    nodes[1].restart();
    nodes[2].restart();
    wait_members(&nodes, 3).await;
    let mut c = nodes[1].conn().await;
    for i in 0..10 {
        assert_eq!(get(&mut c, &format!("k{i}")).await.0, vec![i.to_string()]);
    }
}

#[tokio::test]
async fn one_read_repairs_a_replica_that_missed_a_write() {
    let mut nodes = start_cluster(3, &[]).await;
    nodes[2].stop();
    let mut c = nodes[0].conn().await;
    let _: () = c.set("missed", "v").await.unwrap();
    // c1 holds the hint for c3; with c1 down when c3 returns, only a read can repair c3.
    drop(c);
    nodes[0].stop();
    nodes[2].restart();
    // Nothing can bring it to c3 but a read: c1, which holds its hint, is down.
    assert!(local_get(&nodes[2], "missed").await.is_empty(), "c3 was down during the write");
    let c = nodes[1].conn().await;

    // Reads through c2 ask all three replicas; c3 answers stale and is repaired after the reply.
    eventually(Duration::from_secs(15), "read repair reaches c3", || async {
        // Until c2 reaches c3 again (it backs off from a peer that was down) the read finds too few replicas.
        let read = redis::cmd("GET").arg("missed").query_async::<redis::Value>(&mut c.clone()).await;
        assert_eq!(common::parse_get(read.map_err(|e| e.to_string())?).0, vec!["v"]);
        let held = local_get(&nodes[2], "missed").await;
        if held == vec!["v"] { Ok(()) } else { Err(format!("{held:?}")) }
    })
    .await;
}

#[tokio::test]
async fn concurrent_writes_through_different_coordinators_become_siblings() {
    let nodes = start_cluster(3, &[]).await;
    let mut c1 = nodes[0].conn().await;
    let mut c2 = nodes[1].conn().await;
    let mut c3 = nodes[2].conn().await;
    let _: () = c1.set("cart", "[]").await.unwrap();
    // Two clients read the same state through different nodes; each token names its own node as the replica that
    // answered first, so each write is coordinated by a different replica.
    let (_, ctx_a) = get(&mut c1, "cart").await;
    let (_, ctx_b) = get(&mut c2, "cart").await;
    let (ctx_a, ctx_b) = (ctx_a.unwrap(), ctx_b.unwrap());
    tokio::join!(set_ctx(&mut c1, "cart", "[book]", &ctx_a), set_ctx(&mut c2, "cart", "[pen]", &ctx_b));
    let (vals, ctx2) = get(&mut c3, "cart").await;
    assert_eq!(vals, vec!["[book]", "[pen]"], "neither concurrent write is lost");
    set_ctx(&mut c3, "cart", "[book,pen]", &ctx2.unwrap()).await;
    for c in [&mut c1, &mut c2, &mut c3] {
        assert_eq!(get(c, "cart").await.0, vec!["[book,pen]"]);
    }
    // A context from one node is valid on every other (one cluster key).
    let (_, ctx3) = get(&mut c1, "cart").await;
    set_ctx(&mut c2, "cart", "[]", &ctx3.unwrap()).await;
    assert_eq!(get(&mut c3, "cart").await.0, vec!["[]"]);
}

#[tokio::test]
async fn a_node_without_the_cluster_secret_cannot_join() {
    let flags = ["--cluster-secret", "right", "--membership-interval-ms", "200"];
    let a = TestNode::start_named("a", &flags);
    let seed = a.peer_addr();
    let b =
        TestNode::start_named("b", &["--cluster-secret", "wrong", "--membership-interval-ms", "200", "--seeds", &seed]);
    // b's seed answers its handshake with a refusal, which b reports as why it waits.
    common::wait_seeds_answered(&b).await;
    for node in [&a, &b] {
        let mut c = node.conn().await;
        let members: Vec<redis::Value> = redis::cmd("ADMIN").arg("MEMBERS").query_async(&mut c).await.unwrap();
        assert_eq!(members.len(), 1, "{} must not see a stranger", node.node_id);
    }
    // With the right secret it joins.
    let c =
        TestNode::start_named("c", &["--cluster-secret", "right", "--membership-interval-ms", "200", "--seeds", &seed]);
    wait_members(&[a, c], 2).await;
}

#[tokio::test]
async fn admin_cli_prints_members_ring_and_placement() {
    let nodes = start_cluster(3, &[]).await;
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
            .arg("admin")
            .args(args)
            .args(["--host", &format!("127.0.0.1:{}", nodes[1].port)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let members = admin(&["members"]);
    assert!(members.starts_with("ID"), "{members}");
    for id in ["c1", "c2", "c3"] {
        let line = members.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} missing: {members}"));
        assert!(line.contains(" up "), "{line}");
    }
    let ring = admin(&["ring"]);
    assert_eq!(ring.lines().count(), 257, "header + 256 partitions");
    let key = admin(&["key", "some-key"]);
    let replicas = key.lines().find(|l| l.starts_with("replicas")).unwrap();
    assert_eq!(replicas.split_whitespace().count(), 4, "3 replicas: {replicas}");
}

/// Pipelined requests on different keys run concurrently, but each reply still answers its own request and
/// requests on the same key keep their order: every GET sees the SET just before it on that key, a DEL then an
/// EXISTS of the same key sees it gone, and connection commands in between answer in place.
#[tokio::test]
async fn a_pipeline_keeps_per_key_order_while_keys_run_concurrently() {
    let nodes = start_cluster(3, &[]).await;
    let mut c = nodes[1].conn().await;
    let mut pipe = redis::pipe();
    let mut expected = Vec::new();
    for round in 0..12 {
        for j in 0..8 {
            pipe.cmd("SET").arg(format!("pk{j}")).arg(format!("r{round}-{j}"));
            expected.push("OK".to_string());
        }
        for j in 0..8 {
            pipe.cmd("GET").arg(format!("pk{j}"));
            expected.push(format!("r{round}-{j}"));
        }
        pipe.cmd("PING");
        expected.push("PONG".into());
        pipe.cmd("DEL").arg(format!("pk{round}"));
        expected.push(format!("{}", i64::from(round < 8)));
        pipe.cmd("EXISTS").arg(format!("pk{round}"));
        expected.push("0".into());
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut c).await.unwrap();
    assert_eq!(replies.len(), expected.len());
    for (i, (reply, want)) in replies.into_iter().zip(&expected).enumerate() {
        let got = match reply {
            redis::Value::Okay => "OK".to_string(),
            redis::Value::SimpleString(s) => s,
            redis::Value::Int(n) => n.to_string(),
            v @ redis::Value::Array(_) => common::parse_get(v).0.join(","),
            other => panic!("reply {i}: unexpected {other:?}"),
        };
        assert_eq!(&got, want, "reply {i}");
    }
}

/// The creation race: four clients find a fresh key missing at the same moment, through three different
/// coordinators, and each runs the documented loop (GET, add its element, SET with the context the GET gave). No
/// fault at all. Every acknowledged write must survive, as a sibling; none may supersede what its client never read.
#[tokio::test]
async fn clients_that_create_a_key_at_once_through_different_nodes_all_keep_their_writes() {
    const KEYS: usize = 200;
    const CLIENTS: usize = 4;
    let nodes = start_cluster(3, &[]).await;
    let mut conns = Vec::new();
    for c in 0..CLIENTS {
        conns.push(nodes[c % nodes.len()].conn().await);
    }
    let mut acknowledged = 0;
    for k in 0..KEYS {
        let key = format!("race{k}");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let tasks: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(c, con)| {
                let (mut con, key, barrier) = (con.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let (mut cart, ctx) = get(&mut con, &key).await;
                    cart.push(format!("c{c}"));
                    let value = cart.join(",");
                    // The docs promise a context on every read, a missing key included.
                    let ctx = ctx.expect("GET of a missing key gives a context");
                    let reply: redis::RedisResult<String> =
                        redis::cmd("SET").arg(&key).arg(value).arg("CONTEXT").arg(ctx).query_async(&mut con).await;
                    reply.is_ok()
                })
            })
            .collect();
        for t in tasks {
            acknowledged += usize::from(t.await.unwrap());
        }
    }
    assert_eq!(acknowledged, KEYS * CLIENTS, "no write was refused on a healthy cluster");
    let mut lost = Vec::new();
    for con in conns.iter_mut().take(nodes.len()) {
        for k in 0..KEYS {
            let key = format!("race{k}");
            let (siblings, _) = get(con, &key).await;
            let held: std::collections::BTreeSet<&str> = siblings.iter().flat_map(|s| s.split(',')).collect();
            for c in 0..CLIENTS {
                if !held.contains(format!("c{c}").as_str()) {
                    lost.push(format!("{key}: c{c}"));
                }
            }
        }
    }
    assert!(lost.is_empty(), "{} acknowledged writes lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
}
