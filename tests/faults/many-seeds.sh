#!/usr/bin/env bash
# Runs the fault harness once per seed and prints one markdown table row per run, from each report.json.
#
#   sudo bash tests/faults/many-seeds.sh BIN DURATION SEED... [-- HARNESS OPTIONS...]
#   sudo bash tests/faults/many-seeds.sh target/release/dynamo-kv 150 1 2 3 4 5 -- --partition-mode route
#
# Each run writes to target/faults/many/seed-N (its console output to target/faults/many/seed-N.log, next to it:
# the harness empties its --out directory at start). A failed run does not stop the others; the exit status is
# non-zero if any run failed.
set -u

if [ $# -lt 3 ]; then
  echo "usage: $0 BIN DURATION SEED... [-- HARNESS OPTIONS...]" >&2
  exit 2
fi
bin=$1
duration=$2
shift 2
seeds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  seeds+=("$1")
  shift
done
[ $# -gt 0 ] && shift
extra=("$@")
if [ ${#seeds[@]} -eq 0 ]; then
  echo "no seed given" >&2
  exit 2
fi

harness="$(cd "$(dirname "$0")" && pwd)/harness.py"
base=target/faults/many
mkdir -p "$base"

declare -A status
for seed in "${seeds[@]}"; do
  out="$base/seed-$seed"
  echo "== seed $seed: $duration s -> $out"
  # A run that stops before its report must not be shown with an earlier run's numbers.
  rm -f "$out/report.json"
  # tee would hide the harness's exit status; PIPESTATUS keeps it.
  python3 "$harness" --bin "$bin" --duration "$duration" --seed "$seed" --out "$out" "${extra[@]}" 2>&1 |
    tee "$base/seed-$seed.log"
  status[$seed]=${PIPESTATUS[0]}
  echo "== seed $seed: exit status ${status[$seed]}"
done

echo
echo "| seed | acknowledged | lost | reads without context | failed | timed out | converged after heal | result |"
echo "|---|---|---|---|---|---|---|---|"
failed=0
for seed in "${seeds[@]}"; do
  rc=${status[$seed]}
  result=PASS
  if [ "$rc" -ne 0 ]; then
    result="FAIL (exit $rc)"
    failed=1
  fi
  report="$base/seed-$seed/report.json"
  if [ -f "$report" ]; then
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
conv = r.get("converged_after_heal_s")
conv = "no" if conv is None else f"{conv} s"
cells = [sys.argv[2], r["acknowledged"], r["lost"], r.get("reads_without_context", "?"), r["failed"], r["timed_out"],
         conv, sys.argv[3]]
print("| " + " | ".join(str(c) for c in cells) + " |")
' "$report" "$seed" "$result"
  else
    # The harness stopped before writing a report (set-up failed, or it was interrupted).
    echo "| $seed | - | - | - | - | - | - | $result, no report |"
  fi
done
exit $failed
