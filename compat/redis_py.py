#!/usr/bin/env python3
"""redis-py against a node, over RESP2 and RESP3 (redis-py 8 sends HELLO 3 when asked for protocol 3):
connect, plain usage, pipelines and transactions, the shopping cart with contexts, MGET/MSET and the plain mode,
errors, and AUTH."""
import os
import subprocess
import tempfile
import time

import redis

from checks import Checks

BIN = os.environ.get("DYNAMO_KV_BIN", "target/debug/dynamo-kv")
PORT = int(os.environ.get("PORT", "7302"))
check = Checks("redis-py")


def start(*extra):
    d = tempfile.mkdtemp()
    p = subprocess.Popen(
        [BIN, "serve", "--node-id", "py", "--listen", f"127.0.0.1:{PORT}", "--data-dir", d + "/data", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = p.stdout.readline().decode()
    assert "ready" in line, line
    return p


def cart(r, label):
    r.execute_command("SET", "cart", "[]")
    values, ctx = r.execute_command("GET", "cart")
    r.execute_command("SET", "cart", "[book]", "CONTEXT", ctx)
    r.execute_command("SET", "cart", "[pen]", "CONTEXT", ctx)
    values, ctx2 = r.execute_command("GET", "cart")
    check(f"{label}: siblings", sorted(values) == [b"[book]", b"[pen]"])
    merged = b"[" + b",".join(sorted(v.strip(b"[]") for v in values)) + b"]"
    r.execute_command("SET", "cart", merged, "CONTEXT", ctx2)
    values, _ = r.execute_command("GET", "cart")
    check(f"{label}: reconciled", values == [b"[book,pen]"])


node = start()
try:
    for proto in (2, 3):
        r = redis.Redis(port=PORT, protocol=proto)
        label = f"RESP{proto}"
        check(f"{label}: ping", r.ping() is True)
        check(f"{label}: set", r.set("k", "v") is True)
        check(f"{label}: get", r.execute_command("GET", "k")[0] == [b"v"])
        check(f"{label}: exists", r.exists("k", "nope") == 1)
        check(f"{label}: client id", isinstance(r.client_id(), int))
        check(f"{label}: info", r.info("server")["redis_version"].startswith("7."))
        check(f"{label}: config get", r.config_get("appendonly")["appendonly"] in ("yes", "no"))
        p = r.pipeline(transaction=False)
        for i in range(100):
            p.set(f"p{i}", i)
        p.execute_command("GET", "p99")
        res = p.execute()
        check(f"{label}: pipeline answered in order", res[:100] == [True] * 100 and res[100][0] == [b"99"])
        # The default pipeline is a transaction (MULTI ... EXEC in one batch).
        p = r.pipeline()
        p.set(f"tx{proto}:a", 1)
        p.set(f"tx{proto}:b", 2)
        check(f"{label}: transaction pipeline", p.execute() == [True, True])
        check(f"{label}: transaction applied", r.execute_command("GET", f"tx{proto}:b")[0] == [b"2"])
        p = r.pipeline()
        p.set(f"tx{proto}:c", 1)
        p.execute_command("NOSUCHCOMMAND")
        try:
            p.execute()
            check(f"{label}: transaction with a bad command aborts", False)
        except redis.ResponseError as e:
            check(f"{label}: transaction with a bad command aborts", "EXECABORT" in str(e) or "unknown command" in str(e))
        check(f"{label}: aborted transaction applied nothing", r.execute_command("GET", f"tx{proto}:c")[0] == [])
        try:
            # Optimistic locking as redis-py does it: WATCH on a pipeline.
            r.pipeline().watch("k")
            check(f"{label}: WATCH refused", False)
        except redis.ResponseError as e:
            check(f"{label}: WATCH refused", "WATCH is not supported" in str(e))
        cart(r, label)
        try:
            r.execute_command("SET", "k", "x", "CONTEXT", "tampered")
            check(f"{label}: bad context refused", False)
        except redis.ResponseError as e:
            check(f"{label}: bad context refused", "invalid context" in str(e))
        check(f"{label}: delete", r.delete("k") == 1 and r.execute_command("GET", "k")[0] == [])
        check(f"{label}: mset", r.mset({"m1": "a", "m2": "b"}) is True)
        check(f"{label}: mget versioned", [v[0] for v in r.mget("m1", "none", "m2")] == [[b"a"], [], [b"b"]])
        # The plain mode: Redis's replies, so get() and mget() return strings as they do against Redis.
        plain = redis.Redis(port=PORT, protocol=proto, decode_responses=True)
        plain.execute_command("CLIENT", "VALUES", "PLAIN")
        check(f"{label}: plain get", plain.get("m1") == "a" and plain.get("none") is None)
        check(f"{label}: plain mget", plain.mget("m1", "none", "m2") == ["a", None, "b"])
        check(f"{label}: plain unlink", plain.unlink("m1", "m2") == 2 and plain.mget("m1", "m2") == [None, None])
        check(f"{label}: dbsize", r.dbsize() >= 100)
        # Typed keys through redis-py's own methods, as an application written for Redis calls them.
        t = f"t{proto}:"
        check(f"{label}: incr", plain.incr(t + "n") == 1 and plain.incrby(t + "n", 9) == 10 and plain.get(t + "n") == "10")
        check(f"{label}: sadd/smembers", plain.sadd(t + "s", "a", "b") == 2 and plain.smembers(t + "s") == {"a", "b"})
        check(f"{label}: hset/hgetall", plain.hset(t + "h", mapping={"f": "1", "g": "2"}) == 2
              and plain.hgetall(t + "h") == {"f": "1", "g": "2"} and plain.hincrby(t + "h", "f", 5) == 6)
        check(f"{label}: lists", plain.rpush(t + "l", "a", "b") == 2 and plain.lpush(t + "l", "z") == 3
              and plain.lrange(t + "l", 0, -1) == ["z", "a", "b"] and plain.lpop(t + "l") == "z")
        check(f"{label}: zadd/zrange", plain.zadd(t + "z", {"a": 1.5, "b": 0.5}) == 2
              # (redis-py gives tuples over RESP2 and lists over RESP3, against Redis too)
              and [tuple(x) for x in plain.zrange(t + "z", 0, -1, withscores=True)] == [("b", 0.5), ("a", 1.5)]
              and plain.zincrby(t + "z", 2, "b") == 2.5 and plain.zscore(t + "z", "a") == 1.5)
        check(f"{label}: type", [plain.type(t + x) for x in "nshlz"] == ["string", "set", "hash", "list", "zset"])
        # Expiry as redis-py applications use it: set(ex=), expire(), ttl(), persist(), and lock() (SET NX PX).
        check(f"{label}: set ex/ttl", plain.set(t + "e", "v", ex=100) is True and 99 <= plain.ttl(t + "e") <= 100)
        check(f"{label}: expire/persist", plain.expire(t + "s", 50) is True and 0 < plain.pttl(t + "s") <= 50000
              and plain.persist(t + "s") is True and plain.ttl(t + "s") == -1)
        check(f"{label}: setex/getex", plain.setex(t + "x", 30, "v") is True
              and plain.getex(t + "x", persist=True) == "v" and plain.ttl(t + "x") == -1)
        # (release() runs a Lua script, which dynamo-kv does not offer; a lock here ends at its timeout.)
        lock = plain.lock(t + "lock", timeout=0.3, blocking=False)
        other = plain.lock(t + "lock", timeout=0.3, blocking=False)
        check(f"{label}: lock", lock.acquire() and not other.acquire() and 0 < plain.pttl(t + "lock") <= 300)
        time.sleep(0.5)
        check(f"{label}: lock free after its timeout", other.acquire())
        try:
            plain.lpush(t + "s", "x")
            check(f"{label}: WRONGTYPE", False)
        except redis.exceptions.ResponseError as e:
            check(f"{label}: WRONGTYPE", "WRONGTYPE" in str(e))
finally:
    node.terminate()
    node.wait()

node = start("--requirepass", "pw")
try:
    try:
        redis.Redis(port=PORT).get("x")
        check("NOAUTH without password", False)
    except redis.AuthenticationError:
        check("NOAUTH without password", True)
    except redis.ResponseError as e:
        check("NOAUTH without password", "NOAUTH" in str(e))
    for proto in (2, 3):
        r = redis.Redis(port=PORT, password="pw", protocol=proto)
        check(f"RESP{proto}: AUTH on connect", r.set("a", "1") is True)
    try:
        redis.Redis(port=PORT, password="wrong").ping()
        check("wrong password refused", False)
    except redis.AuthenticationError:
        check("wrong password refused", True)
finally:
    node.terminate()
    node.wait()

check.finish()
