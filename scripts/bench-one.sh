#!/usr/bin/env bash
# One run of uringmq-load against one broker command, both pinned: the broker on CPU 0, the
# load generator on CPU 1. Prints one line: the rate (msgs/s out, or connects/s for a connection
# storm), the broker's and the load generator's CPU time per delivered message (per CONNACK),
# p50/p99 latency and lost messages. Loopback only.
#
#   scripts/bench-one.sh [--json FILE] [--label NAME] BROKER_CMD... -- LOAD_OPTIONS...
#   e.g. scripts/bench-one.sh mosquitto -p 18831 -- -p 18831 -s connect-storm -c 64 --mqtt 3 --sources 8 -d 6s
#        scripts/bench-one.sh target/release/uringmq --port 18830 --cores 1 --driver epoll \
#            -- -p 18830 -s pairs -c 10 -q 0 -r 10000 -d 5s --mqtt 3
#        scripts/bench-one.sh uringmq-load --null-broker -p 18899 -d 60s \
#            -- -p 18899 -s connect-storm -c 64 --mqtt 3 --sources 8 -d 6s
#
# uringmq-load is $LOAD, default target/release/uringmq-load (under $CARGO_TARGET_DIR if set).
# The broker must listen on 127.0.0.1 at the load's port (-p/--port, default 1883).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
LOAD=${LOAD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/uringmq-load}
JSON="" LABEL=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --json) JSON=$2; shift 2 ;;
    --label) LABEL=$2; shift 2 ;;
    *) break ;;
  esac
done
broker=()
while [[ $# -gt 0 && $1 != -- ]]; do broker+=("$1"); shift; done
[[ $# -gt 0 && ${#broker[@]} -gt 0 ]] || { sed -n '2,15p' "$0"; exit 2; }
shift
port=1883
for ((i = 1; i < $#; i++)); do
  if [[ ${!i} == -p || ${!i} == --port ]]; then j=$((i + 1)); port=${!j}; fi
done
JSON=${JSON:-$(mktemp /tmp/bench-one.XXXXXX.json)}
LABEL=${LABEL:-$(basename "${broker[0]}")}
: >"$JSON.broker.log"
trap broker_stop EXIT
broker_start "$port" "$JSON.broker.log" taskset -c 0 "${broker[@]}" ||
  { echo "$LABEL: broker did not start: see $JSON.broker.log" >&2; exit 1; }
status=0
taskset -c 1 "$LOAD" --broker-pid "$BROKER_PID" --json "$JSON" --quiet "$@" >"$JSON.load.txt" 2>&1 || status=$?
broker_stop
[[ $status == 0 ]] || { echo "$LABEL: run failed ($status): see $JSON.load.txt" >&2; exit "$status"; }
python3 - "$JSON" "$LABEL" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
storm = d["scenario"] == "connect-storm"
unit, per = ("connects/s", "CONNACK") if storm else ("msgs/s", "msg")
rate = d["connects_per_s"] if storm else d["msgs_out_per_s"]
cost = lambda pct: pct / 100 / rate * 1e6 if rate else float("nan")
lat = d["connect_latency_us"] if storm else d["latency_us"]
print(f"{sys.argv[2]}: {unit} {rate:.0f}  broker us/{per} {cost(d['broker']['cpu_pct']):.1f} "
      f"({d['broker']['cpu_pct']:.1f} %)  loadgen us/{per} {cost(d['loadgen_cpu_pct']):.1f} "
      f"({d['loadgen_cpu_pct']:.1f} %)  p50/p99 us {lat['p50']:.0f}/{lat['p99']:.0f}  "
      f"lost {d['delivery']['lost']}")
PY
