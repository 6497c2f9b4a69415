#!/usr/bin/env bash
# Docker fault tests against the top-level docker-compose.yml (5 nodes, N=3 R=2 W=2), with redis-cli:
#  - write through one container, read through every other;
#  - stop one container: reads and writes keep succeeding; start it: hints drain and it serves its keys;
#  - cut one container off the network, write on both sides of the cut, reconnect: the concurrent writes become
#    siblings, nothing acknowledged is missing, and the replicas converge;
#  - `down` and `up` again: all data is still there.
# Skipped (with a message) when no Docker engine answers. Everything is torn down even when a step fails.
set -uo pipefail
cd "$(dirname "$0")/.."
. compat/lib.sh

if ! docker info > /dev/null 2>&1; then
  echo "SKIP docker: no Docker engine answers here"
  echo "docker: 0 passed, 0 failed"
  exit 0
fi
if docker compose version > /dev/null 2>&1; then
  compose() { docker compose "$@"; }
elif command -v docker-compose > /dev/null; then
  compose() { docker-compose "$@"; }
else
  echo "SKIP docker: neither 'docker compose' nor docker-compose is installed"
  echo "docker: 0 passed, 0 failed"
  exit 0
fi
export COMPOSE_PROJECT_NAME=dynamokvtest
cleanup() { compose down -v --remove-orphans > /dev/null 2>&1; }
trap cleanup EXIT
cleanup

if ! bash docker/build-image.sh > /tmp/dynamo-kv-image.log 2>&1; then
  tail -20 /tmp/dynamo-kv-image.log
  fail "image builds offline"
  echo "docker: $PASSED passed, $FAILED failed"
  exit 1
fi
pass "image builds offline (FROM scratch, static binary)"
check "image runs as a non-root user" test "$(docker image inspect -f '{{.Config.User}}' dynamo-kv:local)" = "10001:10001"

compose up -d > /dev/null 2>&1
ports="7001 7002 7003 7004 7005"
settled() { # every node sees 5 members, all reachable, and no transition
  for p in $ports; do
    info=$(redis-cli -p "$p" INFO dynamo 2> /dev/null) || return 1
    echo "$info" | grep -q 'members:5' || return 1
    echo "$info" | grep -q 'members_unreachable:0' || return 1
    echo "$info" | grep -q 'ring_transition:none' || return 1
    echo "$info" | grep -q 'recovery:none' || return 1
    echo "$info" | grep -q 'partitions_owned:0' && return 1
  done
  return 0
}
wait_for() { # wait_for SECONDS command...
  local limit=$1; shift
  for _ in $(seq 1 $((limit * 2))); do "$@" && return 0; sleep 0.5; done
  return 1
}
check "5-node cluster forms and settles" wait_for 120 settled
check "containers report healthy" wait_for 60 bash -c \
  "[ \$(docker ps --filter name=${COMPOSE_PROJECT_NAME} --filter health=healthy -q | wc -l) -eq 5 ]"

for i in $(seq 1 100); do redis-cli -p 7001 SET "dk$i" "v$i" > /dev/null; done
metrics_served() {
  python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9101/metrics', timeout=5).read().decode())" \
    2> /dev/null | grep -q 'dynamo_commands_total{command="set"}'
}
check "node1 serves Prometheus metrics on 127.0.0.1:9101" wait_for 30 metrics_served
read_all() { # read_all PORT FIRST LAST: every key reads back its value through that node
  for i in $(seq "$2" "$3"); do
    [ "$(redis-cli -p "$1" GET "dk$i" | head -1)" = "v$i" ] || return 1
  done
}
for p in 7002 7003 7004 7005; do
  check "written through node1, read through port $p" read_all "$p" 1 100
done

compose stop node3 > /dev/null 2>&1
writes_ok() {
  for i in $(seq 101 150); do
    [ "$(redis-cli -p 7001 SET "dk$i" "v$i")" = "OK" ] || return 1
  done
}
check "node3 stopped: writes still succeed" writes_ok
check "node3 stopped: reads still succeed" read_all 7002 1 150

compose start node3 > /dev/null 2>&1
hints_drained() {
  for p in $ports; do
    redis-cli -p "$p" INFO dynamo 2> /dev/null | grep -q 'hints_total:0' || return 1
  done
}
check "node3 back: hints drain" wait_for 90 hints_drained
node3_serves_its_keys() {
  for i in $(seq 101 150); do
    if redis-cli -p 7003 ADMIN KEY "dk$i" | sed -n '/replicas/,/fallbacks/p' | grep -q node3; then
      [ "$(redis-cli -p 7003 ADMIN LOCALGET "dk$i" | head -1)" = "v$i" ] || return 1
    fi
  done
}
check "node3 back: it holds every key it replicates, written while it was down" wait_for 60 node3_serves_its_keys

# A network partition: node5 is cut off; both sides take a write with the same context; after the heal the two
# writes are siblings everywhere and the replicas hold the same versions.
container5=$(compose ps -q node5)
network=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$container5")
key=""
for i in $(seq 1 500); do
  if redis-cli -p 7001 ADMIN KEY "part$i" | sed -n '/replicas/,/fallbacks/p' | grep -q node5; then key="part$i"; break; fi
done
redis-cli -p 7001 SET "$key" base > /dev/null
sleep 1
ctx_majority=$(redis-cli -p 7001 GET "$key" | tail -1)
ctx_isolated=$(redis-cli -p 7005 GET "$key" | tail -1)
docker network disconnect "$network" "$container5"
check "node5 is really cut off (it cannot reach node1)" bash -c \
  "! docker exec $container5 /dynamo-kv call --host node1:7001 PING > /dev/null 2>&1"
isolated=$(docker exec "$container5" /dynamo-kv call --host 127.0.0.1:7001 SET "$key" isolated CONTEXT "$ctx_isolated" W 1 2>&1)
check "cut-off node5 takes a write (W=1) on its side" test "$isolated" = "OK"
majority=$(redis-cli -p 7001 SET "$key" majority CONTEXT "$ctx_majority")
check "the majority side takes a write" test "$majority" = "OK"
docker network connect --alias node5 "$network" "$container5"
both_siblings() {
  for p in $ports; do
    vals=$(redis-cli -p "$p" GET "$key" | sed '$d' | sort | tr '\n' ' ')
    [ "$vals" = "isolated majority " ] || return 1
  done
}
check "after the heal: both writes are siblings on every node" wait_for 90 both_siblings
replicas_converged() {
  local first=""
  for p in $ports; do
    node="node${p#700}"
    redis-cli -p 7001 ADMIN KEY "$key" | sed -n '/replicas/,/fallbacks/p' | grep -q "$node" || continue
    # LOCALGET prints the siblings, the context (it names this node) and the digest of the stored versions.
    local out vals digest
    out=$(redis-cli -p "$p" ADMIN LOCALGET "$key")
    vals=$(echo "$out" | head -n -2 | sort | tr '\n' ' ')
    digest=$(echo "$out" | tail -1)
    [ -z "$first" ] && first=$digest
    [ "$digest" = "$first" ] && [ "$vals" = "isolated majority " ] || return 1
  done
}
check "after the heal: the replicas hold the same versions" wait_for 90 replicas_converged
check "after the heal: nothing acknowledged is missing" wait_for 60 read_all 7005 1 150

compose down > /dev/null 2>&1
compose up -d > /dev/null 2>&1
check "after down and up: the cluster settles again" wait_for 120 settled
for p in $ports; do
  check "after down and up: every key reads back through port $p" wait_for 30 read_all "$p" 1 150
done

echo "docker: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
