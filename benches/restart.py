#!/usr/bin/env python3
"""Restart benchmark: how long a node with K keys takes, after a clean stop (SIGTERM) and after kill -9, until it
answers PING and until it serves a write, and how long its background count of the keys (which builds the
anti-entropy trees) takes. Start-up must not grow with the data: the count runs while the node serves.

Figures only, never a pass/fail: these machines are shared and noisy. Run:

    cargo build --release && python3 benches/restart.py [--keys 100000,1000000,5000000]

Needs redis-cli (Debian: redis-tools). Keys are loaded with `redis-cli --pipe` (100-byte values).
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 7451


def call(port, *args, timeout=2.0):
    """One RESP request over a fresh connection; returns the first reply line, or None if nothing answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"".join([b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a), a) for a in args]))
            return s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
    except OSError:
        return None


def wait_for(pred, timeout=600.0, step=0.002):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(step)
    raise SystemExit("timed out")


def info_field(port, name):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\ndynamo\r\n")
        data = b""
        while b"\r\nn:" not in data and b"\r\nw:" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1]
    return None


def start(binary, data_dir):
    cmd = [binary, "serve", "--node-id", "r1", "--listen", f"127.0.0.1:{PORT}", "--data-dir", data_dir]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(binary, data_dir):
    """(first PONG, first served SET, keys counted) in seconds from the process start."""
    t0 = time.monotonic()
    proc = start(binary, data_dir)
    wait_for(lambda: call(PORT, b"PING") == "+PONG")
    pong = time.monotonic() - t0
    wait_for(lambda: call(PORT, b"SET", b"restart-probe", b"x") == "+OK")
    write = time.monotonic() - t0
    wait_for(lambda: info_field(PORT, "storage_counted") == "1", step=0.02)
    counted = time.monotonic() - t0
    return proc, pong, write, counted


def load(keys):
    """A --pipe file of `keys` SETs of 100-byte values, written in chunks."""
    path = tempfile.mktemp(suffix=".resp")
    value = b"v" * 100
    with open(path, "wb") as f:
        for i in range(keys):
            k = b"key:%d" % i
            f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(k), k, value))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/dynamo-kv"))
    ap.add_argument("--keys", default="100000,1000000", help="comma-separated key counts")
    args = ap.parse_args()
    rows = []
    for keys in [int(k) for k in args.keys.split(",")]:
        data = tempfile.mkdtemp(prefix="dkv-restart-")
        try:
            proc = start(args.bin, data)
            wait_for(lambda: call(PORT, b"PING") == "+PONG")
            pipe = load(keys)
            with open(pipe, "rb") as f:
                subprocess.run(["redis-cli", "-p", str(PORT), "--pipe"], stdin=f, check=True, capture_output=True)
            os.unlink(pipe)
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs)
            proc, pong, write, counted = measure(args.bin, data)
            rows.append((keys, disk, "clean stop", pong, write, counted))
            proc.kill()
            proc.wait()
            proc, pong, write, counted = measure(args.bin, data)
            rows.append((keys, disk, "kill -9", pong, write, counted))
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        finally:
            shutil.rmtree(data, ignore_errors=True)
    print("| keys | on disk | restart after | first PONG | first served SET | keys counted (trees ready) |")
    print("|---|---|---|---|---|---|")
    for keys, disk, kind, pong, write, counted in rows:
        print(f"| {keys:,} | {disk / 1e6:.0f} MB | {kind} | {pong * 1000:.0f} ms | {write * 1000:.0f} ms | "
              f"{counted:.2f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
