//! A full or failing disk inside a 3-node cluster (N=3, W=2): the node stops taking writes before its disk fills
//! (or when a write fails anyway), says so in INFO, `admin members` and `dynamo-kv health`, tells its peers, whose
//! writes go on with hints; when space returns it takes writes again without a restart, catches up, and every
//! acknowledged write reads back from every replica.
//!
//! Two data directories sit on tmpfs mounts, so this test needs root (as CI has).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TestNode, local_get};

/// Bytes of each value: big enough to fill a small disk in a few thousand writes.
const VALUE_BYTES: usize = 16 << 10;

fn value_of(key: &str) -> String {
    // Hex of a hash chain: does not compress, so the disk fills as the bytes say.
    let mut out = String::with_capacity(VALUE_BYTES);
    let mut d = md5::compute(key.as_bytes());
    while out.len() < VALUE_BYTES {
        out.push_str(&format!("{d:x}"));
        d = md5::compute(d.0);
    }
    out.truncate(VALUE_BYTES);
    out
}

/// Keys acknowledged so far, and the errors of writes that were not.
#[derive(Default)]
struct Ledger {
    acked: Vec<String>,
    errors: Vec<String>,
    next: usize,
}

impl Ledger {
    /// Writes `per_node` fresh keys through each node in turn (blind SETs). Returns the errors of this round.
    async fn round(&mut self, nodes: &[&TestNode], per_node: usize) -> Vec<String> {
        let mut conns = Vec::new();
        for n in nodes {
            conns.push(n.conn().await);
        }
        let mut errors = Vec::new();
        for _ in 0..per_node {
            for (i, c) in conns.iter_mut().enumerate() {
                let key = format!("disk:{}:{}", self.next, i);
                self.next += 1;
                let r: redis::RedisResult<String> =
                    redis::cmd("SET").arg(&key).arg(value_of(&key)).query_async(c).await;
                match r {
                    Ok(_) => self.acked.push(key),
                    Err(e) => errors.push(format!("{} via {}: {e}", key, nodes[i].node_id)),
                }
            }
        }
        self.errors.extend(errors.iter().cloned());
        errors
    }
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `observer` lists `id` as taking no writes (from gossip).
async fn peer_stopped(observer: &TestNode, id: &str) -> bool {
    observer.info_field(&format!("peer_{id}")).await.is_some_and(|v| v.contains("writes=stopped"))
}

/// What each node says of itself and its peers (for failure messages).
async fn views(nodes: &[&TestNode]) -> String {
    let mut out = String::new();
    for n in nodes {
        let mut c = n.conn().await;
        let info: String = redis::cmd("INFO").arg("dynamo").query_async(&mut c).await.unwrap();
        out.push_str(&format!("--- {}\n", n.node_id));
        for l in info.lines().filter(|l| l.starts_with("peer_") || l.starts_with("storage_") || l.starts_with("reco")) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn health(node: &TestNode) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
        .args(["health", "--host", &format!("127.0.0.1:{}", node.port)])
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_failing_disk_stops_writes_there_and_loses_nothing() {
    let flags = ["--n", "3", "--r", "2", "--w", "2", "--membership-interval-ms", "200", "--request-timeout-ms", "5000"];
    let a = TestNode::start_named("a", &flags);
    let seed = a.peer_addr();
    let with = |extra: &[&str]| -> Vec<String> {
        flags.iter().chain(["--seeds", seed.as_str()].iter()).chain(extra).map(|s| s.to_string()).collect()
    };
    // b has no free-space floor: only a failed write stops it. c stops below 32 MiB free.
    let b_flags = with(&["--min-free-disk-mb", "0"]);
    let c_flags = with(&["--min-free-disk-mb", "32"]);
    let (b, b_disk) = TestNode::start_on_tmpfs("b", 200, &b_flags.iter().map(String::as_str).collect::<Vec<_>>());
    let (c, c_disk) = TestNode::start_on_tmpfs("c", 80, &c_flags.iter().map(String::as_str).collect::<Vec<_>>());
    let nodes = vec![a, b, c];
    common::wait_members(&nodes, 3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let all = [a, b, c];
    let mut ledger = Ledger::default();

    // 1. c's disk fills: writes stop there before it is full, and go on through every node.
    let started = Instant::now();
    while c.info_field("storage_writes").await.as_deref() != Some("stopped") {
        assert!(started.elapsed() < Duration::from_secs(120), "c never stopped writes");
        assert!(ledger.next < 30_000, "c never stopped writes");
        ledger.round(&all, 10).await;
    }
    assert_eq!(c.info_field("storage_writes_stop").await.as_deref(), Some("low_space"));
    let free: u64 = c.info_field("storage_free_bytes").await.unwrap().parse().unwrap();
    assert!(free > 0, "c's disk filled up before writes stopped");
    let (healthy, said) = health(c);
    assert!(
        !healthy && said.contains("storage takes no writes"),
        "health passed on a node that takes no writes: {said}"
    );
    assert!(health(a).0, "health failed on a healthy node");
    wait_for("a and b to learn that c takes no writes", Duration::from_secs(10), async || {
        peer_stopped(a, "c").await && peer_stopped(b, "c").await
    })
    .await;
    let mut cm = c.conn().await;
    let members: redis::Value = redis::cmd("ADMIN").arg("MEMBERS").query_async(&mut cm).await.unwrap();
    assert!(format!("{members:?}").contains("stopped: disk below min_free_disk"), "{members:?}");
    let errors = ledger.round(&all, 40).await;
    assert!(errors.is_empty(), "writes failed while one replica was out of space: {errors:?}");
    // Reads keep working on the full node.
    let key = ledger.acked[0].clone();
    let (values, _) = common::get(&mut cm, &key).await;
    assert_eq!(values, vec![value_of(&key)]);

    // Space comes back: c takes writes again by itself.
    c_disk.resize(300);
    wait_for("c to take writes again", Duration::from_secs(10), async || {
        c.info_field("storage_writes").await.as_deref() == Some("ok")
    })
    .await;
    assert!(health(c).0, "health still fails after space came back");
    // Its peers hear it through gossip; until they do, they still hint its copies instead of sending them.
    wait_for("a and b to learn that c takes writes again", Duration::from_secs(10), async || {
        !peer_stopped(a, "c").await && !peer_stopped(b, "c").await
    })
    .await;

    // 2. b's disk is filled by something else, to the last byte: its next write fails, and it stops.
    let filler = b_disk.path.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let small = vec![0xa5u8; 4096];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
    let started = Instant::now();
    while b.info_field("storage_writes").await.as_deref() != Some("stopped") {
        assert!(started.elapsed() < Duration::from_secs(60), "b never stopped writes");
        ledger.round(&all, 5).await;
    }
    assert_eq!(b.info_field("storage_writes_stop").await.as_deref(), Some("failed"));
    let reason = b.info_field("storage_writes_reason").await.unwrap();
    assert!(reason.contains("write failed"), "{reason}");
    assert!(!health(b).0);
    wait_for("a and c to learn that b takes no writes", Duration::from_secs(10), async || {
        peer_stopped(a, "b").await && peer_stopped(c, "b").await
    })
    .await;
    let errors = ledger.round(&all, 40).await;
    assert!(errors.is_empty(), "writes failed while one replica's disk was failing: {errors:?}\n{}", views(&all).await);

    // Space comes back: b reopens its storage without a restart.
    std::fs::remove_file(&filler).unwrap();
    wait_for("b to take writes again", Duration::from_secs(20), async || {
        b.info_field("storage_writes").await.as_deref() == Some("ok")
    })
    .await;
    let errors = ledger.round(&all, 20).await;
    assert!(errors.is_empty(), "writes failed after both disks recovered: {errors:?}");

    // 3. Both catch up (hints, anti-entropy): every acknowledged write is on every replica, and reads back.
    let acked = ledger.acked.clone();
    for node in all {
        let mut missing: BTreeMap<&str, ()> = acked.iter().map(|k| (k.as_str(), ())).collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !missing.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} still misses {} of {} acknowledged writes, e.g. {:?}",
                node.node_id,
                missing.len(),
                acked.len(),
                missing.keys().next()
            );
            let mut found = Vec::new();
            for &key in missing.keys() {
                if local_get(node, key).await == vec![value_of(key)] {
                    found.push(key);
                }
            }
            for k in found {
                missing.remove(k);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut con = a.conn().await;
    for key in &acked {
        let (values, _) = common::get(&mut con, key).await;
        assert_eq!(values, vec![value_of(key)], "{key}");
    }
    eprintln!(
        "disk_full: {} writes acknowledged, {} refused (not acknowledged) while a disk failed: {:?}",
        acked.len(),
        ledger.errors.len(),
        ledger.errors.iter().take(3).collect::<Vec<_>>()
    );
    drop(nodes);
    drop((b_disk, c_disk));
}
