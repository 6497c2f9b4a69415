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
  check "redis-benchmark ran $t" bash -c "echo \"\$0\" | tr '\r' '\n' | grep -q \"^$t: .*requests per second\"" "$out"
done
check "no errors reported" bash -c "! echo \"\$0\" | grep -qi 'error'" "$out"
pipelined=$(redis-benchmark -p "$PORT" -t set,get -n 20000 -c 20 -P 16 -r 10000 -q 2>&1)
pipelined_status=$?
echo "$pipelined" | tr '\r' '\n' | grep "requests per second"
check "pipelined (-P 16) run exits 0" test "$pipelined_status" -eq 0
check "pipelined (-P 16) run reports no errors" bash -c "! echo \"\$0\" | grep -qi error" "$pipelined"

echo "redis-benchmark: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
