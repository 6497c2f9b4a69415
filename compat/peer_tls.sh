#!/usr/bin/env bash
# Mutual TLS between nodes with certificates made by docs/peer-certs.sh (openssl), as the README describes: two
# nodes replicate over it, and a node with the cluster secret but a certificate from another CA is kept out.
set -uo pipefail
cd "$(dirname "$0")/.."
. compat/lib.sh
PORT=${PORT:-7501}
PKI=$(mktemp -d)
DIRS+=("$PKI")
trap cleanup_nodes EXIT

bash docs/peer-certs.sh "$PKI/cluster" p1=127.0.0.1 p2=127.0.0.1 > /dev/null
bash docs/peer-certs.sh "$PKI/rogue" rogue=127.0.0.1 > /dev/null
tls_flags() { # tls_flags DIR NAME
  echo --peer-tls-cert-file "$1/$2.pem" --peer-tls-key-file "$1/$2.key" --peer-tls-ca-file "$1/ca.pem"
}
start() { # start NAME PORT DIR [flags...]: a node with the cluster secret and peer TLS from DIR
  local name=$1 port=$2 dir=$3; shift 3
  # shellcheck disable=SC2046
  NODE_ID=$name start_node "$port" --cluster-secret s3cret $(tls_flags "$dir" "$name") "$@" || return 1
  track_node; eval "${name}_LOG=$NODE_DIR/stderr"
}

start p1 "$PORT" "$PKI/cluster" || exit 1
start p2 $((PORT + 1)) "$PKI/cluster" --seeds "127.0.0.1:$((PORT + 10000))" || exit 1
settled() { # both nodes list 2 members up and no transition in progress (the join's handoff is done)
  for p in "$PORT" $((PORT + 1)); do
    [ "$(redis-cli -p "$p" ADMIN MEMBERS | grep -c '^up$')" = 2 ] || return 1
    redis-cli -p "$p" INFO dynamo | grep -q 'ring_transition:none' || return 1
  done
}
for _ in $(seq 1 150); do settled && break; sleep 0.2; done
check "peer TLS: the second node joins over mutual TLS" settled
check "peer TLS: a W=2 write is acknowledged" test "$(redis-cli -p "$PORT" SET k over-tls)" = "OK"
replica() { [ "$(redis-cli -p $((PORT + 1)) ADMIN LOCALGET k | head -1)" = "over-tls" ]; }
for _ in $(seq 1 50); do replica && break; sleep 0.1; done
check "peer TLS: the other node holds its replica" replica

start rogue $((PORT + 2)) "$PKI/rogue" --seeds "127.0.0.1:$((PORT + 10000))" || exit 1
sleep 3
not_member() { local m; m=$(redis-cli -p "$PORT" ADMIN MEMBERS) && echo "$m" | grep -q p2 && ! echo "$m" | grep -q rogue; }
check "peer TLS: a node whose certificate another CA signed is not a member" not_member
# shellcheck disable=SC2154
check "peer TLS: the refusal is logged" grep -q "TLS with peer" "$p1_LOG"
grep -m1 "TLS with peer" "$p1_LOG"

# Certificate rotation: a new certificate for p1 from the same CA, loaded on SIGHUP without a restart.
bash docs/peer-certs.sh "$PKI/cluster" p1=127.0.0.1 > /dev/null
kill -HUP "${PIDS[0]}"
for _ in $(seq 1 50); do grep -q "TLS files reloaded" "$p1_LOG" && break; sleep 0.1; done
check "peer TLS: SIGHUP reloads the certificate" grep -q 'TLS files reloaded.*listener="peer"' "$p1_LOG"
check "peer TLS: writes still replicate after the rotation" test "$(redis-cli -p "$PORT" SET k2 rotated)" = "OK"

echo "peer TLS: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
