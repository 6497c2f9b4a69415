#!/usr/bin/env python3
"""Load benchmark: redis-server (appendonly yes, appendfsync everysec) against dynamo-kv (one node N=1, and a
three-node dev cluster N=3 R=2 W=2 with the client on node 1), with the same redis-benchmark commands in the same
run, printing requests/s, p50/p99 and our/redis ratios.

Figures only, never a pass/fail: these machines are shared and noisy. Run:

    cargo build --release && python3 benches/load.py [--requests 200000] [--modes os,buffered]

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
    """Runs redis-benchmark --csv; returns {test: (rps, p50, p99)}."""
    cmd = ["redis-benchmark", "-p", str(port), "--csv", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = {}
    for row in csv.DictReader(io.StringIO(out)):
        rows[row["test"]] = (float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"]))
    return rows


def start_redis(port, workdir):
    p = subprocess.Popen(
        ["redis-server", "--port", str(port), "--dir", workdir, "--appendonly", "yes", "--appendfsync", "everysec",
         "--save", "", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def start_node(binary, port, workdir, durability):
    p = subprocess.Popen(
        [binary, "serve", "--node-id", "bench", "--listen", f"127.0.0.1:{port}", "--data-dir",
         os.path.join(workdir, "data"), "--durability", durability],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    wait_port(port)
    return p


def start_cluster(binary, port, workdir, durability, nodes=3):
    p = subprocess.Popen(
        [binary, "dev", "--nodes", str(nodes), "--port", str(port), "--data-dir", os.path.join(workdir, "data"),
         "--durability", durability],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
    for i in range(nodes):
        wait_port(port + i)
    # Let membership converge (every node knows every other) before measuring.
    deadline = time.time() + 20
    while time.time() < deadline:
        out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "dynamo"], capture_output=True, text=True).stdout
        if f"members:{nodes}" in out and "members_unreachable:0" in out and "ring_transition:none" in out \
                and "partitions_owned:0" not in out:
            break
        time.sleep(0.2)
    return p


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
    ap.add_argument("--modes", default="os,buffered", help="dynamo-kv durability modes to measure")
    ap.add_argument("--no-cluster", action="store_true", help="skip the 3-node N=3 R=2 W=2 cluster")
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
    targets = [("redis-server", None, 1)] + [(f"dynamo-kv N=1 {m}", m, 1) for m in a.modes.split(",")]
    if not a.no_cluster:
        targets += [(f"dynamo-kv 3 nodes N=3 {m}", m, 3) for m in a.modes.split(",")]
    results = {}
    for name, mode, nodes in targets:
        work = tempfile.mkdtemp(prefix="dkbench-")
        port = 7490 if mode is None else 7491
        if mode is None:
            proc = start_redis(port, work)
        elif nodes == 1:
            proc = start_node(a.binary, port, work, mode)
        else:
            proc = start_cluster(a.binary, port, work, mode, nodes)
        try:
            for label, args in runs:
                for test, fig in bench(port, args).items():
                    results[(name, label, test)] = fig
        finally:
            stop(proc)
            shutil.rmtree(work, ignore_errors=True)

    print(f"{'target':<24} {'run':<8} {'test':<5} {'rps':>10} {'p50 ms':>8} {'p99 ms':>8} {'rps ratio':>10} {'p99 ratio':>10}")
    for name, _, _ in targets:
        for label, _ in runs:
            for test in ("SET", "GET"):
                fig = results.get((name, label, test))
                base = results.get(("redis-server", label, test))
                if not fig:
                    continue
                rr = fig[0] / base[0] if base and base[0] else float("nan")
                pr = fig[2] / base[2] if base and base[2] else float("nan")
                print(f"{name:<24} {label:<8} {test:<5} {fig[0]:>10.0f} {fig[1]:>8.3f} {fig[2]:>8.3f} {rr:>9.2f}x {pr:>9.2f}x")


if __name__ == "__main__":
    sys.exit(main())
