#!/usr/bin/env bash
# The Redis client libraries of Debian, unmodified, against one 3-node cluster (N=3, R=2, W=2): phpredis
# (php-redis), redis-rb (ruby-redis), Perl Redis (libredis-perl) and node-redis (node-redis). Each runs the same
# checks (compat/clients/*): pipelines, transactions (nothing applied when EXEC aborts, WATCH refused), MGET/MSET,
# expiry, the plain-GET mode (per user, and per connection with CLIENT VALUES), the versioned mode through the
# library's raw command, typed keys, and key iteration over 10,000 keys through another node (every key seen).
set -uo pipefail
cd "$(dirname "$0")/.."
. compat/lib.sh
PORT=${PORT:-7341}
trap cleanup_nodes EXIT

config=$(mktemp)
DIRS+=("$config")
cat > "$config" << 'TOML'
requirepass = "default-secret"  # the default user: versioned replies, as the node's default
[[users]]
name = "app"
password = "app-secret"
access = "write"
values = "plain"                # GET and MGET answer Redis's bulk strings
TOML
for i in 0 1 2; do
  seeds=()
  [ "$i" -gt 0 ] && seeds=(--seeds "127.0.0.1:$((PORT + 10000))")
  NODE_ID="cl$i" start_node $((PORT + i)) --peer-listen "127.0.0.1:$((PORT + 10000 + i))" --config "$config" \
    --membership-interval-ms 200 "${seeds[@]}" || exit 1
  track_node
done
settled() { # every node lists 3 members up and no transition in progress
  for i in 0 1 2; do
    info=$(redis-cli -p $((PORT + i)) --user app --pass app-secret --no-auth-warning INFO dynamo) || return 1
    echo "$info" | grep -q '^members:3' && echo "$info" | grep -q 'ring_transition:none' || return 1
  done
}
for _ in $(seq 1 300); do settled && break; sleep 0.2; done
check "the 3-node cluster settles" settled

export PORTS="$PORT $((PORT + 1)) $((PORT + 2))"
for client in "php compat/clients/phpredis.php" "ruby compat/clients/redis_rb.rb" "perl compat/clients/perl_redis.pl" \
  "env NODE_PATH=/usr/share/nodejs node compat/clients/node_redis.js"; do
  out=$($client 2>&1)
  echo "$out"
  PASSED=$((PASSED + $(echo "$out" | grep -c '^PASS')))
  FAILED=$((FAILED + $(echo "$out" | grep -c '^FAIL')))
  # A client that died before its summary counts as one failure more.
  echo "$out" | tail -1 | grep -q 'passed, 0 failed' || FAILED=$((FAILED + 1))
done
echo "clients: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
