//! A new cluster from one shared configuration (`--bootstrap-expect`): nodes started in any order with the same
//! seed list found exactly one ring, and a node that waits says why.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, eventually, free_ports, get, wait_members};
use redis::AsyncCommands;

async fn info(node: &TestNode) -> String {
    let mut c = node.conn().await;
    redis::cmd("INFO").arg("dynamo").query_async(&mut c).await.unwrap()
}

/// Five nodes with one template (same seeds, same flags), started one by one in a scrambled order.
#[tokio::test]
async fn five_nodes_with_one_seed_list_settle_into_one_ring_in_any_start_order() {
    let ports = free_ports(10);
    let seeds: Vec<String> = (0..5).map(|i| format!("127.0.0.1:{}", ports[5 + i])).collect();
    let seeds = seeds.join(",");
    let flags = [
        "--bootstrap-expect",
        "5",
        "--seeds",
        &seeds,
        "--n",
        "3",
        "--r",
        "2",
        "--w",
        "2",
        "--membership-interval-ms",
        "200",
        "--request-timeout-ms",
        "1000",
    ]; // fmt: skip
    let mut nodes = Vec::new();
    for i in [3usize, 0, 4, 1] {
        nodes.push(TestNode::start_on_ports(&format!("b{i}"), ports[i], ports[5 + i], &flags));
    }
    // Four of five: nobody founds, and every node says why, in INFO and to a client.
    let text = eventually(Duration::from_secs(15), "the waiting node sees the other three", || async {
        let text = info(&nodes[0]).await;
        if text.contains("4 of 5 expected nodes know each other") { Ok(text) } else { Err(text) }
    })
    .await;
    assert!(text.contains("cluster_state:waiting"), "{text}");
    let mut c = nodes[1].conn().await;
    let members: redis::Value = redis::cmd("ADMIN").arg("MEMBERS").query_async(&mut c).await.unwrap();
    assert!(format!("{members:?}").contains("waiting for bootstrap"), "ADMIN MEMBERS says why: {members:?}");
    let err = c.set::<_, _, ()>("k", "v").await.unwrap_err().to_string();
    assert!(err.contains("waiting for bootstrap") && err.contains("of 5 expected"), "{err}");
    let started = Instant::now();
    nodes.push(TestNode::start_on_ports("b2", ports[2], ports[7], &flags));
    wait_members(&nodes, 5).await;
    println!("five nodes settled into one ring {:?} after the last one started", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));
    for node in &nodes {
        let text = info(node).await;
        assert!(text.contains("ring_version:1\r\n"), "one founding, no second ring: {text}");
        assert!(text.contains("cluster_state:ok"), "{text}");
    }
    let mut c = nodes[4].conn().await;
    let _: () = c.set("k", "v").await.unwrap();
    for node in &nodes {
        assert_eq!(get(&mut node.conn().await, "k").await.0, vec!["v"], "through {}", node.node_id);
    }
}

/// Two groups that cannot reach each other at start (their seed lists do not meet) found nothing, however long they
/// wait; once one node learns of the other group, one ring forms over all five.
#[tokio::test]
async fn two_halves_apart_at_start_found_nothing_until_they_meet() {
    let ports = free_ports(10);
    let peer = |i: usize| format!("127.0.0.1:{}", ports[5 + i]);
    let half = |i: usize| if i < 2 { [0, 1].map(peer).join(",") } else { [2, 3, 4].map(peer).join(",") };
    let flags = |seeds: &str| -> Vec<String> {
        ["--bootstrap-expect", "5", "--seeds", seeds, "--membership-interval-ms", "200"].map(String::from).to_vec()
    };
    let mut nodes: Vec<TestNode> = (0..5)
        .map(|i| {
            let f = flags(&half(i));
            let f: Vec<&str> = f.iter().map(String::as_str).collect();
            TestNode::start_on_ports(&format!("h{i}"), ports[i], ports[5 + i], &f)
        })
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let seen = if i < 2 { "2 of 5" } else { "3 of 5" };
        let what = format!("{} sees its half", node.node_id);
        let text = eventually(Duration::from_secs(15), &what, || async {
            let text = info(node).await;
            if text.contains(seen) { Ok(text) } else { Err(text) }
        })
        .await;
        assert!(text.contains("cluster_state:waiting"), "{}: {text}", node.node_id);
        assert!(text.contains("ring_version:0\r\n"), "{text}");
    }
    // h1 is restarted with a seed of the other group: the halves meet.
    nodes[1].stop();
    let all = (0..5).map(peer).collect::<Vec<_>>().join(",");
    nodes[1].extra = flags(&all);
    nodes[1].restart();
    wait_members(&nodes, 5).await;
    for node in &nodes {
        assert!(info(node).await.contains("ring_version:1\r\n"), "one ring for all five");
    }
}
