#!/usr/bin/env bash
# iredis (pip), the interactive client, typed into through tmux as a user would, against a node whose default
# user gets the plain mode (--values plain): GET, MGET and a typed key show as against Redis. In the versioned mode
# iredis cannot show GET's array (README says so); CLIENT VALUES switches a session either way.
set -uo pipefail
cd "$(dirname "$0")/.."
. compat/lib.sh
PORT=${PORT:-7531}
SESSION=dkv-iredis-$$
start_node "$PORT" --values plain || exit 1
trap 'tmux kill-session -t "$SESSION" 2> /dev/null; stop_node' EXIT
tmux new-session -d -s "$SESSION" -x 160 -y 50 "iredis -p $PORT"
screen() { tmux capture-pane -t "$SESSION" -p -S -200; }
# enter LINE EXPECTED: types a command and waits (10 s at most) for the screen to show EXPECTED after it.
enter() {
  tmux send-keys -t "$SESSION" "$1" Enter
  for _ in $(seq 1 100); do
    screen | sed -n "/> $1\$/,\$p" | grep -qF -- "$2" && return 0
    sleep 0.1
  done
  return 1
}
for _ in $(seq 1 100); do screen | grep -q "127.0.0.1:$PORT>" && break; sleep 0.1; done
check "iredis connects" bash -c "tmux capture-pane -t $SESSION -p | grep -q '127.0.0.1:$PORT>'"
check "SET" enter "SET greeting hello" "OK"
check "GET shows the value" enter "GET greeting" '"hello"'
check "MGET shows values and nil" enter "MGET greeting nope" '2) (nil)'
check "INCRBY" enter "INCRBY hits 5" "(integer) 5"
check "SADD" enter "SADD tags a" "(integer) 1"
check "TTL" enter "TTL greeting" "(integer) -1"
check "CLIENT VALUES VERSIONED" enter "CLIENT VALUES VERSIONED" "OK"
check "the versioned GET is an array iredis cannot show (as README warns)" enter "GET greeting" "(error)"
check "CLIENT VALUES PLAIN again" enter "CLIENT VALUES PLAIN" "OK"
check "GET shows the value again" enter "GET hits" '"5"'
check "no other error on screen" test "$(screen | grep -c '(error)')" = 1
echo "iredis: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
