#!/usr/bin/env bash
# Runs every compat suite against the dynamo-kv binary (DYNAMO_KV_BIN, default target/debug/dynamo-kv) and
# prints one total line. Needs redis-cli, redis-benchmark (Debian: redis-tools), redis-py (pip: redis), node-redis
# (Debian: nodejs, node-redis), phpredis, redis-rb and Perl Redis (Debian: php-cli php-redis ruby ruby-redis
# libredis-perl), libfaketime (Debian: faketime), iredis (pip, driven in tmux), Chromium (Debian: chromium,
# chromium-driver) with selenium (pip), prometheus-redis-exporter (Debian, with curl) and redis-server (the
# differential test).
set -uo pipefail
cd "$(dirname "$0")/.."
total_pass=0
total_fail=0
for suite in "bash compat/redis_cli.sh" "bash compat/peer_tls.sh" "bash compat/clock_skew.sh" \
  "python3 compat/redis_py.py" "python3 compat/redis_py_cluster.py" \
  "python3 compat/differential.py --seed 1 --ops 4000" "python3 compat/differential.py --seed 2 --ops 4000" \
  "env NODE_PATH=/usr/share/nodejs node compat/node_redis_cluster.js" "bash compat/clients.sh" \
  "bash compat/iredis.sh" "python3 compat/console.py" "bash compat/redis_exporter.sh" "bash compat/redis_benchmark.sh"; do
  echo "== $suite"
  out=$($suite 2>&1)
  echo "$out"
  p=$(echo "$out" | grep -c '^PASS')
  f=$(echo "$out" | grep -c '^FAIL')
  if ! echo "$out" | tail -1 | grep -q 'passed, 0 failed'; then
    # A suite that died before its summary counts as one failure more.
    f=$((f + 1))
  fi
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
done
echo "compat: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
