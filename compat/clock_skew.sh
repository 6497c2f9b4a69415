#!/usr/bin/env bash
# Clock skew between nodes, made with libfaketime (Debian: faketime): a node whose wall clock runs 2 s ahead. The
# other node measures the offset on its gossip exchanges, shows it in INFO and ADMIN MEMBERS, and warns; and an
# expiring key reads as absent through the fast node about 2 s before it does through the other, as
# docs/PROTOCOL.md states (nodes agree on a deadline up to the skew between their clocks); and writes that read
# others order after them whatever the clocks say.
set -uo pipefail
cd "$(dirname "$0")/.."
. compat/lib.sh
PORT=${PORT:-7521}
FAKETIME_LIB=${FAKETIME_LIB:-/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1}
trap cleanup_nodes EXIT

NODE_ID=s1 start_node "$PORT" --peer-listen "127.0.0.1:$((PORT + 10000))" --membership-interval-ms 200 || exit 1
track_node; S1_LOG=$NODE_DIR/stderr
# Only the wall clock is shifted: timers and timeouts (the monotonic clock) run as usual.
FAKETIME="+2s" FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD=$FAKETIME_LIB NODE_ID=s2 start_node $((PORT + 1)) \
  --peer-listen "127.0.0.1:$((PORT + 10001))" --membership-interval-ms 200 --seeds "127.0.0.1:$((PORT + 10000))" \
  || exit 1
track_node

field() { redis-cli -p "$1" INFO dynamo | tr -d '\r' | grep "^$2:" | cut -d: -f2-; }
settled() {
  for p in "$PORT" $((PORT + 1)); do
    [ "$(field "$p" members)" = 2 ] && [ "$(field "$p" ring_transition)" = none ] || return 1
  done
}
for _ in $(seq 1 150); do settled && break; sleep 0.2; done
check "two nodes settle" settled
sleep 1 # a few gossip exchanges
offset() { field "$1" "peer_$2" | tr ',' '\n' | grep '^clock_offset_ms=' | cut -d= -f2; }
within() { [ -n "$1" ] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }
check "s1 measures s2 about 2000 ms ahead ($(offset "$PORT" s2))" within "$(offset "$PORT" s2)" 1800 2200
check "s2 measures s1 about 2000 ms behind ($(offset $((PORT + 1)) s1))" within "$(offset $((PORT + 1)) s1)" -2200 -1800
check "INFO's clock_skew_max_ms bounds it ($(field "$PORT" clock_skew_max_ms))" \
  within "$(field "$PORT" clock_skew_max_ms)" 1800 2300
check "ADMIN MEMBERS shows the offset" bash -c "redis-cli -p $PORT ADMIN MEMBERS | grep -A1 '^clock_offset_ms$' | grep -qE '^(19|20|21)[0-9]{2}$'"
check "s1 warns that s2's clock is off" grep -q "peer's clock differs from ours by more than 500 ms" "$S1_LOG"

# A deadline 6 s from now by s1's clock is 4 s from now by s2's: 4.5 s later it has passed only on s2.
check "SET PX through s1" test "$(redis-cli -p "$PORT" SET skewed v PX 6000)" = OK
sleep 4.5
check "expired through the node 2 s ahead" test -z "$(printf 'CLIENT VALUES PLAIN\nGET skewed\n' | redis-cli -p $((PORT + 1)) | tail -1)"
check "still present through the other" test "$(printf 'CLIENT VALUES PLAIN\nGET skewed\n' | redis-cli -p "$PORT" | tail -1)" = v
sleep 2
check "expired through both once both clocks passed it" test -z "$(printf 'CLIENT VALUES PLAIN\nGET skewed\n' | redis-cli -p "$PORT" | tail -1)"

# A PERSIST through the slow node after an EXPIRE through the fast one wins on both replicas: a write's timestamp
# is raised past what it read (docs/PROTOCOL.md: "Which write is newer").
redis-cli -p "$PORT" SET kept v > /dev/null
check "EXPIRE through the node 2 s ahead" test "$(redis-cli -p $((PORT + 1)) EXPIRE kept 1000)" = 1
check "PERSIST through the node behind" test "$(redis-cli -p "$PORT" PERSIST kept)" = 1
check "no deadline, read through either node" test "$(redis-cli -p "$PORT" TTL kept) $(redis-cli -p $((PORT + 1)) TTL kept)" = "-1 -1"
# Fields: HSET through the slow node after one through the fast node replaces it everywhere.
redis-cli -p $((PORT + 1)) HSET h f fast > /dev/null
redis-cli -p "$PORT" HSET h f slow-but-later > /dev/null
check "the later HSET wins through either node" test "$(redis-cli -p "$PORT" HGET h f) $(redis-cli -p $((PORT + 1)) HGET h f)" = "slow-but-later slow-but-later"

echo "clock skew: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
