//! One simulated run: a cluster of real nodes (N=3, R=2, W=2) on simulated disks, clients running the
//! shopping-cart workload, faults drawn from the seed while they run, then healing and the checks.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamo_kv::config::{Config, Durability, ServeArgs};
use dynamo_kv::node::{Disk, Node};

use crate::disk::SimDisk;
use crate::resp::{Conn, Reply, show};

const CLIENT_PORT: u16 = 6379;
const PEER_PORT: u16 = 7000;
/// How long a client waits for one reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the cluster gets to form, and after healing to converge.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);
/// Tries of each final read.
const FINAL_READ_ATTEMPTS: usize = 5;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    /// Nodes that found the cluster.
    pub nodes: usize,
    /// A further node that joins while the clients run (at a fault's turn; never, if no fault picks it).
    pub joiner: bool,
    pub clients: usize,
    /// Operations per client.
    pub ops: usize,
    /// Keys of each kind the clients share.
    pub keys: usize,
    pub faults: bool,
    /// Run with the merge bug planted (see `dynamo_kv::sys::sim::plant_merge_bug`).
    pub planted_bug: bool,
    /// Keep the story of the run (faults, failed requests).
    pub verbose: bool,
}

impl Plan {
    /// Every node that may run: the founders, then the joiner.
    fn hosts(&self) -> usize {
        self.nodes + usize::from(self.joiner)
    }

    /// The CI plan: four nodes, three clients, faults.
    pub fn standard(seed: u64) -> Plan {
        Plan {
            seed,
            nodes: 4,
            joiner: true,
            clients: 3,
            ops: 40,
            keys: 2,
            faults: true,
            planted_bug: false,
            verbose: false,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Acknowledged adds missing from a final read, as `key: item (via node)`.
    pub lost: Vec<String>,
    /// Items in a final read that no client ever wrote.
    pub unexpected: Vec<String>,
    /// Keys whose replicas still differ after healing, or that could not be read.
    pub diverged: Vec<String>,
    /// Nodes with hints, transfers or recovery left after healing.
    pub undrained: Vec<String>,
    /// Panics in any node or client.
    pub panics: Vec<String>,
    /// The simulation itself failed (a node did not start, the run did not end).
    pub error: Option<String>,
    pub acked: usize,
    pub unknown: usize,
    /// Every reply and final state in order: two runs of one seed must have equal traces.
    pub trace: Vec<String>,
    /// Faults and failures with their times (verbose plans).
    pub story: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.diverged.is_empty()
            && self.undrained.is_empty()
            && self.panics.is_empty()
            && self.error.is_none()
    }

    pub fn summary(&self) -> String {
        let first = |v: &Vec<String>| v.first().cloned().unwrap_or_default();
        format!(
            "{} acknowledged, {} unknown; lost {} {}; unexpected {} {}; diverged {} {}; undrained {} {}; panics {} {}; \
             error {:?}",
            self.acked,
            self.unknown,
            self.lost.len(),
            first(&self.lost),
            self.unexpected.len(),
            first(&self.unexpected),
            self.diverged.len(),
            first(&self.diverged),
            self.undrained.len(),
            first(&self.undrained),
            self.panics.len(),
            first(&self.panics),
            self.error
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Forming,
    Running,
    Checking,
    Done,
}

/// What the clients and the fault driver share (all on the simulation's thread).
struct Shared {
    phase: Phase,
    clients_done: usize,
    /// Items written, by key: every attempt, and those acknowledged.
    attempted: BTreeMap<String, BTreeSet<String>>,
    acked: BTreeMap<String, BTreeSet<String>>,
    unknown: usize,
    outcome: Outcome,
    verbose: bool,
    /// The simulation's time at the driver's last step (for the driver's lines of the story).
    now: Duration,
    /// The joiner was told to start.
    joined: bool,
    /// The node told to leave the cluster (`ADMIN LEAVE`, sent by the checker's client), and whether it was sent.
    leaving: Option<(usize, bool)>,
    /// Set members a client sent an SREM for, or an SPOP answered, by key: they may be absent, whatever the SREM
    /// answered.
    removed: BTreeMap<String, BTreeSet<String>>,
    /// SPOPs of unknown outcome by key: each may have taken a member nobody saw it take.
    blind_pops: BTreeMap<String, usize>,
    /// Counter increments by key: the sum acknowledged, and the sum of unknown outcome.
    increments: BTreeMap<String, (i64, i64)>,
}

impl Shared {
    /// The nodes that run or ran (the joiner once it was started).
    fn members(&self, plan: &Plan) -> usize {
        plan.nodes + usize::from(self.joined)
    }

    /// The nodes that are, or will be again, members: every node that ran, but the one that left.
    fn staying(&self, plan: &Plan) -> Vec<usize> {
        (0..self.members(plan)).filter(|i| self.leaving.map(|(l, _)| l) != Some(*i)).collect()
    }
}

impl Shared {
    fn tell(&mut self, line: String) {
        if self.verbose {
            let at = turmoil::sim_elapsed().unwrap_or(self.now);
            let line = format!("{:>8.3}s {line}", at.as_secs_f64());
            if std::env::var("SIM_LIVE").is_ok() {
                eprintln!("{line}");
            }
            self.outcome.story.push(line);
        }
    }
}

type Sh = Rc<RefCell<Shared>>;

/// SplitMix64: the fault driver's and the clients' choices, from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn config(plan: &Plan, i: usize, data_dir: std::path::PathBuf) -> Config {
    let name = node_name(i);
    let args = ServeArgs {
        node_id: Some(name.clone()),
        listen: Some(format!("0.0.0.0:{CLIENT_PORT}")),
        data_dir: Some(data_dir),
        durability: Some(Durability::Os),
        peer_listen: Some(format!("0.0.0.0:{PEER_PORT}")),
        peer_advertise: Some(format!("{name}:{PEER_PORT}")),
        client_advertise: Some(format!("{name}:{CLIENT_PORT}")),
        seeds: Some((0..plan.nodes).filter(|j| *j != i).map(|j| format!("{}:{PEER_PORT}", node_name(j))).collect()),
        // The founders wait for each other; the joiner joins what they founded.
        bootstrap_expect: (i < plan.nodes).then_some(plan.nodes),
        cluster_secret: Some("simulated cluster secret".into()),
        partitions: Some(16),
        n: Some(3),
        r: Some(2),
        w: Some(2),
        request_timeout_ms: Some(1000),
        membership_interval_ms: Some(200),
        anti_entropy_interval_ms: Some(1000),
        row_cache_mb: Some(1),
        // Clients connect from other simulated hosts, without a password.
        protected_mode: Some(false),
        ..ServeArgs::default()
    };
    Config::resolve(&args).expect("simulation config")
}

/// One node's disks (keys, hints).
type Disks = (Arc<SimDisk>, Arc<SimDisk>);

thread_local! {
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn catch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.borrow_mut().push(info.to_string()));
            default(info);
        }));
    });
}

/// The nodes' log lines carry the simulated time, so they line up with the story.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default();
        write!(w, "{:>8.3}s", elapsed.as_secs_f64())
    }
}

/// Runs `plan` to the end and checks it.
pub fn run(plan: &Plan) -> Outcome {
    catch_panics();
    PANICS.with(|p| p.borrow_mut().clear());
    dynamo_kv::sys::sim::reset(plan.seed);
    dynamo_kv::sys::sim::plant_merge_bug(plan.planted_bug);
    let _log = std::env::var("SIM_LOG").ok().filter(|_| plan.verbose).map(|filter| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_timer(SimTime)
            .with_test_writer()
            .finish();
        tracing::subscriber::set_default(subscriber)
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let shared: Sh = Rc::new(RefCell::new(Shared {
        phase: Phase::Forming,
        clients_done: 0,
        attempted: BTreeMap::new(),
        acked: BTreeMap::new(),
        unknown: 0,
        outcome: Outcome::default(),
        verbose: plan.verbose,
        now: Duration::ZERO,
        joined: false,
        leaving: None,
        removed: BTreeMap::new(),
        blind_pops: BTreeMap::new(),
        increments: BTreeMap::new(),
    }));
    let result = simulate(plan, dir.path(), &shared);
    dynamo_kv::sys::sim::plant_merge_bug(false);
    let mut shared = shared.borrow_mut();
    let mut outcome = std::mem::take(&mut shared.outcome);
    if let Err(e) = result {
        outcome.error = Some(e);
    }
    outcome.acked = shared.acked.values().map(BTreeSet::len).sum();
    outcome.unknown = shared.unknown;
    outcome.panics = PANICS.with(|p| p.borrow_mut().drain(..).collect());
    outcome
}

fn simulate(plan: &Plan, dir: &std::path::Path, shared: &Sh) -> Result<(), String> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(plan.seed)
        // A fixed wall clock (2026-01-01): the nodes' timestamps and deadlines come from it.
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        .simulation_duration(Duration::from_secs(1200))
        .tick_duration(Duration::from_millis(2))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(5))
        .tcp_capacity(1 << 16)
        .build();
    let disks: Arc<Mutex<Vec<Disks>>> = Arc::new(Mutex::new(
        (0..plan.hosts()).map(|_| (Arc::new(SimDisk::default()), Arc::new(SimDisk::default()))).collect(),
    ));
    for i in 0..plan.hosts() {
        let (plan, disks, data_dir, shared) = (plan.clone(), disks.clone(), dir.join(node_name(i)), shared.clone());
        sim.host(node_name(i), move || {
            let (data, hints) = disks.lock().unwrap()[i].clone();
            let config = config(&plan, i, data_dir.clone());
            let shared = shared.clone();
            let founder = i < plan.nodes;
            async move {
                // The joiner's host waits until the driver lets it start.
                while !founder && !shared.borrow().joined {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let node = Node::start_on(config, Disk::Given { data, hints }).await?;
                node.run(std::future::pending()).await?;
                Ok(())
            }
        });
    }
    for c in 0..plan.clients {
        let (plan, shared) = (plan.clone(), shared.clone());
        sim.client(format!("c{}", c + 1), async move {
            workload(&plan, c, &shared).await;
            Ok(())
        });
    }
    {
        let (plan, shared) = (plan.clone(), shared.clone());
        sim.client("checker", async move {
            checker(&plan, &shared).await;
            Ok(())
        });
    }
    drive(&mut sim, plan, dir, &disks, shared)
}

/// The fault driver: steps the simulation, and while the clients run, injects a fault now and then; once they are
/// done, heals everything and lets the checker look.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    plan: &Plan,
    dir: &std::path::Path,
    disks: &Arc<Mutex<Vec<Disks>>>,
    shared: &Sh,
) -> Result<(), String> {
    let mut rng = Rng(plan.seed ^ 0x5eed_fa17);
    let names: Vec<String> = (0..plan.hosts()).map(node_name).collect();
    // Links held (messages wait, then all arrive) and links that lose messages.
    let mut held: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut lossy: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut next_fault = Duration::ZERO;
    // Crashed nodes and when they restart; cut links (both ways or one way); whether a disk was wiped already (two
    // wiped replicas may lose what W = 2 acknowledged: beyond the fault model).
    let mut down: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut cut: BTreeSet<(usize, usize, bool)> = BTreeSet::new();
    let mut wiped = false;
    loop {
        if sim.step().map_err(|e| e.to_string())? {
            return Ok(());
        }
        let now = sim.elapsed();
        shared.borrow_mut().now = now;
        let restart: Vec<usize> = down.iter().filter(|(_, at)| **at <= now).map(|(i, _)| *i).collect();
        for i in restart {
            down.remove(&i);
            sim.bounce(names[i].as_str());
            shared.borrow_mut().tell(format!("restart {}", names[i]));
        }
        let phase = shared.borrow().phase;
        match phase {
            Phase::Running if shared.borrow().clients_done == plan.clients => {
                repair_all(sim, &names, &mut cut, &mut held, &mut lossy);
                for (i, _) in std::mem::take(&mut down) {
                    sim.bounce(names[i].as_str());
                }
                let mut s = shared.borrow_mut();
                s.tell("clients done: every link repaired, every node running".into());
                s.phase = Phase::Checking;
            }
            Phase::Running if plan.faults && now >= next_fault => {
                next_fault = now + rng.ms(300, 2500);
                let running = shared.borrow().members(plan);
                let a = rng.below(running);
                let b = (a + 1 + rng.below(running - 1)) % running;
                let leaver = shared.borrow().leaving.map(|(l, _)| l);
                let line = match rng.below(16) {
                    0..=2 => {
                        cut.insert((a, b, false));
                        sim.partition(names[a].as_str(), names[b].as_str());
                        format!("partition {} | {}", names[a], names[b])
                    }
                    3 => {
                        cut.insert((a, b, true));
                        sim.partition_oneway(names[a].as_str(), names[b].as_str());
                        format!("partition {} -> {}", names[a], names[b])
                    }
                    4 => {
                        for j in (0..plan.nodes).filter(|j| *j != a) {
                            cut.insert((a, j, false));
                            sim.partition(names[a].as_str(), names[j].as_str());
                        }
                        format!("isolate {}", names[a])
                    }
                    5 | 6 => {
                        repair_all(sim, &names, &mut cut, &mut held, &mut lossy);
                        "repair every link".into()
                    }
                    10 => {
                        held.insert((a, b));
                        sim.hold(names[a].as_str(), names[b].as_str());
                        format!("hold {} | {} (messages wait)", names[a], names[b])
                    }
                    11 => {
                        lossy.insert((a, b));
                        sim.set_link_fail_rate(names[a].as_str(), names[b].as_str(), 0.05);
                        format!("lossy {} | {} (messages dropped now and then)", names[a], names[b])
                    }
                    12 if plan.joiner && !shared.borrow().joined => {
                        shared.borrow_mut().joined = true;
                        format!("{} joins", names[plan.nodes])
                    }
                    13 => {
                        // An NTP step or an operator's `date -s`: the wall clock moves, time does not. Forward at
                        // most two hours (far below the tombstone grace, which bounds how long a hint may wait).
                        let ms = if rng.below(2) == 0 {
                            rng.ms(1_000, 7_200_000).as_millis() as i64
                        } else {
                            -(rng.ms(1_000, 600_000).as_millis() as i64)
                        };
                        dynamo_kv::sys::sim::jump_clock(ms);
                        format!("every wall clock jumps {:+.1} s", ms as f64 / 1000.0)
                    }
                    14 if leaver.is_none() && down.is_empty() && shared.borrow().staying(plan).len() > 3 => {
                        shared.borrow_mut().leaving = Some((a, false));
                        format!("{} is told to leave", names[a])
                    }
                    7 | 8 if down.is_empty() && leaver != Some(a) => {
                        sim.crash(names[a].as_str());
                        let (data, hints) = disks.lock().unwrap()[a].clone();
                        data.crash();
                        hints.crash();
                        down.insert(a, now + rng.ms(500, 5000));
                        format!("crash {} (kill -9)", names[a])
                    }
                    9 if down.is_empty() && !wiped && leaver != Some(a) => {
                        wiped = true;
                        sim.crash(names[a].as_str());
                        disks.lock().unwrap()[a] = (Arc::new(SimDisk::default()), Arc::new(SimDisk::default()));
                        let _ = std::fs::remove_dir_all(dir.join(&names[a]));
                        down.insert(a, now + rng.ms(500, 5000));
                        format!("wipe {}'s disk", names[a])
                    }
                    _ => continue,
                };
                shared.borrow_mut().tell(line);
            }
            _ => {}
        }
    }
}

/// Repairs every cut link, releases every held one and makes every lossy one reliable again.
fn repair_all(
    sim: &mut turmoil::Sim<'_>,
    names: &[String],
    cut: &mut BTreeSet<(usize, usize, bool)>,
    held: &mut BTreeSet<(usize, usize)>,
    lossy: &mut BTreeSet<(usize, usize)>,
) {
    for (a, b, oneway) in std::mem::take(cut) {
        if oneway {
            sim.repair_oneway(names[a].as_str(), names[b].as_str());
        } else {
            sim.repair(names[a].as_str(), names[b].as_str());
        }
    }
    for (a, b) in std::mem::take(held) {
        sim.release(names[a].as_str(), names[b].as_str());
    }
    for (a, b) in std::mem::take(lossy) {
        sim.set_link_fail_rate(names[a].as_str(), names[b].as_str(), 0.0);
    }
}

async fn connect(node: &str) -> Option<Conn> {
    Conn::connect(&format!("{node}:{CLIENT_PORT}"), CLIENT_TIMEOUT).await.ok()
}

/// One client: carts kept by reading the siblings and writing back their union with the read's context (the
/// paper's shopping cart), and sets written with SADD.
async fn workload(plan: &Plan, c: usize, shared: &Sh) {
    let mut rng = Rng(plan.seed.wrapping_mul(31).wrapping_add(c as u64 + 1));
    while shared.borrow().phase == Phase::Forming {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if shared.borrow().phase == Phase::Done {
        return;
    }
    for i in 0..plan.ops {
        tokio::time::sleep(rng.ms(0, 400)).await;
        let running = shared.borrow().members(plan);
        let node = node_name(rng.below(running));
        let item = format!("c{}.{i}", c + 1);
        let Some(mut conn) = connect(&node).await else {
            shared.borrow_mut().tell(format!("c{} cannot reach {node}", c + 1));
            continue;
        };
        let kind = rng.below(5);
        if kind == 2 {
            increment(&mut conn, &node, c, rng.below(plan.keys), 1 + rng.below(5) as i64, shared).await;
            continue;
        }
        if kind == 3 && rng.below(4) == 0 {
            // SPOP: the member it answers may be gone from then on; one of unknown outcome may have taken any.
            let key = format!("set:{}", rng.below(plan.keys));
            let reply = conn.cmd(&["SPOP", &key]).await;
            let mut s = shared.borrow_mut();
            s.outcome.trace.push(format!("c{} SPOP {key} via {node}: {}", c + 1, show(&reply)));
            match reply {
                Ok(Reply::Bulk(Some(member))) => {
                    s.removed.entry(key).or_default().insert(String::from_utf8_lossy(&member).into_owned());
                }
                Ok(Reply::Bulk(None)) => {}
                _ => *s.blind_pops.entry(key).or_default() += 1,
            }
            continue;
        }
        if kind == 3 {
            // SREM of a member this client added: from then on the member may be gone or not, whatever the reply.
            let k = rng.below(plan.keys);
            let key = format!("set:{k}");
            let mine: Vec<String> = shared
                .borrow()
                .attempted
                .get(&key)
                .map(|items| items.iter().filter(|i| i.starts_with(&format!("c{}.", c + 1))).cloned().collect())
                .unwrap_or_default();
            if mine.is_empty() {
                continue;
            }
            let item = mine[rng.below(mine.len())].clone();
            shared.borrow_mut().removed.entry(key.clone()).or_default().insert(item.clone());
            let reply = conn.cmd(&["SREM", &key, &item]).await;
            shared.borrow_mut().outcome.trace.push(format!(
                "c{} SREM {key} {item} via {node}: {}",
                c + 1,
                show(&reply)
            ));
            continue;
        }
        let (key, reply) = if kind == 0 {
            let key = format!("cart:{}", rng.below(plan.keys));
            let read = conn.cmd(&["GET", &key]).await;
            let Ok(Reply::Array(Some(parts))) = read else {
                shared.borrow_mut().tell(format!("c{} GET {key} via {node}: {}", c + 1, show(&read)));
                continue;
            };
            let mut items = cart_items(&parts[0]);
            items.insert(item.clone());
            let Some(context) = parts[1].text() else { continue };
            let value = items.into_iter().collect::<Vec<_>>().join(",");
            shared.borrow_mut().attempted.entry(key.clone()).or_default().insert(item.clone());
            (key.clone(), conn.cmd(&["SET", &key, &value, "CONTEXT", &context]).await)
        } else {
            let (kind, command) = if kind == 4 { ("list", "RPUSH") } else { ("set", "SADD") };
            let key = format!("{kind}:{}", rng.below(plan.keys));
            shared.borrow_mut().attempted.entry(key.clone()).or_default().insert(item.clone());
            (key.clone(), conn.cmd(&[command, &key, &item]).await)
        };
        let mut s = shared.borrow_mut();
        let ok = matches!(&reply, Ok(Reply::Status(st)) if st == "OK") || matches!(reply, Ok(Reply::Integer(_)));
        s.outcome.trace.push(format!("c{} {key} {item} via {node}: {}", c + 1, show(&reply)));
        if ok {
            s.acked.entry(key).or_default().insert(item);
        } else {
            s.unknown += 1;
            s.tell(format!("c{} write {item} to {key} via {node}: {}", c + 1, show(&reply)));
        }
    }
    shared.borrow_mut().clients_done += 1;
}

/// INCRBY `by` on counter `k` through `node`, recorded as acknowledged or of unknown outcome.
async fn increment(conn: &mut Conn, node: &str, c: usize, k: usize, by: i64, shared: &Sh) {
    let key = format!("counter:{k}");
    let reply = conn.cmd(&["INCRBY", &key, &by.to_string()]).await;
    let mut s = shared.borrow_mut();
    s.outcome.trace.push(format!("c{} {key} +{by} via {node}: {}", c + 1, show(&reply)));
    let sums = s.increments.entry(key.clone()).or_default();
    if matches!(reply, Ok(Reply::Integer(_))) {
        sums.0 += by;
    } else {
        sums.1 += by;
        s.unknown += 1;
        s.tell(format!("c{} INCRBY {key} {by} via {node}: {}", c + 1, show(&reply)));
    }
}

/// The items of a cart read: the union of its siblings (comma-separated items each).
fn cart_items(siblings: &Reply) -> BTreeSet<String> {
    siblings.strings().iter().flat_map(|s| s.split(',').filter(|x| !x.is_empty()).map(str::to_string)).collect()
}

/// INFO dynamo of `node` as fields.
async fn info(node: &str) -> Option<BTreeMap<String, String>> {
    let mut conn = connect(node).await?;
    let text = conn.cmd(&["INFO", "dynamo"]).await.ok()?.text()?;
    Some(text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect())
}

/// Why `node` has not settled (`None`: it has): it must know the whole ring with nothing in transit, nothing to
/// recover, and (when `drained`) no hints left. `nodes` counts every member that ran (a node that left stays listed,
/// as removed), `gone` those that left (unreachable by now).
async fn unsettled(node: &str, nodes: usize, gone: usize, drained: bool) -> Option<String> {
    let Some(f) = info(node).await else { return Some(format!("{node} does not answer")) };
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("?");
    let unreachable: usize = get("members_unreachable").parse().unwrap_or(usize::MAX);
    let settled = get("cluster_state") == "ok"
        && get("ring_transition") == "none"
        && get("recovery") == "none"
        && get("members") == nodes.to_string()
        && unreachable <= gone
        && get("transfers_total") == get("transfers_done")
        && (!drained || get("hints_total") == "0");
    (!settled).then(|| {
        format!(
            "{node}: cluster_state {} members {} unreachable {} transition {} recovery {} transfers {}/{} hints {}",
            get("cluster_state"),
            get("members"),
            get("members_unreachable"),
            get("ring_transition"),
            get("recovery"),
            get("transfers_done"),
            get("transfers_total"),
            get("hints_total")
        )
    })
}

/// Waits until every node has settled, or `timeout` passes; returns what is still unsettled.
async fn settle(plan: &Plan, shared: &Sh, drained: bool, timeout: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        let (members, staying) = (shared.borrow().members(plan), shared.borrow().staying(plan));
        for &i in &staying {
            if let Some(why) = unsettled(&node_name(i), members, members - staying.len(), drained).await {
                left.push(why);
            }
        }
        // A node that was told to leave keeps what it holds until it has pushed it to the replicas, then exits:
        // until then its data is not yet where the final reads look.
        let leaver = shared.borrow().leaving;
        if let Some((i, true)) = leaver
            && connect(&node_name(i)).await.is_some()
        {
            left.push(format!("{} has not finished leaving", node_name(i)));
        }
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The digests of `key`'s replicas (ADMIN KEY through `via`, then ADMIN LOCALGET on each), or why they cannot be
/// had.
async fn replica_digests(key: &str, via: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut conn = connect(via).await.ok_or(format!("{via} does not answer"))?;
    let reply = conn.cmd(&["ADMIN", "KEY", key]).await.map_err(|e| e.to_string())?;
    let Reply::Array(Some(fields)) = reply else { return Err(format!("ADMIN KEY: {reply:?}")) };
    let at = fields.iter().position(|f| f.text().as_deref() == Some("replicas")).ok_or("no replicas field")?;
    let mut digests = BTreeMap::new();
    for replica in fields[at + 1].strings() {
        let mut c = connect(&replica).await.ok_or(format!("{replica} does not answer"))?;
        let reply = c.cmd(&["ADMIN", "LOCALGET", key]).await.map_err(|e| e.to_string())?;
        let Reply::Array(Some(parts)) = reply else { return Err(format!("LOCALGET: {reply:?}")) };
        digests.insert(replica, parts.get(2).and_then(Reply::text));
    }
    Ok(digests)
}

/// The items of `key` read through `node`, as a client would: a request that fails is retried a few times (a
/// connection cut by a partition may cost one timeout before the node reconnects).
async fn final_read(key: &str, node: &str) -> Result<BTreeSet<String>, String> {
    let mut last = String::new();
    for _ in 0..FINAL_READ_ATTEMPTS {
        let read = match connect(node).await {
            None => Err(format!("{node} does not answer")),
            Some(mut c) if key.starts_with("cart:") || key.starts_with("counter:") => {
                match c.cmd(&["GET", key]).await {
                    Ok(Reply::Array(Some(parts))) => Ok(cart_items(&parts[0])),
                    other => Err(format!("GET {key} via {node}: {}", show(&other))),
                }
            }
            Some(mut c) => {
                let (read, count): (&[&str], _) = match key.starts_with("list:") {
                    true => (&["LRANGE", key, "0", "-1"], "LLEN"),
                    false => (&["SMEMBERS", key], "SCARD"),
                };
                // The count (the replicas' tallies when they agree) must say as many as the whole read shows.
                match (c.cmd(read).await, c.cmd(&[count, key]).await) {
                    (Ok(r @ Reply::Array(Some(_))), Ok(Reply::Integer(n))) if r.strings().len() as i64 == n => {
                        Ok(r.strings().into_iter().collect())
                    }
                    (whole, counted) => {
                        Err(format!("{} and {count} {key} via {node}: {}, {}", read[0], show(&whole), show(&counted)))
                    }
                }
            }
        };
        match read {
            Ok(items) => return Ok(items),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}

/// Waits for the cluster to form, lets the clients run, then (after the driver healed everything) waits for the
/// replicas to converge and checks every key through every node.
async fn checker(plan: &Plan, shared: &Sh) {
    let left = settle(plan, shared, false, FORM_TIMEOUT).await;
    if !left.is_empty() {
        let mut s = shared.borrow_mut();
        s.outcome.error = Some(format!("the cluster did not form: {}", left.join("; ")));
        s.clients_done = plan.clients;
        s.phase = Phase::Done;
        return;
    }
    {
        let mut s = shared.borrow_mut();
        s.tell("cluster formed; clients start".into());
        s.phase = Phase::Running;
    }
    while shared.borrow().phase != Phase::Checking {
        let leave = shared.borrow().leaving;
        if let Some((i, false)) = leave {
            // Sent until a node takes it (it may be cut off or crashed when the driver decides).
            let node = node_name(i);
            let reply = match connect(&node).await {
                Some(mut c) => show(&c.cmd(&["ADMIN", "LEAVE"]).await),
                None => format!("{node} does not answer"),
            };
            let mut s = shared.borrow_mut();
            s.tell(format!("ADMIN LEAVE via {node}: {reply}"));
            if reply.starts_with("Status") {
                s.leaving = Some((i, true));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys: Vec<String> =
        (0..plan.keys).flat_map(|k| ["cart", "set", "counter", "list"].map(|kind| format!("{kind}:{k}"))).collect();
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    let (undrained, diverged) = loop {
        let undrained = settle(plan, shared, true, Duration::ZERO).await;
        let mut diverged = Vec::new();
        let via = node_name(shared.borrow().staying(plan)[0]);
        for key in &keys {
            match replica_digests(key, &via).await {
                Ok(d) if d.values().collect::<BTreeSet<_>>().len() <= 1 => {}
                Ok(d) => diverged.push(format!("{key}: {d:?}")),
                Err(e) => diverged.push(format!("{key}: {e}")),
            }
        }
        if (undrained.is_empty() && diverged.is_empty()) || tokio::time::Instant::now() >= deadline {
            break (undrained, diverged);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    shared.borrow_mut().tell(format!("converged: undrained {undrained:?}, diverged {diverged:?}"));
    let mut reads = Vec::new();
    let staying = shared.borrow().staying(plan);
    for key in &keys {
        for &i in &staying {
            let node = node_name(i);
            reads.push((key.clone(), node.clone(), final_read(key, &node).await));
        }
    }
    let mut s = shared.borrow_mut();
    s.outcome.undrained = undrained;
    s.outcome.diverged = diverged;
    for (key, node, read) in reads {
        s.outcome.trace.push(format!("final {key} via {node}: {read:?}"));
        let items = match read {
            Ok(items) => items,
            Err(e) => {
                s.outcome.diverged.push(e);
                continue;
            }
        };
        if key.starts_with("counter:") {
            // Between the acknowledged increments and those plus the ones of unknown outcome (all positive).
            let (acked, unknown) = s.increments.get(&key).copied().unwrap_or_default();
            let value: i64 = items.first().map_or(Ok(0), |v| v.parse()).unwrap_or(i64::MIN);
            if items.len() > 1 || value < acked {
                s.outcome.lost.push(format!("{key}: {items:?} below the {acked} acknowledged (read via {node})"));
            } else if value > acked + unknown {
                s.outcome.unexpected.push(format!("{key}: {value} above {acked} + {unknown} unknown (via {node})"));
            }
            continue;
        }
        let removed = s.removed.get(&key).cloned().unwrap_or_default();
        let acked: BTreeSet<String> =
            s.acked.get(&key).map(|a| a.difference(&removed).cloned().collect()).unwrap_or_default();
        let attempted = s.attempted.get(&key).cloned().unwrap_or_default();
        let missing: Vec<String> = acked.difference(&items).cloned().collect();
        // Each SPOP of unknown outcome may account for one missing member.
        if missing.len() > s.blind_pops.get(&key).copied().unwrap_or(0) {
            for item in missing {
                s.outcome.lost.push(format!("{key}: {item} (read via {node})"));
            }
        }
        for item in items.difference(&attempted) {
            s.outcome.unexpected.push(format!("{key}: {item} (read via {node})"));
        }
    }
    s.phase = Phase::Done;
}
