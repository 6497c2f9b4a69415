#!/usr/bin/env bash
# Docker fault tests against the top-level docker-compose.yml (5 nodes, N=3 R=2 W=2), with redis-cli:
#  - write through one container, read through every other;
#  - stop one container: reads and writes keep succeeding; start it: hints drain and it serves its keys;
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

compose down > /dev/null 2>&1
compose up -d > /dev/null 2>&1
check "after down and up: the cluster settles again" wait_for 120 settled
for p in $ports; do
  check "after down and up: every key reads back through port $p" wait_for 30 read_all "$p" 1 150
done

echo "docker: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
