#!/usr/bin/env python3
"""Jepsen-style fault harness: real node processes on their own network, a seeded fault schedule, a set workload
and a checker for lost acknowledged writes.

Topology (created here, torn down at exit): one network namespace per node, each with a veth into a bridge that
lives in its own "switch" namespace, so the host's firewall never sees the traffic. The harness (the clients) sits
in the root namespace at 10.88.0.1; node i is 10.88.0.(10+i). A partition is real and cuts only node-to-node
traffic (clients can still reach every node), in one of two modes: "drop", where nftables rules inside the node
namespaces silently drop the packets between the chosen groups (a peer call waits out its timeout), or "route",
where blackhole routes inside the node namespaces make a new connection to a cut-off peer fail at once (a request
on a connection already open still waits out its timeout: its packets are discarded).

Faults, from a schedule derived from --seed and printed before the run: kill -9 and restart, pause
(SIGSTOP/SIGCONT), partitions (halves, a lone node, a bridge; each drop or route, see --partition-mode), a wiped
data directory, a join and a leave.

Workload (the shopping cart), as the client docs put it: each client adds unique elements to shared keys by GET ->
merge siblings -> SET with the context the GET returned, or a plain SET when the GET returned no context (a key
never stored). Keys are not created beforehand: every 30 s the load moves to fresh keys, which several clients race
to create. The checker demands that every acknowledged element is in the final value read through every node, that
no element appears that no one wrote, and that after the faults heal all N replicas of every key hold the same
version set (compared by ADMIN LOCALGET digest) within --converge-timeout seconds. It also counts the reads that
returned no context (reads_without_context), which a GET that always returns a context keeps at 0.

Needs root (ip netns, nft). Exit status 0 only when nothing acknowledged was lost and every check passed.

    python3 tests/faults/harness.py --bin target/release/dynamo-kv --duration 600 --seed 42
"""

import argparse
import fcntl
import html
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

SUBNET = "10.88.0"
HOST_IP = f"{SUBNET}.1"
NS_PREFIX = "dkvf"
CLIENT_PORT = 7001
PEER_PORT = 17001
SECRET = "fault-harness-secret"
GENERATION_SECS = 30


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*args, check=True, stdin=None):
    """Runs one command; returns its stdout. Network set-up failures are fatal, teardown ones are not."""
    p = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


# --- a minimal RESP2 client with hard timeouts and no retries (a retry would blur what was acknowledged) ---


class RespError(Exception):
    """An error reply from the server (the request reached it and was refused)."""


class Resp:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        if kind == b"%":  # maps (ADMIN replies are maps under RESP2 too when flattened)
            n = int(rest)
            return {self._read_key(): self._read() for _ in range(n)}
        if kind == b"_":
            return None
        raise ConnectionError(f"unexpected reply type {line[:20]!r}")

    def _read_key(self):
        k = self._read()
        return k.decode() if isinstance(k, bytes) else k


def as_map(reply):
    """ADMIN replies come as flat [k, v, k, v] arrays under RESP2."""
    if isinstance(reply, dict):
        return reply
    return {reply[i].decode() if isinstance(reply[i], bytes) else reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}


# --- the network and the nodes ---


class Network:
    def __init__(self, count):
        self.count = count
        self.switch = f"{NS_PREFIX}-sw"

    @staticmethod
    def cleanup_leftovers():
        for line in sh("ip", "netns", "list", check=False).splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(NS_PREFIX + "-"):
                sh("ip", "netns", "del", name, check=False)
        sh("ip", "link", "del", f"{NS_PREFIX}-h0", check=False)

    def create(self):
        self.cleanup_leftovers()
        sw = self.switch
        sh("ip", "netns", "add", sw)
        sh("ip", "netns", "exec", sw, "ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "netns", "exec", sw, "ip", "link", "set", "br0", "up")
        sh("ip", "link", "add", f"{NS_PREFIX}-h0", "type", "veth", "peer", "name", "up0", "netns", sw)
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", f"{NS_PREFIX}-h0")
        sh("ip", "link", "set", f"{NS_PREFIX}-h0", "up")
        sh("ip", "netns", "exec", sw, "ip", "link", "set", "up0", "master", "br0", "up")
        for i in range(1, self.count + 1):
            ns = self.ns(i)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", f"p{i}", "netns", sw, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "netns", "exec", sw, "ip", "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            # Every packet to or from an address in @blocked is dropped, in both directions.
            rules = (
                "table inet dkv {\n"
                "  set blocked { type ipv4_addr; }\n"
                "  chain input { type filter hook input priority 0; ip saddr @blocked drop; }\n"
                "  chain output { type filter hook output priority 0; ip daddr @blocked drop; }\n"
                "}\n"
            )
            sh("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=rules)

    def destroy(self):
        self.cleanup_leftovers()

    def ns(self, i):
        return f"{NS_PREFIX}-n{i}"

    def ip(self, i):
        return f"{SUBNET}.{10 + i}"

    def block(self, i, others, mode="drop"):
        """Node i is cut off from the nodes `others`, replacing its previous cut of either mode.

        "drop": every packet exchanged with them is dropped silently, in both directions, so a connect or a request
        waits out its timeout. "route": a blackhole route per peer, so a new connection to one fails at once (EINVAL)
        instead; on a connection already open, TCP buffers the send and the route discards its packets, so that
        request still times out. Only the peers' /32 are routed away: the clients (10.88.0.1) still reach the node."""
        ns = self.ns(i)
        sh("ip", "netns", "exec", ns, "nft", "flush", "set", "inet", "dkv", "blocked")
        # Every blackhole route in a node namespace is one of ours: the namespace has only eth0's subnet route.
        for line in sh("ip", "netns", "exec", ns, "ip", "route", "show", "type", "blackhole").splitlines():
            dst = line.split()[1] if len(line.split()) > 1 else ""
            if dst:
                sh("ip", "netns", "exec", ns, "ip", "route", "del", "blackhole", dst)
        if not others:
            return
        if mode == "drop":
            elems = ", ".join(self.ip(j) for j in sorted(others))
            sh("ip", "netns", "exec", ns, "nft", "add", "element", "inet", "dkv", "blocked", f"{{ {elems} }}")
        elif mode == "route":
            for j in sorted(others):
                sh("ip", "netns", "exec", ns, "ip", "route", "add", "blackhole", f"{self.ip(j)}/32")
        else:
            raise ValueError(f"unknown partition mode {mode!r}")

    def heal(self):
        """Clears both kinds of cut on every node (the spare's too, which is harmless when it is not running)."""
        for i in range(1, self.count + 1):
            self.block(i, [])


class Node:
    def __init__(self, idx, net, args, workdir):
        self.idx = idx
        self.id = f"n{idx}"
        self.net = net
        self.args = args
        self.ip = net.ip(idx)
        self.data = os.path.join(workdir, self.id, "data")
        self.logpath = os.path.join(workdir, self.id, "node.log")
        os.makedirs(os.path.dirname(self.logpath), exist_ok=True)
        self.proc = None
        self.state = "new"  # new | up | down | paused | left

    @property
    def peer_addr(self):
        return f"{self.ip}:{PEER_PORT}"

    def start(self, seeds):
        cmd = [
            "ip", "netns", "exec", self.net.ns(self.idx), self.args.bin, "serve",
            "--node-id", self.id,
            "--listen", f"{self.ip}:{CLIENT_PORT}",
            "--data-dir", self.data,
            "--cluster-secret", SECRET,
            # The clients reach the nodes from the host's side of the test network: trusted, so no protected mode.
            "--protected-mode", "no",
            "--partitions", str(self.args.partitions),
            "--durability", self.args.durability,
            "--request-timeout-ms", "1000",
            "--membership-interval-ms", "250",
            "--anti-entropy-interval-ms", "50",
        ]  # fmt: skip
        if seeds:
            cmd += ["--seeds", ",".join(seeds)]
        if self.args.peer_tls:
            pki = self.args.peer_tls
            cmd += [
                "--peer-tls-cert-file", os.path.join(pki, f"{self.id}.pem"),
                "--peer-tls-key-file", os.path.join(pki, f"{self.id}.key"),
                "--peer-tls-ca-file", os.path.join(pki, "ca.pem"),
            ]  # fmt: skip
        logf = open(self.logpath, "ab")
        logf.write(f"\n=== harness: start at {time.strftime('%H:%M:%S')} ===\n".encode())
        logf.flush()
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        # `ip netns exec` execs the node, so this pid is the node's own (signals reach it directly).
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()
        self.state = "up"

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill9(self):
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()
        self.state = "down"

    def pause(self):
        self.signal(signal.SIGSTOP)
        self.state = "paused"

    def resume(self):
        self.signal(signal.SIGCONT)
        self.state = "up"

    def wipe(self):
        shutil.rmtree(self.data, ignore_errors=True)

    def exited_unexpectedly(self):
        return self.state in ("up", "paused") and self.proc is not None and self.proc.poll() is not None

    def call(self, *args, timeout=5.0):
        c = Resp(self.ip, CLIENT_PORT, timeout)
        try:
            return c.call(*args)
        finally:
            c.close()

    def wait_up(self, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.call("PING", timeout=1.0) == "PONG":
                    return True
            except (OSError, RespError, ConnectionError):
                pass
            time.sleep(0.1)
        return False


# --- the fault schedule ---

FAULT_KINDS = ["kill", "pause", "partition-halves", "partition-lone", "partition-bridge", "wipe", "join", "leave"]
PARTITION_MODES = ["drop", "route"]


def make_schedule(rng, duration, initial, spare, partition_mode="both"):
    """Faults one after another, each followed by a healthy gap; the first round holds every kind once.

    Returns a list of dicts {at, until, kind, targets, groups}, plus {mode} ("drop" or "route") for a partition.
    Membership changes (join, leave) are tracked so that later faults only pick members that are still in the
    cluster. With partition_mode "both", the first round's three partitions hold both modes."""
    members = list(initial)
    kinds = FAULT_KINDS[:]
    rng.shuffle(kinds)
    # Leave after join keeps at least the initial member count through the run.
    if kinds.index("leave") < kinds.index("join"):
        a, b = kinds.index("leave"), kinds.index("join")
        kinds[a], kinds[b] = kinds[b], kinds[a]
    t = 5.0
    out = []
    queue = list(kinds)
    first_round = len(queue)
    while True:
        if not queue:
            queue = [k for k in FAULT_KINDS if k not in ("join", "leave")]
            rng.shuffle(queue)
        kind = queue.pop(0)
        # The first round is brisk so that a short run (CI) still holds every kind once.
        length = rng.uniform(5.0, 8.0) if len(out) < first_round else rng.uniform(6.0, 15.0)
        if t + length > duration - 5.0:
            if len(out) < first_round:
                raise SystemExit(f"--duration {duration:.0f} is too short to hold every fault kind once; try 110")
            break
        f = {"at": round(t, 1), "until": round(t + length, 1), "kind": kind, "targets": [], "groups": []}
        if kind in ("kill", "pause", "wipe"):
            f["targets"] = [rng.choice(members)]
        elif kind == "partition-halves":
            m = members[:]
            rng.shuffle(m)
            half = len(m) // 2
            f["groups"] = [sorted(m[:half]), sorted(m[half:])]
        elif kind == "partition-lone":
            lone = rng.choice(members)
            f["groups"] = [[lone], sorted(x for x in members if x != lone)]
        elif kind == "partition-bridge":
            m = members[:]
            rng.shuffle(m)
            bridge = m.pop()
            half = len(m) // 2
            f["targets"] = [bridge]
            f["groups"] = [sorted(m[:half]), sorted(m[half:])]
        elif kind == "join":
            f["targets"] = [spare]
            members.append(spare)
        elif kind == "leave":
            # Never the founder: it is every restarted node's first seed, and the claimant.
            who = rng.choice([x for x in members if x != initial[0]])
            f["targets"] = [who]
            members.remove(who)
        out.append(f)
        t += length + (rng.uniform(2.0, 4.0) if len(out) <= first_round else rng.uniform(3.0, 8.0))
    # The last fault lasts until the load stops, so the convergence time measures a real repair after the heal.
    if out and out[-1]["kind"] not in ("join", "leave"):
        out[-1]["until"] = round(duration, 1)
    # Modes are drawn once the rest is fixed, so that a seed's faults (kinds, times, targets) stay those of the
    # harness before partitions had modes. In the first round the first partition drops and the second routes, so
    # that even a short run (CI) holds both; every other one is the rng's choice.
    parts = [f for f in out if f["kind"].startswith("partition")]
    first_parts = [f for f in out[:first_round] if f["kind"].startswith("partition")]
    for f in parts:
        if partition_mode != "both":
            f["mode"] = partition_mode
        elif f is first_parts[0]:
            f["mode"] = "drop"
        elif len(first_parts) > 1 and f is first_parts[1]:
            f["mode"] = "route"
        else:
            f["mode"] = rng.choice(PARTITION_MODES)
    return out


def describe(f):
    if f["groups"]:
        g = " | ".join(",".join(x) for x in f["groups"])
        extra = f" via {f['targets'][0]}" if f["targets"] else ""
        mode = f"/{f['mode']}" if f.get("mode") else ""
        return f"{f['kind']}{mode} [{g}]{extra}"
    return f"{f['kind']} {','.join(f['targets'])}"


# --- the workload ---


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []  # dicts: t0, t1, client, node, key, elem, outcome, detail, siblings, ctx, sent
        self.observed = set()

    def add(self, op, observed):
        with self.lock:
            self.ops.append(op)
            self.observed |= observed


def parse_elements(siblings):
    out = set()
    for s in siblings:
        text = s.decode() if isinstance(s, bytes) else str(s)
        out.update(x for x in text.split(",") if x)
    return out


class Client(threading.Thread):
    def __init__(self, cid, cluster, history, keys_at, stop, t_start, timeout):
        super().__init__(daemon=True)
        self.cid = cid
        self.cluster = cluster
        self.history = history
        self.keys_at = keys_at
        self.stop = stop
        self.t_start = t_start
        self.timeout = timeout
        self.rng = random.Random(1000 + cid)
        self.seq = 0
        self.conn = None
        self.node = None
        self.detour = False

    def target(self):
        """The client's home node (clients are spread over the nodes, as in Jepsen); right after a failure, one op
        goes to another member instead, as an application would retry elsewhere. A home that left is replaced."""
        members = self.cluster.client_targets()
        home = members[self.cid % len(members)]
        if self.detour:
            self.detour = False
            others = [m for m in members if m is not home]
            return self.rng.choice(others) if others else home
        return home

    def connect(self, node):
        if self.conn is not None and self.node is node:
            return self.conn
        self.drop()
        self.conn = Resp(node.ip, CLIENT_PORT, self.timeout)
        self.node = node
        return self.conn

    def drop(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def run(self):
        while not self.stop.is_set():
            self.one_op()

    def one_op(self):
        now = time.time() - self.t_start
        key = self.rng.choice(self.keys_at(now))
        self.seq += 1
        elem = f"c{self.cid}-{self.seq}"
        node = self.target()
        # siblings and ctx stay None when the GET did not answer; ctx is then whether the GET returned a context.
        op = {"t0": round(now, 3), "client": self.cid, "node": node.id, "key": key, "elem": elem, "siblings": None,
              "ctx": None}  # fmt: skip
        observed = set()
        sent = False
        if self.cluster.args.workload in ("counter", "counter-blind"):
            return self.one_increment(now, key, node)
        if self.cluster.args.workload == "typed":
            return self.one_typed_op(now, key, node)
        if self.cluster.args.workload == "expiry":
            return self.one_expiry_op(now, node)
        try:
            conn = self.connect(node)
            siblings, ctx = conn.call("GET", key)
            op["siblings"] = len(siblings)
            op["ctx"] = ctx is not None
            observed = parse_elements(siblings)
            value = ",".join(sorted(observed | {elem}))
            sent = True
            if self.cluster.args.workload == "blind":
                # Last-write-wins use, for checking the checker: a plain SET supersedes what the coordinator holds.
                reply = conn.call("SET", key, value)
            elif ctx is None:
                # What the client docs allowed for a key never stored: a plain SET. Keys are fresh and raced for, so
                # this is where a store that answers "no context" for a key another client just created (or a
                # read that reached only replicas without it) would lose that client's acknowledged write.
                reply = conn.call("SET", key, value)
            else:
                reply = conn.call("SET", key, value, "CONTEXT", ctx)
            op["outcome"] = "ok" if reply == "OK" else "fail"
            op["detail"] = str(reply)
        except RespError as e:
            op["outcome"] = "fail"
            op["detail"] = str(e)[:80]
        except socket.timeout:
            op["outcome"] = "timeout" if sent else "fail"
            op["detail"] = "timeout"
            self.drop()
        except (OSError, ConnectionError) as e:
            # A connection lost after the SET was sent leaves its outcome unknown, like a timeout.
            op["outcome"] = "timeout" if sent else "fail"
            op["detail"] = type(e).__name__
            self.drop()
            time.sleep(0.05)
        if op["outcome"] != "ok":
            self.detour = True
        op["sent"] = sent
        op["t1"] = round(time.time() - self.t_start, 3)
        self.history.add(op, observed)


    def one_typed_op(self, now, key, node):
        """The typed workload. On a set key (even key number): SADD a fresh element, and one time in five SREM an
        element this client added earlier (after that add was acknowledged). On a list key (odd): RPUSH a fresh
        element, and one time in five LPOP one or two. The checker wants every acknowledged add or push present
        unless a remove of it was sent or a pop returned it (a pop of unknown outcome may explain as many missing
        elements of its key as it asked for), and no element an acknowledged pop returned present at the end."""
        self.seq += 1
        removable = getattr(self, "added", [])
        is_list = key_number(key) % 2 == 1
        remove = removable and self.rng.random() < 0.2 if not is_list else False
        pop = is_list and self.rng.random() < 0.2
        if remove:
            key, elem = removable.pop(self.rng.randrange(len(removable)))
        else:
            elem = f"c{self.cid}-{self.seq}"
        kind = ("lpop" if pop else "rpush") if is_list else "srem" if remove else "sadd"
        op = {"t0": round(now, 3), "client": self.cid, "node": node.id, "key": key, "elem": elem, "kind": kind,
              "siblings": None, "ctx": None}  # fmt: skip

        def action(conn):
            op["sent"] = True
            if kind == "lpop":
                op["count"] = self.rng.randint(1, 2)
                reply = conn.call("LPOP", key, str(op["count"]))
                # An array of what it popped, or nil for an empty list.
                op["popped"] = [x.decode() for x in reply or []]
                return reply is None or isinstance(reply, list), reply
            reply = conn.call(kind.upper(), key, elem)
            return isinstance(reply, int), reply

        if self.attempt(op, node, action) and kind == "sadd":
            self.added = removable + [(key, elem)]

    def one_expiry_op(self, now, node):
        """The expiry workload, on keys of its own: each client SETs its "mortal" keys only with a deadline (PX) and
        its "kept" keys only without one, and now and then retires a kept key with a PEXPIRE (it is never written
        again); it also GETs mortal keys whose every deadline has passed, which must read as absent whatever the
        faults (every copy of a value carries its deadline). The checker wants every kept key with an acknowledged
        SET present unless a PEXPIRE of it was sent, and every mortal key absent at the end (see check_expiry)."""
        self.seq += 1
        kept = self.__dict__.setdefault("kept", [f"k{self.cid}-{i}" for i in range(EXPIRY_POOL)])
        deadlines = self.__dict__.setdefault("deadlines", {})  # mortal key -> the latest deadline any SET may set
        ttl = self.rng.randint(300, 1500)
        r = self.rng.random()
        past = [k for k, d in deadlines.items() if d < now]
        if past and r < 0.3:
            key, kind = self.rng.choice(past), "check"
        elif r < 0.4:
            # Retire a kept key: replaced in the pool by a fresh one.
            i = self.rng.randrange(len(kept))
            key, kind = kept[i], "pexpire"
            kept[i] = f"k{self.cid}-r{self.seq}"
        elif r < 0.7:
            key, kind = f"m{self.cid}-{self.rng.randrange(EXPIRY_POOL)}", "mortal"
        else:
            key, kind = self.rng.choice(kept), "kept"
        op = {"t0": round(now, 3), "client": self.cid, "node": node.id, "key": key, "elem": key, "kind": kind,
              "ttl_ms": ttl, "siblings": None, "ctx": None}  # fmt: skip
        # An earlier SET with a later deadline may survive this one: a partition makes them siblings.
        earlier = deadlines.get(key, 0.0)

        def action(conn):
            if kind == "check":
                siblings, _ctx = conn.call("GET", key)
                op["siblings"] = len(siblings)
                return True, siblings
            op["sent"] = True
            if kind == "mortal":
                deadlines[key] = float("inf")  # until it is acknowledged
            if kind == "pexpire":
                reply = conn.call("PEXPIRE", key, str(ttl))
                return reply == 1, reply
            reply = conn.call("SET", key, key, *(["PX", str(ttl)] if kind == "mortal" else []))
            return reply == "OK", reply

        acked = self.attempt(op, node, action)
        if kind == "mortal":
            # An acknowledged SET's deadline is at most its acknowledgement plus the TTL. One of unknown outcome may
            # still be stamped later (a forward to a paused coordinator): that key is not checked again mid-run.
            tainted = self.__dict__.setdefault("tainted", set())
            if not acked:
                tainted.add(key)
            if key not in tainted:
                deadlines[key] = max(earlier, op["t1"] + ttl / 1000 + 0.2)
        time.sleep(0.02)

    def one_increment(self, now, key, node):
        """The counter workload: INCRBY by a small amount; the checker sums what was acknowledged."""
        by = self.rng.randint(1, 5)
        op = {"t0": round(now, 3), "client": self.cid, "node": node.id, "key": key, "elem": None, "by": by,
              "siblings": None, "ctx": None}  # fmt: skip

        def action(conn):
            if self.cluster.args.workload == "counter":
                op["sent"] = True
                reply = conn.call("INCRBY", key, str(by))
                return isinstance(reply, int), reply
            # Checking the checker: a read-add-write without a context loses concurrent increments.
            siblings, _ctx = conn.call("GET", key)
            current = max([int(v) for v in parse_elements(siblings)] + [0])
            op["sent"] = True
            reply = conn.call("SET", key, str(current + by))
            return reply == "OK", reply

        self.attempt(op, node, action)

    def attempt(self, op, node, action):
        """Runs `action(conn)` (which marks op["sent"] once the write is on its way and returns (acknowledged,
        reply)), records the outcome in `op` and the history, and returns whether it was acknowledged. A lost
        connection or a timeout after sending leaves the outcome unknown."""
        op["sent"] = False
        try:
            ok, reply = action(self.connect(node))
            op["outcome"] = "ok" if ok else "fail"
            op["detail"] = str(reply)
        except RespError as e:
            op["outcome"] = "fail"
            op["detail"] = str(e)[:80]
        except (socket.timeout, OSError, ConnectionError) as e:
            op["outcome"] = "timeout"
            op["detail"] = type(e).__name__
            self.drop()
            time.sleep(0.05)
        if op["outcome"] != "ok":
            self.detour = True
        op["t1"] = round(time.time() - self.t_start, 3)
        self.history.add(op, set())
        return op["outcome"] == "ok"


# Keys of each kind per client in the expiry workload.
EXPIRY_POOL = 12


def key_number(key):
    """The j of a key named g{generation}-k{j}."""
    return int(key.rsplit("-k", 1)[1])


def check_pops(ops, final, acked, removed):
    """Acknowledged adds and pushes missing at the end, as lost, unless a remove of the element was sent, an
    acknowledged pop returned it, or (lists) a pop of its key whose outcome is unknown may have taken it: each such
    pop explains at most as many missing elements as it asked for. Returns (lost, how many pops explained)."""
    popped = {e for op in ops if op["kind"] == "lpop" and op["outcome"] == "ok" for e in op["popped"]}
    may_have_popped = {}
    for op in ops:
        if op["kind"] == "lpop" and op["sent"] and op["outcome"] != "ok":
            may_have_popped[op["key"]] = may_have_popped.get(op["key"], 0) + op.get("count", 2)
    missing_by_key = {}
    for elem, op in acked.items():
        missing = [m for m, got in final[op["key"]].items() if elem not in got]
        if missing and elem not in removed and elem not in popped:
            missing_by_key.setdefault(op["key"], []).append(
                {"elem": elem, "key": op["key"], "acked_at": op["t1"], "via": op["node"], "missing_on": missing}
            )
    lost, explained = [], 0
    for key, missing in missing_by_key.items():
        if len(missing) <= may_have_popped.get(key, 0):
            explained += len(missing)
        else:
            lost += missing
    return lost, explained


def check_expiry(ops, final):
    """The expiry workload's verdict: (lost, resurrected, outlived). Lost: a kept key with an acknowledged SET
    missing on some node, though no PEXPIRE of it was sent. Resurrected: a mortal key (only ever written with a
    deadline) present at the end, or found by a GET after every deadline of the acknowledged writes sent before it.
    Outlived (informational): keys whose PEXPIRE was acknowledged but that are present at the end. A PEXPIRE sets
    the deadline of the values its quorum read found; a value its read did not see (written on the other side of a
    partition, or of unknown outcome and landing later) was concurrent with it and keeps its own (none), as
    documented."""
    expire_sent = {op["key"] for op in ops if op["kind"] == "pexpire" and op["sent"]}
    mortal = {op["key"] for op in ops if op["kind"] == "mortal" and op["sent"]}
    expired = {op["key"] for op in ops if op["kind"] == "pexpire" and op["outcome"] == "ok"}
    kept = {op["key"] for op in ops if op["kind"] == "kept" and op["outcome"] == "ok"} - expire_sent
    lost, resurrected = [], []
    for key in sorted(kept):
        missing = [m for m, got in final[key].items() if not got]
        if missing:
            lost.append({"key": key, "missing_on": missing})
    for op in ops:
        if op["kind"] == "check" and op["outcome"] == "ok" and op["siblings"]:
            resurrected.append({"key": op["key"], "read_at": op["t0"], "via": op["node"]})
    for key in sorted(mortal):
        present = [m for m, got in final.get(key, {}).items() if got]
        if present:
            resurrected.append({"key": key, "present_on": present})
    outlived = sorted(k for k in expired if any(final.get(k, {}).values()))
    return lost, resurrected, outlived


def check_counters(ops, final):
    """Each counter's final value, through every node, must lie between the sum of its acknowledged increments
    and that plus every increment whose outcome is unknown (an error reply such as UNAVAILABLE may still have
    reached a replica; a timeout may have counted). Returns the keys that break it."""
    bad = []
    for key, per_node in final.items():
        acked = sum(op["by"] for op in ops if op["key"] == key and op["outcome"] == "ok")
        unknown = sum(op["by"] for op in ops if op["key"] == key and op["outcome"] != "ok" and op["sent"])
        for node, got in per_node.items():
            value = int(next(iter(got))) if got else 0
            if len(got) > 1 or not acked <= value <= acked + unknown:
                bad.append({"key": key, "node": node, "value": sorted(got), "acked": acked, "unknown": unknown})
    return bad


# --- the run ---


class Cluster:
    def __init__(self, args, workdir):
        self.args = args
        self.net = Network(args.nodes + 1)
        self.nodes = {f"n{i}": Node(i, self.net, args, workdir) for i in range(1, args.nodes + 2)}
        self.initial = [f"n{i}" for i in range(1, args.nodes + 1)]
        self.spare = f"n{args.nodes + 1}"
        self.members = list(self.initial)
        self.lock = threading.Lock()
        self.crashes = []

    def client_targets(self):
        with self.lock:
            return [self.nodes[m] for m in self.members]

    def seeds_for(self, node_id):
        return [self.nodes[m].peer_addr for m in self.initial + [self.spare] if m != node_id]

    def start_all(self):
        first = self.nodes[self.initial[0]]
        first.start([])
        if not first.wait_up():
            raise RuntimeError(f"{first.id} did not start; see {first.logpath}")
        for m in self.initial[1:]:
            self.nodes[m].start([first.peer_addr])
        for m in self.initial:
            if not self.nodes[m].wait_up():
                raise RuntimeError(f"{m} did not start; see {self.nodes[m].logpath}")

    def wait_settled(self, expect_members, timeout):
        """Every live member lists `expect_members` as valid and no transition is in progress."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(self.settled_at(self.nodes[m], expect_members) for m in expect_members):
                return True
            time.sleep(0.5)
        return False

    def settled_at(self, node, expect_members):
        try:
            members = node.call("ADMIN", "MEMBERS", timeout=3.0)
            valid = sorted(as_map(m)["id"].decode() for m in members if as_map(m)["member"] == b"valid")
            status = as_map(node.call("ADMIN", "STATUS", timeout=3.0))
            return valid == sorted(expect_members) and status["transition"] == b"none"
        except (OSError, RespError, ConnectionError, KeyError):
            return False

    def apply_partition(self, groups, bridge, mode):
        """Nodes in different groups are cut off from each other, in `mode`; a bridge (if any) reaches everyone."""
        for gi, group in enumerate(groups):
            others = [self.nodes[m].idx for gj, g in enumerate(groups) if gj != gi for m in g]
            for m in group:
                self.net.block(self.nodes[m].idx, others, mode)
        if bridge:
            self.net.block(self.nodes[bridge].idx, [])

    def check_processes(self):
        for n in self.nodes.values():
            if n.exited_unexpectedly():
                code = n.proc.poll()
                self.crashes.append(f"{n.id} exited with {code} at {time.strftime('%H:%M:%S')}")
                log(f"!! {n.id} exited unexpectedly (code {code}); see {n.logpath}")
                n.state = "down"


def run_fault(cluster, f, events, t_start, stop_at):
    """Applies fault `f` at its time, heals it at its end; records the window actually observed."""
    nodes = cluster.nodes
    now = lambda: time.time() - t_start  # noqa: E731
    while now() < f["at"]:
        time.sleep(0.05)
        cluster.check_processes()
    begin = now()
    kind = f["kind"]
    log(f"fault  {describe(f)}")
    target = nodes[f["targets"][0]] if f["targets"] else None
    if kind == "kill":
        target.kill9()
    elif kind == "pause":
        target.pause()
    elif kind == "wipe":
        target.kill9()
        target.wipe()
        target.start(cluster.seeds_for(target.id))
    elif kind.startswith("partition"):
        cluster.apply_partition(f["groups"], target.id if target else None, f["mode"])
    elif kind == "join":
        target.start(cluster.seeds_for(target.id))
        with cluster.lock:
            cluster.members.append(target.id)
    elif kind == "leave":
        with cluster.lock:
            cluster.members.remove(target.id)
        target.state = "leaving"
        try:
            log(f"       ADMIN LEAVE at {target.id}: {target.call('ADMIN', 'LEAVE')}")
        except (OSError, RespError, ConnectionError) as e:
            log(f"       ADMIN LEAVE at {target.id} failed: {e}")
    while now() < min(f["until"], stop_at):
        time.sleep(0.05)
        cluster.check_processes()
        if kind == "leave" and target.proc.poll() is not None and target.state == "leaving":
            target.state = "left"
            log(f"       {target.id} handed off and exited (code {target.proc.returncode})")
    if kind == "kill":
        target.start(cluster.seeds_for(target.id))
    elif kind == "pause":
        target.resume()
    elif kind.startswith("partition"):
        cluster.net.heal()
    log(f"healed {describe(f)}")
    events.append(
        {"from": round(begin, 2), "to": round(now(), 2), "label": describe(f), "kind": kind, "mode": f.get("mode")}
    )


def converge(cluster, keys, timeout, acked_keys):
    """Seconds until every key's N replicas (per the current ring) report the same state digest, or None.

    Keys are not created beforehand, so a key no one wrote (or whose writes all failed without reaching a replica)
    is absent on all its replicas, which is converged too; a key with an acknowledged write must be on all."""
    start = time.time()
    live = [cluster.nodes[m] for m in cluster.members]
    last_diff = None
    while time.time() - start < timeout:
        diff = []
        try:
            for key in keys:
                owner_ids = [x.decode() for x in as_map(live[0].call("ADMIN", "KEY", key))["replicas"]]
                digests = {}
                for oid in owner_ids:
                    d = cluster.nodes[oid].call("ADMIN", "LOCALGET", key)[2]
                    digests[oid] = d.decode() if d else None
                if len(set(digests.values())) != 1 or (key in acked_keys and None in digests.values()):
                    diff.append((key, digests))
        except (OSError, RespError, ConnectionError, KeyError, IndexError) as e:
            diff.append(("?", str(e)))
        if not diff:
            return time.time() - start
        last_diff = diff
        time.sleep(0.5)
    log(f"not converged: {len(last_diff)} keys differ, e.g. {last_diff[:3]}")
    return None


FINAL_READ_ATTEMPTS = 40  # 0.5 s apart


def final_reads(cluster, keys):
    """{key: {node: set of elements}} read through every live member (retrying briefly), plus failures."""
    result = {}
    failures = []
    for key in keys:
        result[key] = {}
        for m in cluster.members:
            node = cluster.nodes[m]
            # Up to 20 s per read: these reads judge what was kept, not how soon after the heal a node answers
            # (that is "converged after heal"); on a loaded machine a node may take some seconds more to see
            # every peer as reachable again.
            for attempt in range(FINAL_READ_ATTEMPTS):
                try:
                    if cluster.args.workload == "typed" and key_number(key) % 2 == 1:
                        result[key][m] = {x.decode() for x in node.call("LRANGE", key, "0", "-1")}
                    elif cluster.args.workload == "typed":
                        result[key][m] = {x.decode() for x in node.call("SMEMBERS", key)}
                    else:
                        siblings, _ctx = node.call("GET", key)
                        result[key][m] = parse_elements(siblings)
                    break
                except (OSError, RespError, ConnectionError) as e:
                    if attempt == FINAL_READ_ATTEMPTS - 1:
                        failures.append(f"GET {key} via {m}: {e}")
                    time.sleep(0.5)
    return result, failures


def timeline_svg(ops, events, duration, path, title):
    """One bar per second, stacked ok/fail/timeout (by completion time), fault windows shaded and labelled."""
    secs = int(duration) + 1
    ok, fail, tmo = [0] * secs, [0] * secs, [0] * secs
    for op in ops:
        s = min(int(op["t1"]), secs - 1)
        {"ok": ok, "fail": fail, "timeout": tmo}[op["outcome"]][s] += 1
    peak = max([a + b + c for a, b, c in zip(ok, fail, tmo)] + [1])
    # Long runs get a wider picture (4 px per second) so that fault windows stay readable.
    w, h, left, top, bottom = max(1100, 70 + 4 * secs), 420, 50, 40, 60
    pw, ph = w - left - 20, h - top - bottom
    bw = pw / secs
    y = lambda v: top + ph - ph * v / peak  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">{html.escape(title)}</text>',
    ]
    palette = {"kill": "#f4b6b6", "wipe": "#e8a0d8", "pause": "#f7dca0", "join": "#b6d8f4", "leave": "#b6e8f4"}
    for i, e in enumerate(events):
        x0, x1 = left + e["from"] * bw, left + max(e["to"], e["from"] + 0.5) * bw
        # Partitions: grey when packets are dropped, blue-grey when blackhole routes make calls fail fast.
        color = palette.get(e["kind"], "#c8cce8" if e.get("mode") == "route" else "#d8d8d8")
        parts.append(f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{ph}" fill="{color}" opacity="0.6"/>')
        ly = top + 12 + (i % 4) * 12
        # A narrow window gets only its kind and targets, not the groups of a partition.
        label = e["label"] if x1 - x0 > 6 * len(e["label"]) else e["label"].split(" [")[0]
        parts.append(f'<text x="{x0 + 2:.1f}" y="{ly}" font-size="9">{html.escape(label)}</text>')
    for s in range(secs):
        x = left + s * bw
        base = 0
        for series, color in ((ok, "#3a9a3a"), (fail, "#e08a1e"), (tmo, "#c0282d")):
            v = series[s]
            if v:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y(base + v):.1f}" width="{max(bw - 0.5, 0.5):.1f}" '
                    f'height="{y(base) - y(base + v):.1f}" fill="{color}"/>'
                )
            base += v
    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    for s in range(0, secs, max(10, (secs // 20) // 10 * 10 or 10)):
        parts.append(f'<text x="{left + s * bw:.1f}" y="{top + ph + 14}" text-anchor="middle">{s}s</text>')
    parts.append(f'<text x="{left - 5}" y="{top + 4}" text-anchor="end">{peak}</text>')
    parts.append(f'<text x="{left - 5}" y="{top + ph}" text-anchor="end">0</text>')
    ly = h - 18
    for i, (name, color) in enumerate((("ok", "#3a9a3a"), ("failed", "#e08a1e"), ("timed out", "#c0282d"))):
        parts.append(f'<rect x="{left + i * 110}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + i * 110 + 14}" y="{ly}">{name} ops/s</text>')
    parts.append(f'<text x="{left + 340}" y="{ly}">shaded: fault windows (kill, pause, partition, wipe, join, leave)</text>')
    parts.append("</svg>")
    with open(path, "w") as fh:
        fh.write("\n".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("DYNAMO_KV_BIN", "target/debug/dynamo-kv"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=90.0, help="seconds of load under faults")
    ap.add_argument("--nodes", type=int, default=5, help="initial members (one more joins during the run)")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--keys", type=int, default=16, help="keys in use at a time (fresh ones every 30 s)")
    ap.add_argument("--partitions", type=int, default=64)
    ap.add_argument("--durability", default="os", choices=["fsync", "os", "buffered"])
    ap.add_argument("--timeout", type=float, default=3.0, help="client socket timeout, seconds")
    ap.add_argument("--converge-timeout", type=float, default=120.0)
    ap.add_argument(
        "--workload",
        default="set",
        choices=["set", "blind", "counter", "counter-blind", "typed", "expiry"],
        help="set: read, merge siblings, write with the context (the cart); blind: the same without the context "
        "(last-write-wins use, which must lose writes: checks the checker); counter: INCRBY, and every counter "
        "must end between its acknowledged increments and those plus the ones of unknown outcome; counter-blind: "
        "GET then SET the sum, which must lose increments: checks the counter checker; typed: SADD fresh elements "
        "and SREM some acknowledged ones on set keys, RPUSH fresh elements and LPOP some on list keys, and every "
        "acknowledged add or push must be present unless a remove or pop took it; expiry: SET with and without PX, "
        "PEXPIRE, and GETs after deadlines: no value written with a deadline may read as present after it, nothing "
        "kept may go",
    )
    ap.add_argument("--faults", default="all", choices=["all", "none"], help="none: load only, no fault")
    ap.add_argument(
        "--partition-mode",
        default="both",
        choices=["both", *PARTITION_MODES],
        help="drop: partitions drop packets silently (nftables); route: blackhole routes make new connections to a "
        "cut-off peer fail at once; both: each partition's mode drawn from the seed, the first round holding both",
    )
    ap.add_argument("--expect-loss", action="store_true", help="succeed only if acknowledged writes were lost")
    ap.add_argument("--out", default=None, help="report directory (default target/faults/seed-N)")
    ap.add_argument("--peer-tls", action="store_true", help="nodes talk mutual TLS (docs/peer-certs.sh)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the fault harness needs root: it creates network namespaces and nftables rules")
    args.bin = os.path.abspath(args.bin)
    if not os.path.exists(args.bin):
        sys.exit(f"no binary at {args.bin}; build it first (cargo build)")
    out = os.path.abspath(args.out or f"target/faults/seed-{args.seed}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    rng = random.Random(args.seed)
    if args.peer_tls:
        # A CA and one certificate per node naming the address the others dial; from here on, the directory.
        pki = os.path.join(out, "pki")
        make = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "peer-certs.sh")
        names = [f"n{i}={Network(0).ip(i)}" for i in range(1, args.nodes + 2)]
        subprocess.run(["bash", make, pki, *names], check=True, stdout=subprocess.DEVNULL)
        args.peer_tls = pki
    cluster = Cluster(args, out)
    schedule = (
        make_schedule(rng, args.duration, cluster.initial, cluster.spare, args.partition_mode)
        if args.faults == "all"
        else []
    )
    print(f"seed {args.seed}, {args.duration:.0f}s, {args.nodes} nodes + {cluster.spare} to join, "
          f"{args.clients} clients, durability {args.durability}, workload {args.workload}, "
          f"partition mode {args.partition_mode}; schedule:")  # fmt: skip
    for f in schedule:
        print(f"  {f['at']:6.1f}s - {f['until']:6.1f}s  {describe(f)}")
    sys.stdout.flush()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # One run per machine: the namespaces and addresses are fixed, and set-up clears a crashed run's leftovers.
    lock = open("/tmp/dynamo-kv-faults.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit("another fault harness run holds /tmp/dynamo-kv-faults.lock; wait for it to finish")
    try:
        cluster.net.create()
        return run(args, cluster, schedule, out)
    finally:
        for n in cluster.nodes.values():
            n.signal(signal.SIGCONT)
            n.signal(signal.SIGKILL)
        cluster.net.destroy()


def run(args, cluster, schedule, out):
    cluster.start_all()
    if not cluster.wait_settled(cluster.initial, 60):
        raise RuntimeError("the initial cluster did not settle within 60 s")
    # The workload moves to fresh keys every GENERATION_SECS, so that sets (and the cost of each write) stay small.
    # No key is created beforehand: each generation's first writes are a race between clients (through different
    # coordinators, under whatever fault is on) to create the key, which is what a fresh cart looks like.
    generations = int(args.duration // GENERATION_SECS) + 1
    per = args.keys
    keys = [f"g{g}-k{j}" for g in range(generations) for j in range(per)]

    def keys_at(t):
        g = min(int(t // GENERATION_SECS), generations - 1)
        return keys[g * per : (g + 1) * per]

    history = History()
    stop = threading.Event()
    events = []
    t_start = time.time()
    clients = [Client(c, cluster, history, keys_at, stop, t_start, args.timeout) for c in range(args.clients)]
    for c in clients:
        c.start()
    log(f"load started: {len(clients)} clients")
    for f in schedule:
        run_fault(cluster, f, events, t_start, args.duration)
    while time.time() - t_start < args.duration:
        time.sleep(0.1)
        cluster.check_processes()
    stop.set()
    for c in clients:
        c.join(timeout=args.timeout + 2)
    load_secs = time.time() - t_start

    # Heal: every fault is undone by run_fault; restart anything that died unexpectedly, then wait.
    heal_at = time.time()
    cluster.net.heal()
    for m in cluster.members:
        n = cluster.nodes[m]
        if n.state == "paused":
            n.resume()
        if n.state == "down":
            n.start(cluster.seeds_for(n.id))
    leaver = [n for n in cluster.nodes.values() if n.state in ("leaving", "left")]
    log("healed; waiting for the ring to settle and the replicas to converge")
    settled = cluster.wait_settled(cluster.members, args.converge_timeout)
    for n in leaver:
        for _ in range(100):
            if n.proc.poll() is not None:
                n.state = "left"
                break
            time.sleep(0.2)
    if args.workload == "expiry":
        # Its keys are its own, one per write; and every deadline must have passed before the final reads.
        keys = sorted({op["key"] for op in history.ops})
        time.sleep(2.0)
    remaining = max(5.0, args.converge_timeout - (time.time() - heal_at))
    acked_keys = {op["key"] for op in history.ops if op["outcome"] == "ok"}
    if args.workload == "expiry":
        # What must be stored everywhere: the kept keys that no PEXPIRE was sent for.
        expire_sent = {op["key"] for op in history.ops if op["kind"] == "pexpire" and op["sent"]}
        acked_keys = {op["key"] for op in history.ops if op["outcome"] == "ok" and op["kind"] == "kept"}
        acked_keys -= expire_sent
    conv = converge(cluster, keys, remaining, acked_keys) if settled else None
    converge_secs = None if conv is None else time.time() - heal_at
    final, read_failures = final_reads(cluster, keys)
    cluster.check_processes()

    ops = history.ops
    if args.workload in ("counter", "counter-blind"):
        # A counter's "lost" is a value below its acknowledged increments, "unexpected" one above what was sent.
        acked = {i: op for i, op in enumerate(ops) if op["outcome"] == "ok"}
        wrong = check_counters(ops, final)
        lost = [w for w in wrong if w["value"] and int(w["value"][0]) < w["acked"] or not w["value"] and w["acked"]]
        unexpected = [w for w in wrong if w not in lost]
    elif args.workload == "expiry":
        acked = {i: op for i, op in enumerate(ops) if op["outcome"] == "ok" and op["kind"] != "check"}
        lost, unexpected, outlived = check_expiry(ops, final)
        gone = sum(op["kind"] == "pexpire" and op["outcome"] == "ok" for op in ops) - len(outlived)
        log(f"{gone} keys expired by an acknowledged PEXPIRE are gone; {len(outlived)} hold a value written "
            f"concurrently with their PEXPIRE (it keeps its own deadline), e.g. {outlived[:3]}")
    elif args.workload == "typed":
        # A remove that was sent may have applied even when it failed (a coordinator that did not answer, a quorum
        # not met): its element may be gone. Only an acknowledged one must have taken.
        removed = {op["elem"] for op in ops if op["kind"] == "srem" and op["sent"]}
        acked_removes = {op["elem"] for op in ops if op["kind"] == "srem" and op["outcome"] == "ok"}
        acked = {op["elem"]: op for op in ops if op["kind"] in ("sadd", "rpush") and op["outcome"] == "ok"}
        attempted = {op["elem"] for op in ops if op["kind"] in ("sadd", "rpush") and op["sent"]}
        lost, unexplained = check_pops(ops, final, acked, removed)
        seen_final = set().union(*(s for per in final.values() for s in per.values()))
        unexpected = sorted(seen_final - attempted)
        # An element an acknowledged pop returned must be gone for good: a remove never comes undone.
        popped = [(op["key"], e) for op in ops if op["kind"] == "lpop" and op["outcome"] == "ok" for e in op["popped"]]
        back = sorted({f"{k}:{e} came back" for k, e in popped if any(e in got for got in final[k].values())})
        unexpected += back
        twice = len(popped) - len(set(popped))
        pops = sum(op["kind"] == "lpop" and op["outcome"] == "ok" for op in ops)
        log(f"{pops} acknowledged LPOPs returned {len(popped)} elements ({twice} returned to two clients, as two pops "
            f"racing across a partition may); {unexplained} missing pushes explained by pops of unknown outcome")
        # Informational: a remove acknowledged after its add's acknowledgement should have taken.
        kept = sorted(e for e in acked_removes if any(e in got for per in final.values() for got in per.values()))
        if kept:
            log(f"{len(kept)} acknowledged removes did not take (the element is still present), e.g. {kept[:5]}")
    else:
        acked = {op["elem"]: op for op in ops if op["outcome"] == "ok"}
        attempted = {op["elem"] for op in ops if op["sent"]}
        lost = []
        for elem, op in acked.items():
            missing = [m for m, got in final[op["key"]].items() if elem not in got]
            if missing:
                lost.append(
                    {"elem": elem, "key": op["key"], "acked_at": op["t1"], "via": op["node"], "missing_on": missing}
                )
        seen_final = set().union(*(s for per in final.values() for s in per.values()))
        unexpected = sorted((history.observed | seen_final) - attempted)
    reads = [op for op in ops if op["siblings"] is not None]
    # Not a failure by itself (the write that follows is a plain SET, which the checker judges like any other), but
    # a GET that answers every read with a context keeps it at 0.
    reads_without_context = sum(op["ctx"] is False for op in reads)
    panics = []
    for n in cluster.nodes.values():
        if os.path.exists(n.logpath):
            with open(n.logpath, errors="replace") as fh:
                panics += [f"{n.id}: {line.strip()[:200]}" for line in fh if "panicked" in line]
    report = {
        "seed": args.seed,
        "duration_s": round(load_secs, 1),
        "nodes": args.nodes,
        "clients": args.clients,
        "durability": args.durability,
        "workload": args.workload,
        "partition_mode": args.partition_mode,
        "faults": [describe(f) for f in schedule],
        "attempted": len(ops),
        "acknowledged": len(acked),
        "failed": sum(op["outcome"] == "fail" for op in ops),
        "timed_out": sum(op["outcome"] == "timeout" for op in ops),
        "lost": len(lost),
        "unexpected": len(unexpected),
        "reads": len(reads),
        "reads_with_siblings": sum(op["siblings"] > 1 for op in reads),
        "max_siblings": max([op["siblings"] for op in reads] + [0]),
        "reads_without_context": reads_without_context,
        "ring_settled": settled,
        "converged_after_heal_s": None if converge_secs is None else round(converge_secs, 1),
        "final_read_failures": read_failures,
        "node_crashes": cluster.crashes,
        "panics": panics,
        "fault_windows": events,
        "lost_examples": lost[:20],
        "unexpected_examples": unexpected[:20],
    }
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(out, "history.jsonl"), "w") as fh:
        for op in ops:
            fh.write(json.dumps(op) + "\n")
    title = (
        f"dynamo-kv faults, seed {args.seed}: {len(acked)} acknowledged, {len(lost)} lost, "
        f"{report['failed']} failed, {report['timed_out']} timed out"
    )
    timeline_svg(ops, events, args.duration, os.path.join(out, "timeline.svg"), title)

    share = report["reads_with_siblings"] / max(1, report["reads"])
    print()
    print(f"| seed | ops attempted | acknowledged | failed | timed out | lost | unexpected | reads with siblings | "
          f"reads without context | converged after heal |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    conv_txt = "no" if converge_secs is None else f"{converge_secs:.1f} s"
    print(f"| {args.seed} | {len(ops)} | {len(acked)} | {report['failed']} | {report['timed_out']} | {len(lost)} | "
          f"{len(unexpected)} | {share:.1%} (max {report['max_siblings']}) | {reads_without_context} | "
          f"{conv_txt} |")  # fmt: skip
    if reads_without_context:
        print(f"note: {reads_without_context} of {len(reads)} reads returned no context (each followed by a plain SET)")
    print(f"\nreport: {out}/report.json, timeline: {out}/timeline.svg, history: {out}/history.jsonl")
    problems = []
    if lost:
        problems.append(f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}")
    if unexpected:
        what = "expired keys read as present" if args.workload == "expiry" else "elements no one wrote"
        problems.append(f"{len(unexpected)} {what}, e.g. {unexpected[:5]}")
    if not settled:
        problems.append("the ring did not settle after the heal")
    if converge_secs is None:
        problems.append("replicas did not converge")
    if read_failures:
        problems.append(f"final reads failed: {read_failures[:3]}")
    if cluster.crashes:
        problems.append(f"nodes exited unexpectedly: {cluster.crashes}")
    if panics:
        problems.append(f"panics in node logs: {panics[:3]}")
    if not acked:
        problems.append("no write was acknowledged at all")
    if args.expect_loss:
        # Checking the checker: blind writes must be caught losing acknowledged elements.
        if lost:
            print(f"PASS the checker caught {len(lost)} lost acknowledged writes under --workload {args.workload}")
            return 0
        print(f"FAIL --expect-loss, but the checker found no lost write under --workload {args.workload}")
        return 1
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print("PASS no acknowledged write lost, nothing unexpected, replicas converged")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
