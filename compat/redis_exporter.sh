#!/usr/bin/env bash
# prometheus-redis-exporter (Debian) scraping a node: the scrape has no errors in the exporter's log, the node is
# up, role and run_id are labelled, cluster figures come from CLUSTER INFO and none of our own INFO fields is read
# as a number it is not, and its key checks (SCAN, TYPE, STRLEN) work.
set -uo pipefail
cd "$(dirname "$0")/.."
. compat/lib.sh
PORT=${PORT:-7304}
EXPORTER_PORT=${EXPORTER_PORT:-19121}
start_node "$PORT" --slowlog-log-slower-than 0 || exit 1
log=$(mktemp)
prometheus-redis-exporter -redis.addr "redis://127.0.0.1:$PORT" -web.listen-address "127.0.0.1:$EXPORTER_PORT" \
  -check-keys 'exp:*' > "$log" 2>&1 &
EXPORTER_PID=$!
trap 'kill $EXPORTER_PID 2> /dev/null; stop_node' EXIT
redis-cli -p "$PORT" SET exp:one 12345 > /dev/null
metrics=""
for _ in $(seq 1 50); do
  metrics=$(curl -s --max-time 20 "127.0.0.1:$EXPORTER_PORT/metrics") && [ -n "$metrics" ] && break
  sleep 0.2
done
metrics=$(curl -s --max-time 20 "127.0.0.1:$EXPORTER_PORT/metrics") # a second scrape, after the first one's commands
series() { echo "$metrics" | grep -v '^#' | grep -E "$1"; }
check "the scrape reaches the node" test "$(series '^redis_up ' | awk '{print $2}')" = "1"
check "no scrape errors" test "$(series '^redis_target_scrape_request_errors_total ' | awk '{print $2}')" = "0"
check "the exporter logged no error" bash -c "! grep -q 'level=error' '$log'"
check "role and run_id labels" bash -c "echo '$(series '^redis_instance_info')' | grep -q 'role=\"master\"' && ! echo '$(series '^redis_instance_info')' | grep -q 'run_id=\"\"'"
check "cluster state from CLUSTER INFO" test "$(series '^redis_cluster_state ' | awk '{print $2}')" = "1"
check "no mislabelled cluster series" bash -c "! echo '$(series '^redis_cluster_(name|auth)')' | grep -q ."
check "the key check sizes a string key" test "$(series '^redis_key_size\{db="db0",key="exp:one"\}' | awk '{print $2}')" = "5"
check "the slow log is read" bash -c "echo '$(series '^redis_slowlog_length ')' | grep -qv ' 0$'"
echo "redis_exporter: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
