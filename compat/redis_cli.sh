#!/usr/bin/env bash
# redis-cli against a node: plain Redis usage, the siblings/context session from the README, --pipe mass insert,
# COMMAND DOCS for hints, errors in Redis's words.
set -uo pipefail
cd "$(dirname "$0")/.."
. compat/lib.sh
PORT=${PORT:-7301}
start_node "$PORT" || exit 1
trap stop_node EXIT
cli() { redis-cli -p "$PORT" "$@"; }

check "PING" test "$(cli PING)" = "PONG"
check "inline PING" test "$(printf 'PING\r\n' | cli)" = "PONG"
check "SET" test "$(cli SET greeting hello)" = "OK"
check "GET shows the value then the context" test "$(cli GET greeting | head -1)" = "hello"

# The README session: two writes with one context make siblings; the covering context resolves them.
cli SET cart '[]' > /dev/null
ctx=$(cli GET cart | tail -1)
cli SET cart '[book]' CONTEXT "$ctx" > /dev/null
cli SET cart '[pen]' CONTEXT "$ctx" > /dev/null
out=$(cli GET cart)
check "two writes with one context are siblings" test "$(echo "$out" | head -2 | sort | tr '\n' ' ')" = "[book] [pen] "
ctx2=$(echo "$out" | tail -1)
cli SET cart '[book,pen]' CONTEXT "$ctx2" > /dev/null
check "a covering context collapses them" test "$(cli GET cart | head -1)" = "[book,pen]"
check "bad context is refused" bash -c "redis-cli -p $PORT SET cart x CONTEXT nonsense | grep -q 'invalid context'"
check "DEL counts deleted keys" test "$(cli DEL cart greeting missing)" = "2"
check "EXISTS after DEL" test "$(cli EXISTS cart)" = "0"
cli MSET scan:a 1 scan:b 2 scan:c 3 > /dev/null
redis-cli -p $PORT RPUSH big:list a b c > /dev/null; redis-cli -p $PORT HSET big:hash f 1 g 2 > /dev/null
redis-cli -p $PORT SADD big:set m > /dev/null; redis-cli -p $PORT ZADD big:zset 1 m > /dev/null
bigkeys=$(redis-cli -p $PORT --bigkeys 2>&1)
check "--bigkeys finds the biggest key of every type" bash -c "echo \"\$0\" | grep -q \"Biggest   list found '\\\"big:list\\\"' has 3 items\" \
  && echo \"\$0\" | grep -q 'Biggest   hash found' && echo \"\$0\" | grep -q 'Biggest    set found' \
  && echo \"\$0\" | grep -q 'Biggest   zset found'" "$bigkeys"
check "--memkeys sizes every type" bash -c "echo \"\$0\" | grep -q '1 lists with [1-9][0-9]* bytes'" \
  "$(redis-cli -p $PORT --memkeys 2>&1)"
redis-cli -p $PORT DEL big:list big:hash big:set big:zset > /dev/null
check "--scan with a pattern lists every key" test "$(redis-cli -p $PORT --scan --pattern 'scan:*' | sort | tr '\n' ' ')" = "scan:a scan:b scan:c "
check "MGET in the plain mode" test "$(printf 'CLIENT VALUES PLAIN\nMGET scan:a nope scan:c\n' | cli | tr '\n' ' ')" = "OK 1  3 "
cli DEL scan:a scan:b scan:c > /dev/null
check "unknown command in Redis's words" bash -c "redis-cli -p $PORT FOO bar | grep -q \"unknown command 'FOO', with args beginning with: 'bar'\""
check "wrong arity in Redis's words" bash -c "redis-cli -p $PORT GET | grep -q \"wrong number of arguments for 'get' command\""
check "COMMAND DOCS has hints" bash -c "redis-cli -p $PORT COMMAND DOCS set | grep -q CONTEXT"
check "COMMAND COUNT" test "$(cli COMMAND COUNT)" -ge 10
check "INFO keyspace" bash -c "redis-cli -p $PORT INFO keyspace | grep -q '# Keyspace'"
# What monitoring tools parse: redis-cli --stat's blocked column, a run id, a role, the clock, latency events.
check "INFO has blocked_clients, run_id and role" bash -c "redis-cli -p $PORT INFO | tr -d '\r' | grep -q '^blocked_clients:0' && redis-cli -p $PORT INFO | tr -d '\r' | grep -qE '^run_id:[0-9a-f]{40}$' && redis-cli -p $PORT INFO replication | grep -q 'role:master'"
# redis-cli --stat itself (stdbuf: it writes through stdio, which a pipe would hold until it is killed).
stat=$(timeout 2 stdbuf -oL redis-cli -p "$PORT" --stat -i 0.5 2>&1)
check "--stat prints rows with no negative figure" bash -c "echo \"\$0\" | grep -qE '^[0-9]+ +[0-9.]+[KMG]? +[0-9]+ +0 +[0-9]+ ' && ! echo \"\$0\" | grep -q -- ' -[0-9]'" "$stat"
check "TIME answers seconds and microseconds" test "$(cli TIME | wc -l)" -eq 2
check "LATENCY LATEST answers empty" test -z "$(cli LATENCY LATEST)"
check "CLIENT NO-EVICT and MAINT_NOTIFICATIONS accepted" bash -c "redis-cli -p $PORT CLIENT NO-EVICT on | grep -q OK && redis-cli -p $PORT CLIENT MAINT_NOTIFICATIONS on moving-endpoint-type internal-ip | grep -q OK"

# Mass insert with --pipe (redis-cli appends an ECHO and waits for its echo).
pipe_file=$(mktemp)
python3 - "$pipe_file" <<'PY'
import sys
with open(sys.argv[1], "wb") as f:
    for i in range(1, 20001):
        k = b"mass:%d" % i
        f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\nvalue\r\n" % (len(k), k))
PY
pipe_out=$(redis-cli -p "$PORT" --pipe < "$pipe_file" 2>&1)
rm -f "$pipe_file"
check "--pipe mass insert: 0 errors, 20000 replies" bash -c "echo '$pipe_out' | grep -q 'errors: 0, replies: 20000'"
check "DBSIZE after mass insert" test "$(cli DBSIZE)" = "20000"
check "a mass-inserted key reads back" test "$(cli GET mass:12345 | head -1)" = "value"

# TLS: a second node with a self-signed certificate (openssl), reached with redis-cli --tls.
stop_node
TLS_DIR=$(mktemp -d)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" > /dev/null 2>&1
TLS_PORT=$((PORT + 100))
if start_node "$PORT" --tls-listen "127.0.0.1:$TLS_PORT" --tls-cert-file "$TLS_DIR/cert.pem" \
  --tls-key-file "$TLS_DIR/key.pem"; then
  tls() { redis-cli --tls --cacert "$TLS_DIR/cert.pem" -h 127.0.0.1 -p "$TLS_PORT" "$@"; }
  check "TLS: redis-cli --tls PING" test "$(tls PING)" = "PONG"
  check "TLS: SET over TLS" test "$(tls SET secure yes)" = "OK"
  check "TLS: what TLS wrote reads back in plaintext" test "$(cli GET secure | head -1)" = "yes"
  check "TLS: a client that does not trust the certificate is refused" \
    bash -c "! redis-cli --tls -h 127.0.0.1 -p $TLS_PORT PING 2>&1 | grep -q PONG"
else
  fail "TLS: node with --tls-listen did not start"
fi
rm -rf "$TLS_DIR"

echo "redis-cli: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
