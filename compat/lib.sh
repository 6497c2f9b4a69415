# Shared helpers for the compat scripts: start a node, count results.
# Sourced, not run. Expects DYNAMO_KV_BIN (defaults to the debug build).

BIN=${DYNAMO_KV_BIN:-target/debug/dynamo-kv}
PASSED=0
FAILED=0

pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
check() { # check "description" command...
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

# matches TEXT GREP-ARGS...: whether a line of TEXT matches; lacks: whether none does. Shell functions, for checks
# of long outputs: a benchmark's progress lines can pass the kernel's limit on one argument of a new process
# (128 KiB), which `bash -c "..." "$out"` meets.
matches() { local text=$1; shift; grep -q "$@" <<< "$text"; }
lacks() { ! matches "$@"; }

# start_node PORT [extra serve flags...]: starts a node (id $NODE_ID, default compat) on a fresh data dir; sets
# NODE_PID and NODE_DIR.
start_node() {
  local port=$1; shift
  NODE_DIR=$(mktemp -d)
  "$BIN" serve --node-id "${NODE_ID:-compat}" --listen "127.0.0.1:$port" --data-dir "$NODE_DIR/data" "$@" \
    > "$NODE_DIR/stdout" 2> "$NODE_DIR/stderr" &
  NODE_PID=$!
  for _ in $(seq 1 100); do
    grep -q "ready" "$NODE_DIR/stdout" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "node did not start:"; cat "$NODE_DIR/stderr"; return 1
}

stop_node() {
  [ -n "${NODE_PID:-}" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
  [ -n "${NODE_DIR:-}" ] && rm -rf "$NODE_DIR"
  NODE_PID=
  NODE_DIR=
}

# Scripts that start several nodes: track_node adds the node start_node just started (and any other directory:
# DIRS+=(dir)) to what cleanup_nodes stops and removes; run `trap cleanup_nodes EXIT` once.
PIDS=()
DIRS=()
track_node() { PIDS+=("$NODE_PID"); DIRS+=("$NODE_DIR"); }
cleanup_nodes() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null && wait "$pid" 2> /dev/null; done
  rm -rf "${DIRS[@]}"
}
