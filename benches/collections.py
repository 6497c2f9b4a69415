#!/usr/bin/env python3
"""Typed-key cost versus collection size: one SADD, HSET, RPUSH or ZADD of a new element on a collection of 10 to
100,000 elements, on redis-server and on a three-node dev cluster (N=3 R=2 W=2, client on node 1).

For each type and size it prints the median latency of a write, the server CPU time per write (from the process's
own accounting in /proc/PID/stat; the dev cluster is one process, so its figure covers all three nodes), and the
bytes of peer requests per write (`dynamo_rpc_request_bytes_total`: what replicating it cost on the wire). Then,
for the largest size, memory per element: redis-server's `used_memory` growth, and dynamo-kv's RSS and disk growth
per node.

Figures only, never a pass/fail. Issue 17 asks that a write cost about the same at 100,000 elements as at 10:
these numbers show where that stands. Run:

    cargo build --release && python3 benches/collections.py [--sizes 10,100,1000,10000,100000] [--writes 100]

Needs redis-server (Debian: redis-server).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (shares the process helpers)

sys.path.insert(0, os.path.join(ROOT, "compat"))
from differential import Resp  # noqa: E402  (the RESP client the differential test uses)

HTTP_PORT = 7699


class Client:
    """Commands and their replies over compat/differential.py's RESP client; an error reply raises."""

    def __init__(self, port):
        self.resp = Resp(port)

    def call(self, *args):
        reply = self.resp.call(*args)
        if reply[0] == "error":
            raise RuntimeError(reply[1].decode())
        return reply[1] if len(reply) > 1 else None


# (name, command building n new elements of collection `key` starting at element `first`)
TYPES = {
    "set SADD": lambda key, first, n: ["SADD", key, *[b"member:%09d" % i for i in range(first, first + n)]],
    "hash HSET": lambda key, first, n: ["HSET", key, *[x for i in range(first, first + n)
                                                      for x in (b"field:%09d" % i, b"value-%09d" % i)]],
    "list RPUSH": lambda key, first, n: ["RPUSH", key, *[b"item-%09d" % i for i in range(first, first + n)]],
    "zset ZADD": lambda key, first, n: ["ZADD", key, *[x for i in range(first, first + n)
                                                      for x in (str(i).encode(), b"member:%09d" % i)]],
}


def scrape():
    body = urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("dynamo_rpc_request_bytes_total"))


def build(client, kind, key, size, chunk=1000):
    """Fills `key` to `size` elements, `chunk` per command."""
    done = 0
    while done < size:
        n = min(chunk, size - done)
        client.call(*TYPES[kind](key, done, n))
        done += n


def measure(client, pid, kind, keys, size, writes, dynamo):
    """Median latency (ms), CPU per write (us) and peer request bytes per write of `writes` single-element writes,
    spread over `keys` (collections of `size` elements) so that none grows by more than a tenth."""
    latencies = []
    cpu_before = load.cpu_seconds(pid)
    bytes_before = scrape() if dynamo else 0
    for i in range(writes):
        cmd = TYPES[kind](keys[i % len(keys)], size + i // len(keys), 1)
        started = time.perf_counter()
        client.call(*cmd)
        latencies.append((time.perf_counter() - started) * 1000)
    cpu = (load.cpu_seconds(pid) - cpu_before) / writes * 1e6
    sent = (scrape() - bytes_before) / writes if dynamo else float("nan")
    return statistics.median(latencies), cpu, sent


def info_field(client, section, field):
    text = client.call("INFO", section).decode()
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":", 1)[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000,10000,100000")
    ap.add_argument("--writes", type=int, default=100, help="single-element writes measured per type and size")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "dynamo-kv"))
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server not found (Debian: apt-get install redis-server)")
    rows = {}
    memory = {}
    for target in ("redis-server", "3 nodes N=3"):
        work = tempfile.mkdtemp(prefix="dkcoll-")
        dynamo = target != "redis-server"
        if dynamo:
            proc = subprocess.Popen(
                [a.binary, "dev", "--nodes", "3", "--port", "7691", "--data-dir", os.path.join(work, "data"),
                 "--metrics-listen", f"127.0.0.1:{HTTP_PORT}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
            port = 7691
            for i in range(3):
                load.wait_port(port + i)
            time.sleep(3)
        else:
            port = 7690
            proc = load.start_redis(port, work)
        try:
            client = Client(port)
            # Memory per element first, on the fresh server: a set of the largest size in chunks of 10,000 (few
            # rewrites of the whole state), then a pause for flushes.
            big = max(sizes)
            memory_before = (load.rss_bytes(proc.pid), info_field(client, "dynamo", "disk_bytes") if dynamo else
                             info_field(client, "memory", "used_memory"))
            build(client, "set SADD", "bench:memory", big, chunk=10_000)
            time.sleep(5)
            memory_after = (load.rss_bytes(proc.pid), info_field(client, "dynamo", "disk_bytes") if dynamo else
                            info_field(client, "memory", "used_memory"))
            memory[target] = ((memory_after[0] - memory_before[0]) / big / (3 if dynamo else 1),
                              (memory_after[1] - memory_before[1]) / big)
            for kind in TYPES:
                for size in sizes:
                    # Small collections get more writes, so that CPU time (counted in 10 ms ticks) is readable,
                    # spread over enough keys that each grows by at most a tenth.
                    writes = min(2000, a.writes * max(1, 1000 // size))
                    per_key = max(1, size // 10)
                    keys = [f"bench:{kind.split()[0]}:{size}:{k}" for k in range(-(-writes // per_key))]
                    for key in keys:
                        build(client, kind, key, size)
                    rows[(target, kind, size)] = measure(client, proc.pid, kind, keys, size, writes, dynamo)
                    print(f"  measured {target} {kind} {size}", file=sys.stderr, flush=True)
        finally:
            load.stop(proc)
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nOne write of a new element, by collection size ({a.writes} writes each, more below 1,000 elements, over "
          "keys that grow by at most a tenth; CPU: all server processes; bytes: peer requests)")
    print(f"{'type':<11} {'size':>7} {'redis ms':>9} {'redis cpu us':>12} {'dynamo ms':>10} {'dynamo cpu us':>13} "
          f"{'bytes/write':>11}")
    for kind in TYPES:
        for size in sizes:
            r = rows[("redis-server", kind, size)]
            d = rows[("3 nodes N=3", kind, size)]
            print(f"{kind:<11} {size:>7} {r[0]:>9.3f} {r[1]:>12.1f} {d[0]:>10.3f} {d[1]:>13.1f} {d[2]:>11.0f}")
    print(f"\nMemory per element of a set of {max(sizes)} members (built 10,000 at a time on a fresh server, "
          "measured 5 s later)")
    r, d = memory["redis-server"], memory["3 nodes N=3"]
    print(f"  redis-server: used_memory {r[1]:.0f} B, RSS {r[0]:.0f} B")
    print(f"  dynamo-kv, per node: RSS {d[0]:.0f} B, disk (node 1's data directory, superseded states not yet "
          f"compacted included) {d[1]:.0f} B")


if __name__ == "__main__":
    sys.exit(main())
