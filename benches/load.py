#!/usr/bin/env python3
"""Load benchmark: redis-server (appendonly yes, appendfsync everysec) against dynamo-kv (one node N=1; a
three-node cluster N=3 R=2 W=2, separate processes, with the client on node 1, and again with `redis-benchmark --cluster` routing
each key to its slot's node; and a five-node one, where routing saves the forward to a replica), with the same
redis-benchmark commands in the same run, printing requests/s, p50/p99/p99.9 and our/redis ratios, then the
resident memory of each after loading 1M keys of 100 bytes.

Figures only, never a pass/fail: these machines are shared and noisy. Run:

    cargo build --release && python3 benches/load.py [--requests 200000] [--modes fsync,os,buffered]

Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
"""
import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True)
        if r.stdout.strip() == "PONG":
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def bench(port, args):
    """Runs redis-benchmark; returns {test: (rps, p50, p99, p99.9)} from its summary and percentile distribution."""
    cmd = ["redis-benchmark", "-p", str(port), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = {}
    for section in out.split("====== ")[1:]:
        test = section.split(" ======", 1)[0].strip()
        rps = p50 = p99 = p999 = float("nan")
        lines = section.splitlines()
        for i, line in enumerate(lines):
            line = line.strip()
            if line.startswith("throughput summary:"):
                rps = float(line.split()[2])
            elif line.startswith("avg") and "p50" in line and i + 1 < len(lines):
                head, vals = line.split(), lines[i + 1].split()
                p50, p99 = float(vals[head.index("p50")]), float(vals[head.index("p99")])
            elif "% <= " in line and p999 != p999:
                # The percentile distribution: the first line at or past 99.9% bounds p99.9.
                pct, rest = line.split("% <= ", 1)
                if float(pct) >= 99.9:
                    p999 = float(rest.split()[0])
        rows[test] = (rps, p50, p99, p999)
    return rows


def load_keys(port, keys, value_bytes):
    """Writes `keys` distinct keys of `value_bytes` through redis-cli --pipe (one pass, no duplicates)."""
    value = b"x" * value_bytes
    path = tempfile.mktemp(prefix="dkload-")
    with open(path, "wb") as f:
        for i in range(keys):
            k = b"mem:%010d" % i
            f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(value), value))
    try:
        with open(path, "rb") as f:
            out = subprocess.run(["redis-cli", "-p", str(port), "--pipe"], stdin=f, capture_output=True, text=True)
        if "errors: 0" not in out.stdout:
            raise SystemExit(f"loading keys failed: {out.stdout} {out.stderr}")
    finally:
        os.remove(path)


def cpu_seconds(pid):
    """CPU time (user + system) the process has used so far, from its own accounting in /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat (utime, stime), counted after the command name's closing parenthesis.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(procs):
    """CPU seconds used so far by every process of a target together."""
    return sum(cpu_seconds(p.pid) for p in procs)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def start_redis(port, workdir):
    p = subprocess.Popen(
        ["redis-server", "--port", str(port), "--dir", workdir, "--appendonly", "yes", "--appendfsync", "everysec",
         "--save", "", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


METRICS_PORT = 7499


def scrape(name):
    """Sum of one Prometheus metric over its labels, from the node's --metrics-listen endpoint."""
    import urllib.request
    body = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name) and (name.endswith("}") or line[len(name)] in " {"))


def start_node(binary, port, workdir, durability):
    p = subprocess.Popen(
        [binary, "serve", "--node-id", "bench", "--listen", f"127.0.0.1:{port}", "--data-dir",
         os.path.join(workdir, "data"), "--durability", durability, "--metrics-listen", f"127.0.0.1:{METRICS_PORT}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    wait_port(port)
    return p


def start_cluster(binary, port, workdir, durability, nodes=3, peer_tls=False, threads=0):
    """Starts `nodes` separate `serve` processes, as real nodes run (N=3 R=2 W=2): the first, then the others
    joining through it; returns them once node 1 sees every member up, owning ranges, with no transition. Each gets
    `--worker-threads threads` (0: the runtime's default, one per core)."""
    extra = ["--worker-threads", str(threads)] if threads else []
    if peer_tls:
        # One certificate for 127.0.0.1 serves every node (docs/peer-certs.sh, openssl).
        pki = os.path.join(workdir, "pki")
        subprocess.run(["bash", os.path.join(ROOT, "docs", "peer-certs.sh"), pki, "dev=127.0.0.1"], check=True,
                       stdout=subprocess.DEVNULL)
        extra += ["--peer-tls-cert-file", os.path.join(pki, "dev.pem"), "--peer-tls-key-file",
               os.path.join(pki, "dev.key"), "--peer-tls-ca-file", os.path.join(pki, "ca.pem")]
    procs = []
    for i in range(nodes):
        seeds = ["--seeds", f"127.0.0.1:{port + 1000}"] if i else []
        procs.append(subprocess.Popen(
            [binary, "serve", "--node-id", f"b{i + 1}", "--listen", f"127.0.0.1:{port + i}", "--peer-listen",
             f"127.0.0.1:{port + 1000 + i}", "--data-dir", os.path.join(workdir, f"data{i + 1}"), "--durability",
             durability, "--n", "3", "--r", "2", "--w", "2", *seeds, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"}))
        wait_port(port + i)
    # Let membership converge (every node knows every other) and the joins' handoffs finish before measuring.
    deadline = time.time() + 60
    while time.time() < deadline:
        out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "dynamo"], capture_output=True, text=True).stdout
        if f"members:{nodes}" in out and "members_unreachable:0" in out and "ring_transition:none" in out \
                and "partitions_owned:0" not in out:
            break
        time.sleep(0.2)
    return procs


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200_000, help="requests per throughput run")
    ap.add_argument("--latency-requests", type=int, default=20_000, help="requests per -c 1 latency run")
    ap.add_argument("--modes", default="os,fsync",
                    help="dynamo-kv durability modes to measure (the targets are read on `os`)")
    ap.add_argument("--no-cluster", action="store_true", help="skip the 3- and 5-node N=3 R=2 W=2 clusters")
    ap.add_argument("--peer-tls", action="store_true", help="also measure the cluster with mutual TLS between nodes")
    ap.add_argument("--node-threads", type=int, default=0,
                    help="--worker-threads of each cluster node (0: the default, one per core). Its nodes share this "
                         "machine's cores, as real nodes would not; 1 each is docs/PERFORMANCE.md's open item 6")
    ap.add_argument("--memory-keys", type=int, default=1_000_000, help="keys of 100 bytes loaded for RSS (0: skip)")
    ap.add_argument("--suite-requests", type=int, default=2_000,
                    help="requests per test of redis-benchmark's default suite (every data type; 0: skip)")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "dynamo-kv"))
    a = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (Debian: apt-get install redis-server redis-tools)")
    if not os.path.exists(a.binary):
        raise SystemExit(f"{a.binary} not found: run `cargo build --release` first")

    common = ["-t", "set,get", "-r", "100000", "-d", "100"]
    runs = [
        ("c50", common + ["-c", "50", "-n", str(a.requests)]),
        ("c50 P16", common + ["-c", "50", "-P", "16", "-n", str(a.requests * 4)]),
        ("c1", common + ["-c", "1", "-n", str(a.latency_requests)]),
    ]
    targets = [("redis-server", None, 1, False)] + [(f"N=1 {m}", m, 1, False) for m in a.modes.split(",")]
    if not a.no_cluster:
        targets += [(f"3 nodes N=3 {m}", m, 3, False) for m in a.modes.split(",")]
        # On 3 nodes with N=3 every node holds every key, so routing saves no hop; on 5 it does.
        targets += [(f"5 nodes N=3 {a.modes.split(',')[0]}", a.modes.split(",")[0], 5, False)]
        if a.peer_tls:
            targets += [(f"3 nodes {m} TLS", m, 3, True) for m in a.modes.split(",")]
    # Cluster-aware routing (issue 16, paper §6.4): redis-benchmark --cluster reads CLUSTER NODES and sends each
    # key to the node that coordinates its slot first, beside the runs above that all go through node 1.
    cluster_runs = [
        ("c50 cl", common + ["--cluster", "-c", "50", "-n", str(a.requests)]),
        ("P16 cl", common + ["--cluster", "-c", "50", "-P", "16", "-n", str(a.requests * 4)]),
    ]
    # redis-benchmark's default suite (no -t): every test, the typed ones included, on one node and on 3 nodes.
    suite_run = ("suite", ["-c", "50", "-n", str(a.suite_requests)])
    results = {}
    cpu = {}  # (target, run, test): server CPU microseconds per request, every node process together
    memory = {}
    group_commit = {}
    for name, mode, nodes, peer_tls in targets:
        work = tempfile.mkdtemp(prefix="dkbench-")
        port = 7490 if mode is None else 7491
        if mode is None:
            procs = [start_redis(port, work)]
        elif nodes == 1:
            procs = [start_node(a.binary, port, work, mode)]
        else:
            procs = start_cluster(a.binary, port, work, mode, nodes, peer_tls, a.node_threads)
        try:
            for label, args in (runs[:2] if nodes > 3 else runs) + (cluster_runs if nodes > 1 else []):
                group = mode == "fsync" and nodes == 1
                if group:
                    before = (scrape("dynamo_storage_fsyncs_total"), scrape('dynamo_commands_total{command="set"}'))
                # One test per redis-benchmark run, so the server's CPU time between runs is that test's alone.
                for test_flag in ("set", "get"):
                    run_args = [x for x in args if x != "set,get"]
                    run_args[run_args.index("-t") + 1:run_args.index("-t") + 1] = [test_flag]
                    cpu_before = cpu_of(procs)
                    for test, fig in bench(port, run_args).items():
                        results[(name, label, test)] = fig
                        requests = int(run_args[run_args.index("-n") + 1])
                        cpu[(name, label, test)] = (cpu_of(procs) - cpu_before) / requests * 1e6
                if group:
                    # Group commit (paper §6.1): how many acknowledged writes each fsync covered.
                    fsyncs = scrape("dynamo_storage_fsyncs_total") - before[0]
                    sets = scrape('dynamo_commands_total{command="set"}') - before[1]
                    group_commit[label] = sets / max(fsyncs, 1)
                print(f"  measured {name} {label}", file=sys.stderr, flush=True)
            first_mode = mode is None or mode == a.modes.split(",")[0]
            if a.suite_requests and nodes <= 3 and first_mode and not peer_tls:
                for test, fig in bench(port, suite_run[1]).items():
                    results[(name, "suite", test)] = fig
                print(f"  measured {name} suite", file=sys.stderr, flush=True)
            if a.memory_keys:
                # A fresh keyspace on top of the benchmark's 100k keys; RSS once the load settled.
                load_keys(port, a.memory_keys, 100)
                time.sleep(3)
                keys = int(subprocess.run(["redis-cli", "-p", str(port), "DBSIZE"], capture_output=True,
                                          text=True).stdout.strip() or 0)
                memory[name] = (sum(rss_bytes(p.pid) for p in procs) / nodes, keys)
        finally:
            for p in procs:
                stop(p)
            shutil.rmtree(work, ignore_errors=True)

    print(f"cluster nodes run with --worker-threads {a.node_threads or 'default (one per core)'}")
    print(f"{'target':<20} {'run':<8} {'test':<5} {'rps':>9} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} "
          f"{'rps ratio':>9} {'p99 ratio':>9}")
    for name, _, _, _ in targets:
        for label, _ in runs + cluster_runs:
            for test in ("SET", "GET"):
                fig = results.get((name, label, test))
                # Cluster-routed runs compare with redis-server's run at the same concurrency and pipeline.
                base = results.get(("redis-server", {"c50 cl": "c50", "P16 cl": "c50 P16"}.get(label, label), test))
                if not fig:
                    continue
                rr = fig[0] / base[0] if base and base[0] else float("nan")
                pr = fig[2] / base[2] if base and base[2] else float("nan")
                print(f"{name:<20} {label:<8} {test:<5} {fig[0]:>9.0f} {fig[1]:>7.3f} {fig[2]:>7.3f} {fig[3]:>8.3f} "
                      f"{rr:>8.2f}x {pr:>8.2f}x")
    if cpu:
        print("\nServer CPU time per request (user + system, us; a cluster: every node process together)")
        print(f"{'target':<20} {'run':<8} {'test':<5} {'cpu us':>7} {'ratio':>7}")
        for name, _, _, _ in targets:
            for label, _ in runs + cluster_runs:
                for test in ("SET", "GET"):
                    us = cpu.get((name, label, test))
                    base = cpu.get(("redis-server", {"c50 cl": "c50", "P16 cl": "c50 P16"}.get(label, label), test))
                    if us is None:
                        continue
                    ratio = f"{us / base:>6.2f}x" if base else "      -"
                    print(f"{name:<20} {label:<8} {test:<5} {us:>7.2f} {ratio}")
    suite_tests = [t for (n, label, t) in results if n == "redis-server" and label == "suite"]
    if suite_tests:
        print(f"\nredis-benchmark's default suite, -c 50 -n {a.suite_requests}: rps (ratio to redis-server)")
        names = [n for n, _, _, _ in targets if (n, "suite", suite_tests[0]) in results]
        print(f"{'test':<36} " + " ".join(f"{n:>22}" for n in names))
        for test in suite_tests:
            base = results[("redis-server", "suite", test)][0]
            cells = []
            for n in names:
                fig = results.get((n, "suite", test))
                cells.append(f"{fig[0]:>12.0f} ({fig[0] / base:>5.2f}x)" if fig else f"{'-':>22}")
            print(f"{test[:36]:<36} " + " ".join(f"{c:>22}" for c in cells))
    if group_commit:
        print("\nN=1 fsync, group commit: SETs acknowledged per fsync")
        for label, per in group_commit.items():
            print(f"  {label:<8} {per:>7.1f} writes per fsync")
    if memory:
        print(f"\nRSS after loading {a.memory_keys} keys of 100 bytes on top of the benchmark's keys (DBSIZE: keys "
              f"held per node); a cluster's figure is its processes' RSS summed, / nodes:")
        base = memory.get("redis-server", (0, 0))[0]
        for name, (rss, keys) in memory.items():
            ratio = f"{rss / base:.2f}x" if base else "-"
            print(f"  {name:<20} {rss / 2**20:>8.1f} MiB  {keys:>8} keys  {rss / max(keys, 1):>6.0f} bytes/key  {ratio}")
    summarize_targets(results, cpu, memory)


def summarize_targets(results, cpu, memory):
    """One line per target of the speed issue (docs/PERFORMANCE.md): the figure, the bound, met or not. Targets
    whose runs were skipped are left out."""
    def rps_ratio(name, label, test):
        fig, base = results.get((name, label, test)), results.get(("redis-server", label, test))
        return fig[0] / base[0] if fig and base and base[0] else None

    def p99_ratio(name, label, test):
        fig, base = results.get((name, label, test)), results.get(("redis-server", label, test))
        return fig[2] / base[2] if fig and base and base[2] else None

    one, three = "N=1 os", "3 nodes N=3 os"
    lines = []

    def check(what, value, bound, at_most=True, unit="x"):
        if value is None:
            return
        met = value <= bound if at_most else value >= bound
        sign = "<=" if at_most else ">="
        lines.append(f"  {'met' if met else 'NOT met':<8} {what:<52} {value:>8.2f}{unit} (target {sign} {bound}{unit})")

    check("one node, CPU per SET at -P 16", cpu.get((one, "c50 P16", "SET")), 4, unit=" us")
    check("one node, CPU per GET at -P 16", cpu.get((one, "c50 P16", "GET")), 3, unit=" us")
    check("3 nodes, CPU per replicated SET at c50 (all nodes)", cpu.get((three, "c50", "SET")), 30, unit=" us")
    c50, p16 = cpu.get((three, "c50", "SET")), cpu.get((three, "c50 P16", "SET"))
    if c50 and p16:
        check("3 nodes, CPU per SET at -P 16 / at c50", p16 / c50, 1.0)
    for test in ("SET", "GET"):
        check(f"one node, {test} rps at c50 vs redis-server", rps_ratio(one, "c50", test), 0.9, at_most=False)
        check(f"one node, {test} rps at -P 16 vs redis-server", rps_ratio(one, "c50 P16", test), 0.5, at_most=False)
        check(f"one node, {test} p99 at -P 16 vs redis-server", p99_ratio(one, "c50 P16", test), 3)
        check(f"3 nodes, {test} rps at c50 vs redis-server", rps_ratio(three, "c50", test), 0.45, at_most=False)
        check(f"3 nodes, {test} rps at -P 16 vs redis-server", rps_ratio(three, "c50 P16", test), 0.4, at_most=False)
        a, b = results.get((three, "c50", test)), results.get((three, "c50 P16", test))
        if a and b and a[0]:
            check(f"3 nodes, {test} rps gain of -P 16 over c50", b[0] / a[0], 1.5, at_most=False)
        check(f"3 nodes, {test} p99 at c50 vs redis-server", p99_ratio(three, "c50", test), 3)
    if one in memory and "redis-server" in memory and memory["redis-server"][0]:
        check("one node, RSS after 1M keys vs redis-server", memory[one][0] / memory["redis-server"][0], 1.0)
    if lines:
        print("\nTargets (docs/PERFORMANCE.md): figure, bound, met or not")
        print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
