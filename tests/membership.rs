//! Membership with real node processes: growing and shrinking a cluster under load with handoff, a receiving node
//! killed in the middle of a handoff, joins through different seeds, and liveness coming back.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    TestNode, eventually, eventually_blocking, eventually_every, get, local_get, start_cluster, wait_members,
};
use redis::AsyncCommands;

/// Starts a node that joins through `seed` with the test cluster's flags.
fn join(id: &str, seed: &str) -> TestNode {
    TestNode::start_named(id, &["--membership-interval-ms", "200", "--request-timeout-ms", "1000", "--seeds", seed])
}

async fn admin(node: &TestNode, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = node.conn().await;
    let mut cmd = redis::cmd("ADMIN");
    for a in args {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await
}

/// Partitions owned per member, from ADMIN MEMBERS.
async fn ownership(node: &TestNode) -> BTreeMap<String, i64> {
    let members = match admin(node, &["MEMBERS"]).await.unwrap() {
        redis::Value::Array(m) => m,
        other => panic!("{other:?}"),
    };
    let mut out = BTreeMap::new();
    for m in members {
        let fields: Vec<redis::Value> = match m {
            redis::Value::Array(f) => f,
            redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => panic!("{other:?}"),
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::Int(i) => i.to_string(),
            other => format!("{other:?}"),
        };
        let field = |name: &str| fields.chunks(2).find(|kv| text(&kv[0]) == name).map(|kv| text(&kv[1])).unwrap();
        if field("member") != "removed" {
            out.insert(field("id"), field("partitions").parse().unwrap());
        }
    }
    out
}

fn max_over_mean(o: &BTreeMap<String, i64>) -> f64 {
    let total: i64 = o.values().sum();
    *o.values().max().unwrap() as f64 / (total as f64 / o.len() as f64)
}

/// Waits for a node process to exit by itself (a leaving node does, once its partitions are handed off).
fn wait_exit(node: &mut TestNode, timeout: Duration) {
    let what = format!("{} exits after leaving", node.node_id);
    eventually_blocking(timeout, &what, || if node.exited() { Ok(()) } else { Err("running".into()) });
}

/// Writes `{prefix}{i}` = `value{i}` for i below `count` over 8 connections spread over the nodes (each request
/// waits for its replicas).
async fn preload(nodes: &[TestNode], prefix: &str, count: usize) {
    let mut loaders = Vec::new();
    for t in 0..8 {
        let mut c = nodes[t % nodes.len()].conn().await;
        let prefix = prefix.to_string();
        loaders.push(tokio::spawn(async move {
            for i in (t..count).step_by(8) {
                let _: () = c.set(format!("{prefix}{i}"), format!("value{i}")).await.unwrap();
            }
        }));
    }
    for l in loaders {
        l.await.unwrap();
    }
}

#[tokio::test]
async fn grow_to_five_and_shrink_to_three_under_load_loses_nothing() {
    let mut nodes = start_cluster(3, &[]).await;
    let seed = nodes[0].peer_addr();
    // A writer through c1 for the whole test: every acknowledged write is recorded.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let mut c = nodes[0].conn().await;
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Mostly new keys, some overwrites of older ones.
                let key = if i % 5 == 4 { format!("k{}", i / 2) } else { format!("k{i}") };
                let value = format!("v{i}");
                if c.set::<_, _, ()>(&key, &value).await.is_ok() {
                    acked.lock().unwrap().insert(key, value);
                }
                i += 1;
            }
            i
        })
    };
    eventually(Duration::from_secs(10), "the writer is under way", || async {
        match acked.lock().unwrap().len() {
            n if n >= 20 => Ok(()),
            n => Err(format!("{n} writes acknowledged")),
        }
    })
    .await;

    nodes.push(join("c4", &seed));
    wait_members(&nodes, 4).await;
    nodes.push(join("c5", &seed));
    wait_members(&nodes, 5).await;
    let five = ownership(&nodes[0]).await;
    assert_eq!(five.len(), 5);
    assert!(max_over_mean(&five) <= 1.05, "balanced with 5: {five:?}");

    // Shrink back: c5 then c4 leave and exit by themselves once handed off.
    admin(&nodes[4], &["LEAVE"]).await.unwrap();
    wait_exit(&mut nodes[4], Duration::from_secs(60));
    let mut c5 = nodes.pop().unwrap();
    wait_members(&nodes, 4).await;
    admin(&nodes[3], &["LEAVE"]).await.unwrap();
    wait_exit(&mut nodes[3], Duration::from_secs(60));
    let mut c4 = nodes.pop().unwrap();
    wait_members(&nodes, 3).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let attempts = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "the writer made progress ({} acknowledged of {attempts})", acked.len());
    for node in &nodes {
        let mut c = node.conn().await;
        for (key, value) in &acked {
            let (values, _) = get(&mut c, key).await;
            assert!(values.contains(value), "{}: {key} lost its acknowledged value {value}: {values:?}", node.node_id);
        }
    }
    let three = ownership(&nodes[0]).await;
    assert_eq!(three.len(), 3, "{three:?}");
    assert!(max_over_mean(&three) <= 1.05, "balanced with 3: {three:?}");
    assert!(c4.exited() && c5.exited());
}

#[tokio::test]
async fn a_receiver_killed_during_handoff_resumes_and_loses_nothing() {
    let nodes = start_cluster(3, &[]).await;
    let seed = nodes[0].peer_addr();
    preload(&nodes, "key", 6000).await;

    let mut c4 = join("c4", &seed);
    // Kill c4 as soon as it is receiving.
    let poll = Duration::from_millis(20);
    eventually_every(poll, Duration::from_secs(30), "c4 starts receiving", || async {
        let mut k = c4.conn().await;
        let info: String = redis::cmd("INFO").arg("dynamo").query_async(&mut k).await.unwrap();
        match info.contains("handoff_completed_here:") && !info.contains("handoff_active_partition:-1") {
            true => Ok(()),
            false => Err(info),
        }
    })
    .await;
    c4.kill9();
    c4.restart();
    let mut all = nodes;
    all.push(c4);
    wait_members(&all, 4).await;
    for node in &all {
        let mut c = node.conn().await;
        for i in (0..6000).step_by(7) {
            assert_eq!(get(&mut c, &format!("key{i}")).await.0, vec![format!("value{i}")], "{}", node.node_id);
        }
    }
    let owned = ownership(&all[0]).await;
    assert!(owned["c4"] > 0, "c4 owns partitions after its handoff: {owned:?}");
}

#[tokio::test]
async fn nodes_joined_through_different_seeds_converge_to_one_ring() {
    let c1 = TestNode::start_named("c1", &["--membership-interval-ms", "200"]);
    let c2 = join("c2", &c1.peer_addr());
    // c3 knows only c2, c4 only c3: gossip still makes one cluster.
    let c3 = join("c3", &c2.peer_addr());
    let c4 = join("c4", &c3.peer_addr());
    wait_members(&[c1, c2, c3, c4], 4).await;
}

#[tokio::test]
async fn a_node_marked_down_comes_back_into_routing() {
    let mut nodes = start_cluster(3, &[]).await;
    nodes[2].stop();
    let mut c = nodes[0].conn().await;
    let _: () = c.set("while-down", "1").await.unwrap();
    let status = |v: &redis::Value| format!("{v:?}");
    let members = admin(&nodes[0], &["MEMBERS"]).await.unwrap();
    assert!(status(&members).contains("unreachable"), "c3 is marked unreachable: {members:?}");
    nodes[2].restart();
    wait_members(&nodes, 3).await;
    // Back in routing: a new write reaches it.
    let _: () = c.set("after-return", "2").await.unwrap();
    eventually(Duration::from_secs(10), "c3 receives writes again", || async {
        let held = local_get(&nodes[2], "after-return").await;
        if held == vec!["2"] { Ok(()) } else { Err(format!("{held:?}")) }
    })
    .await;
}

fn cli(node: &TestNode, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
        .arg("admin")
        .args(args)
        .args(["--host", &format!("127.0.0.1:{}", node.port)])
        .output()
        .unwrap();
    assert!(out.status.success(), "admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn without_auto_commit_an_operator_plans_and_commits() {
    let flags = ["--membership-interval-ms", "200", "--auto-commit", "false"];
    let c1 = TestNode::start_named("c1", &flags);
    let mut c = c1.conn().await;
    let _: () = c.set("before", "1").await.unwrap();
    let seed = c1.peer_addr();
    let c2 = TestNode::start_named("c2", &[&flags[..], &["--seeds", &seed]].concat());
    // c2 is known as joining but owns nothing until a commit.
    eventually(Duration::from_secs(10), "c2 shows up as joining", || async {
        let members = cli(&c1, &["members"]);
        if members.contains("joining") { Ok(()) } else { Err(members) }
    })
    .await;
    assert_eq!(ownership(&c1).await["c2"], 0);
    let plan = cli(&c1, &["plan"]);
    assert!(plan.contains("PARTITION") && plan.contains("c2"), "{plan}");
    assert_eq!(plan.lines().filter(|l| l.ends_with(" c2")).count(), 128, "half the partitions move to c2: {plan}");
    cli(&c1, &["commit"]);
    let status = cli(&c1, &["status"]);
    assert!(status.contains("ring version"), "{status}");
    wait_members(&[c1, c2], 2).await;
}

#[tokio::test]
async fn removing_a_dead_node_rebuilds_its_replicas() {
    let mut nodes = start_cluster(4, &[]).await;
    let mut c = nodes[0].conn().await;
    for i in 0..300 {
        let _: () = c.set(format!("r{i}"), i).await.unwrap();
    }
    nodes[3].kill9();
    let dead = nodes.pop().unwrap();
    // A node that still answers is refused: it must leave by itself, handing its data off.
    let refused = admin(&nodes[0], &["REMOVE", "c2"]).await.unwrap_err();
    assert!(refused.to_string().contains("answers: run ADMIN LEAVE on it"), "{refused}");
    wait_unreachable(&nodes[0], &dead.node_id).await;
    cli(&nodes[0], &["remove", "--node", &dead.node_id]);
    wait_members(&nodes, 3).await;
    for node in &nodes {
        for i in (0..300).step_by(3) {
            // Every key is on all three survivors now (N=3 of 3), so each holds it locally.
            assert_eq!(local_get(node, &format!("r{i}")).await, vec![i.to_string()], "{}", node.node_id);
        }
    }
}

#[tokio::test]
async fn after_a_join_no_node_keeps_a_copy_of_a_range_it_no_longer_replicates() {
    let mut nodes = start_cluster(3, &[]).await;
    let mut c = nodes[0].conn().await;
    for i in 0..200 {
        let _: () = c.set(format!("s{i}"), i).await.unwrap();
    }
    nodes.push(join("c4", &nodes[0].peer_addr()));
    wait_members(&nodes, 4).await;
    // Old replicas push what they no longer replicate to the new replicas, then drop it: a stale copy kept on disk
    // could later answer a read (as a fallback) or come back through a handoff.
    eventually(Duration::from_secs(30), "stale copies are swept", || async {
        for i in (0..200).step_by(5) {
            let key = format!("s{i}");
            let mut holders = 0;
            for node in &nodes {
                if local_get(node, &key).await == vec![i.to_string()] {
                    holders += 1;
                }
            }
            if holders != 3 {
                return Err(format!("{key} on {holders} nodes"));
            }
        }
        Ok(())
    })
    .await;
    for node in &nodes {
        let mut c = node.conn().await;
        for i in (0..200).step_by(5) {
            assert_eq!(get(&mut c, &format!("s{i}")).await.0, vec![i.to_string()]);
        }
    }
}

/// Waits until `observer` believes member `id` unreachable.
async fn wait_unreachable(observer: &TestNode, id: &str) {
    let what = format!("{} sees {id} as unreachable", observer.node_id);
    eventually(Duration::from_secs(20), &what, || async {
        let mut c = observer.conn().await;
        let info: String = redis::cmd("INFO").arg("dynamo").query_async(&mut c).await.unwrap();
        match info.lines().any(|l| l.starts_with(&format!("peer_{id}:")) && l.contains("status=unreachable")) {
            true => Ok(()),
            false => Err(info),
        }
    })
    .await
}

/// From ADMIN RING: for each partition, its replicas as the range uses them now, and its state.
async fn ring_rows(node: &TestNode) -> Vec<(Vec<String>, String)> {
    let rows = match admin(node, &["RING"]).await.unwrap() {
        redis::Value::Array(r) => r,
        other => panic!("{other:?}"),
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    rows.into_iter()
        .map(|row| {
            let redis::Value::Array(cols) = row else { panic!("ring row is not an array") };
            let redis::Value::Array(list) = &cols[2] else { panic!("preference list is not an array") };
            (list.iter().take(3).map(text).collect(), text(&cols[3]))
        })
        .collect()
}

#[tokio::test]
async fn a_join_moves_ranges_one_by_one_under_load_and_loses_nothing() {
    let nodes = start_cluster(3, &[]).await;
    let seed = nodes[0].peer_addr();
    preload(&nodes, "pre", 6000).await;
    // Writers through every node for the whole join.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (t, node) in nodes.iter().enumerate() {
        let (acked, stop) = (acked.clone(), stop.clone());
        let mut c = node.conn().await;
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (key, value) = (format!("w{t}:{i}"), format!("v{i}"));
                if c.set::<_, _, ()>(&key, &value).await.is_ok() {
                    acked.lock().unwrap().insert(key, value);
                }
                i += 1;
            }
        }));
    }

    let c4 = join("c4", &seed);
    // Watch the ranges that gain c4: they should move to it one by one while the transition runs, not all at once
    // when it ends.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut transition_seen = false;
    loop {
        assert!(Instant::now() < deadline, "the join did not finish");
        let rows = ring_rows(&nodes[0]).await;
        let moving = rows.iter().filter(|(_, s)| s == "moving").count();
        let moved_to_c4 = rows.iter().filter(|(l, s)| s == "moved" && l.contains(&"c4".to_string())).count();
        if rows.iter().any(|(_, s)| s != "stable") {
            transition_seen = true;
            seen.insert((moved_to_c4, moving));
        } else if transition_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let partial: Vec<_> = seen.iter().filter(|(to_c4, moving)| *to_c4 > 0 && *moving > 0).collect();
    assert!(
        partial.len() >= 2,
        "ranges should move to c4 one by one during the transition; saw (moved to c4, still moving): {seen:?}"
    );
    let mut all = nodes;
    all.push(c4);
    wait_members(&all, 4).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the writers made progress ({} acknowledged)", acked.len());
    for node in &all {
        let mut c = node.conn().await;
        for (key, value) in &acked {
            assert_eq!(get(&mut c, key).await.0, vec![value.clone()], "{}: {key}", node.node_id);
        }
        for i in (0..6000).step_by(11) {
            assert_eq!(get(&mut c, &format!("pre{i}")).await.0, vec![format!("value{i}")], "{}", node.node_id);
        }
    }
}

#[tokio::test]
async fn removing_the_only_replica_of_ranges_unblocks_a_join_that_waits_on_it() {
    // N = 1: each range has one replica, so a dead node is the only source of its ranges.
    let flags = ["--n", "1", "--r", "1", "--w", "1", "--membership-interval-ms", "200", "--request-timeout-ms", "1000"];
    let mut nodes = vec![TestNode::start_named("c1", &flags)];
    let seed = nodes[0].peer_addr();
    let with_seed = |id: &str| {
        let mut f = flags.to_vec();
        f.extend_from_slice(&["--seeds", &seed]);
        TestNode::start_named(id, &f)
    };
    nodes.push(with_seed("c2"));
    nodes.push(with_seed("c3"));
    wait_members(&nodes, 3).await;
    let mut c = nodes[0].conn().await;
    for i in 0..300 {
        let _: () = c.set(format!("one{i}"), i).await.unwrap();
    }
    let on_c3: Vec<usize> = {
        let mut out = Vec::new();
        for i in 0..300 {
            if !local_get(&nodes[2], &format!("one{i}")).await.is_empty() {
                out.push(i);
            }
        }
        out
    };
    assert!(!on_c3.is_empty());
    nodes[2].kill9();
    let dead = nodes.pop().unwrap();
    wait_unreachable(&nodes[0], "c3").await;
    // A join now needs ranges whose only source is dead: its transition waits.
    nodes.push(with_seed("c4"));
    eventually(Duration::from_secs(15), "the join's transition starts, and waits on the dead source", || async {
        let info: String = redis::cmd("INFO").arg("dynamo").query_async(&mut c.clone()).await.unwrap();
        if info.contains("ring_transition:in progress") { Ok(()) } else { Err(info) }
    })
    .await;
    // Removing the dead node unblocks it: its ranges start empty elsewhere, with nothing left to wait for.
    admin(&nodes[0], &["REMOVE", &dead.node_id]).await.unwrap();
    wait_members(&nodes, 3).await;
    let owned = ownership(&nodes[0]).await;
    assert!(!owned.contains_key("c3") && owned["c4"] > 0, "{owned:?}");
    for i in 0..300 {
        let (values, _) = get(&mut c, &format!("one{i}")).await;
        if on_c3.contains(&i) {
            // Its only replica is gone: a read says so plainly (absent), it does not fail.
            assert!(values.is_empty(), "one{i} was only on the removed node: {values:?}");
        } else {
            assert_eq!(values, vec![i.to_string()], "one{i}");
        }
    }
}
