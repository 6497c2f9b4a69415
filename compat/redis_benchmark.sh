#!/usr/bin/env bash
# redis-benchmark against a node: ping (inline and multibulk), set and get must finish with no error.
# This checks compatibility, not speed: figures are printed, never asserted (see benches/ for comparisons).
set -uo pipefail
cd "$(dirname "$0")/.."
. compat/lib.sh
PORT=${PORT:-7303}
start_node "$PORT" || exit 1
trap stop_node EXIT

out=$(redis-benchmark -p "$PORT" -t ping,set,get -n 20000 -c 50 -r 10000 -q 2>&1)
status=$?
echo "$out" | tr '\r' '\n' | grep "requests per second"
check "redis-benchmark exits 0" test "$status" -eq 0
for t in PING_INLINE PING_MBULK SET GET; do
  check "redis-benchmark ran $t" matches "$(tr '\r' '\n' <<< "$out")" "^$t: .*requests per second"
done
check "no errors reported" lacks "$out" -i error
pipelined=$(redis-benchmark -p "$PORT" -t set,get -n 20000 -c 20 -P 16 -r 10000 -q 2>&1)
pipelined_status=$?
echo "$pipelined" | tr '\r' '\n' | grep "requests per second"
check "pipelined (-P 16) run exits 0" test "$pipelined_status" -eq 0
check "pipelined (-P 16) run reports no errors" lacks "$pipelined" -i error

# The same against a 3-node dev cluster (N=3, R=2, W=2): every SET is replicated, every GET a quorum read.
stop_node
CLUSTER_PORT=$((PORT + 10))
CLUSTER_DIR=$(mktemp -d)
"$BIN" dev --nodes 3 --port "$CLUSTER_PORT" --data-dir "$CLUSTER_DIR" > "$CLUSTER_DIR/stdout" 2> "$CLUSTER_DIR/stderr" &
CLUSTER_PID=$!
trap 'kill $CLUSTER_PID 2>/dev/null; wait $CLUSTER_PID 2>/dev/null; rm -rf "$CLUSTER_DIR"' EXIT
cluster_ready() { # the ring is settled and no node is still checking a range it received (then missing keys read)
  for p in "$CLUSTER_PORT" $((CLUSTER_PORT + 1)) $((CLUSTER_PORT + 2)); do
    info=$(redis-cli -p "$p" INFO dynamo 2>/dev/null) || return 1
    echo "$info" | grep -q 'members:3' && echo "$info" | grep -q 'ring_transition:none' \
      && echo "$info" | grep -q 'partitions_owned:8[56]' && echo "$info" | grep -q 'recovery:none' || return 1
  done
}
for _ in $(seq 1 150); do cluster_ready && break; sleep 0.2; done
cluster_out=$(redis-benchmark -p "$CLUSTER_PORT" -t set,get -n 5000 -c 20 -r 10000 -q 2>&1)
cluster_status=$?
echo "$cluster_out" | tr '\r' '\n' | grep "requests per second"
check "3-node cluster: redis-benchmark exits 0" test "$cluster_status" -eq 0
check "3-node cluster: no errors reported" lacks "$cluster_out" -i error
same_dbsize() { # every node holds every key (N=3 on 3 nodes); the third copy may land just after W=2
  for _ in $(seq 1 25); do
    a=$(redis-cli -p "$CLUSTER_PORT" DBSIZE); b=$(redis-cli -p $((CLUSTER_PORT + 1)) DBSIZE); c=$(redis-cli -p $((CLUSTER_PORT + 2)) DBSIZE)
    [ "$a" -gt 0 ] && [ "$a" = "$b" ] && [ "$b" = "$c" ] && return 0
    sleep 0.2
  done
  echo "DBSIZE per node: $a $b $c"; return 1
}
check "3-node cluster: all 3 replicas hold every key" same_dbsize
# Cluster-aware routing: redis-benchmark learns the slot map and sends each key to a node that holds it.
routed_out=$(redis-benchmark --cluster -p "$CLUSTER_PORT" -t set,get -n 5000 -c 20 -r 10000 -q 2>&1)
routed_status=$?
echo "$routed_out" | tr '\r' '\n' | grep "requests per second"
check "3-node cluster: redis-benchmark --cluster exits 0" test "$routed_status" -eq 0
check "3-node cluster: redis-benchmark --cluster reports no errors" lacks "$routed_out" -i error
cluster_check=$(redis-cli --cluster check "127.0.0.1:$CLUSTER_PORT" 2>&1)
check "3-node cluster: redis-cli --cluster check finds every slot covered" \
  bash -c "echo \"\$0\" | grep -q 'All 16384 slots covered' && ! echo \"\$0\" | grep -q ERR" "$cluster_check"
# The default suite, as a new user types it (no -t): counters, lists, sets, hashes, sorted sets and MSET too.
suite_out=$(redis-benchmark -p "$CLUSTER_PORT" -n 1000 -c 20 -q 2>&1)
suite_status=$?
suite_tests=$(echo "$suite_out" | tr '\r' '\n' | grep "requests per second" | sed 's/:.*//' | sort -u)
echo "$suite_tests" | tr '\n' ' '; echo
check "3-node cluster: the default suite exits 0" test "$suite_status" -eq 0
check "3-node cluster: the default suite reports no errors" lacks "$suite_out" -i 'error\|ERR'
for t in PING_INLINE PING_MBULK SET GET INCR LPUSH RPUSH LPOP RPOP SADD HSET SPOP ZADD ZPOPMIN LRANGE_100 \
  LRANGE_300 LRANGE_500 LRANGE_600 MSET; do
  check "3-node cluster: the default suite ran $t" matches "$suite_tests" "^ *$t"
done

echo "redis-benchmark: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
