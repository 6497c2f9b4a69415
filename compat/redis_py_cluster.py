#!/usr/bin/env python3
"""redis-py's RedisCluster against a 5-node cluster (N=3): it learns the slot map from CLUSTER SLOTS, sends each key
to a node that holds it (so nothing is forwarded), and keeps working when a node is killed (after refreshing its
map), with nothing lost."""
import os
import subprocess
import tempfile
import time

import redis
from redis.cluster import RedisCluster

from checks import Checks

BIN = os.environ.get("DYNAMO_KV_BIN", "target/debug/dynamo-kv")
BASE = int(os.environ.get("PORT", "7311"))
check = Checks("redis-py cluster")


def start(i, seed):
    d = tempfile.mkdtemp()
    args = [BIN, "serve", "--node-id", f"c{i}", "--listen", f"127.0.0.1:{BASE + i}",
            "--peer-listen", f"127.0.0.1:{BASE + 10000 + i}", "--data-dir", d + "/data",
            "--membership-interval-ms", "200", "--request-timeout-ms", "1000"]
    if seed:
        args += ["--seeds", f"127.0.0.1:{BASE + 10000}"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert "ready" in p.stdout.readline().decode()
    return p


def settled(port, members):
    r = redis.Redis(port=port)
    info = r.info("dynamo")
    return info.get("members") == members and info.get("ring_transition") == "none" and info.get("recovery") == "none"


NODES = 5
nodes = [start(0, False)] + [start(i, True) for i in range(1, NODES)]


def forwarded(ports):
    return sum(redis.Redis(port=p).info("stats")["writes_forwarded"] for p in ports)



try:
    deadline = time.time() + 30
    while not all(settled(BASE + i, NODES) for i in range(NODES)):
        assert time.time() < deadline, "cluster did not settle"
        time.sleep(0.2)
    rc = RedisCluster(host="127.0.0.1", port=BASE)
    check("the client sees every node", len(rc.get_nodes()) == NODES)
    check("CLUSTER KEYSLOT as Redis", rc.cluster_keyslot("foo") == 12182)
    before = forwarded(BASE + i for i in range(NODES))
    for i in range(10000):
        rc.set(f"rc{i}", i)
    ok = all(rc.execute_command("GET", f"rc{i}")[0] == [str(i).encode()] for i in range(10000))
    check("10000 keys written and read back through the slot map", ok)
    fwd = forwarded(BASE + i for i in range(NODES)) - before
    check(f"writes go to a replica of their key ({fwd} of 10000 forwarded)", fwd <= 100)
    # The slot map names, for each key, a node that holds it: the write was coordinated there, not forwarded.
    direct = 0
    for i in range(0, 1000, 50):
        key = f"rc{i}"
        node = rc.get_node_from_key(key)
        held = redis.Redis(port=node.port).execute_command("ADMIN", "LOCALGET", key)[0]
        direct += held == [str(i).encode()]
    check("each key's node in the slot map holds it", direct == 20)
    # Multi-key commands across slots: the client splits them by slot, and each node serves its part.
    pairs = {f"m{i}": str(i) for i in range(100)}
    check("mset across slots", rc.mset_nonatomic(pairs) is not None)
    got = rc.mget_nonatomic(list(pairs))
    check("mget across slots", [v[0] for v in got] == [[str(i).encode()] for i in range(100)])
    check("delete across slots", rc.delete(*pairs) == 100)
    # Key iteration over the whole cluster through one node, and continued through another.
    many = {f"scan:{i}": "v" for i in range(10000)}
    for start in range(0, 10000, 1000):
        rc.mset_nonatomic(dict(list(many.items())[start:start + 1000]))
    seen = set(k.decode() for k in redis.Redis(port=BASE).scan_iter(match="scan:*", count=500))
    check("scan_iter through one node sees all 10000 keys", seen == set(many))
    cursor, seen, turn = 0, set(), 0
    while True:
        cursor, keys = redis.Redis(port=BASE + turn % NODES).scan(cursor, match="scan:*", count=700)
        seen.update(k.decode() for k in keys)
        turn += 1
        if cursor == 0:
            break
    check("a scan continued through every node sees all 10000 keys", seen == set(many))
    check("keys with a pattern", len(redis.Redis(port=BASE + 1).keys("scan:99*")) == 111)
    nodes[NODES - 1].kill()
    nodes[NODES - 1].wait()
    deadline = time.time() + 60
    lost, i, wrote = [], 0, False
    while time.time() < deadline and not wrote:
        try:
            # Resumes where a connection error stopped it: the client refreshes its map and goes on.
            while i < 10000:
                if rc.execute_command("GET", f"rc{i}")[0] != [str(i).encode()]:
                    lost.append(i)
                i += 1
            rc.set("after-kill", 1)
            wrote = True
        except (redis.ConnectionError, redis.TimeoutError, redis.ClusterDownError):
            time.sleep(0.5)
    check("after a node is killed the client carries on, nothing lost", wrote and lost == [])
finally:
    for p in nodes:
        p.kill()
        p.wait()

check.finish()
