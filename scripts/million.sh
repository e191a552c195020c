#!/usr/bin/env bash
# Idle-connection ramp towards a million: 10k, 50k, 100k, ... connections held with keep-alive,
# recording the connect rate and the broker's memory per connection at each step.
#
#   scripts/million.sh [--broker uringmq|mosquitto] [--target N] [--hold 10s] [--mqtt 3|5]
#                      [--filter idle/{i}/cmd]
#
# Each connection subscribes to its own filter (`{i}`: its number; '' for none), as #20's goal
# counts an idle connection: one subscription each.
#
# Each step starts a fresh broker (so RSS growth is this step's), opens the connections with
# uringmq-load (worker processes of <= 18,000 connections each, 80 loopback source addresses,
# IP_BIND_ADDRESS_NO_PORT), holds them, and stops. Network sysctls are raised for the ramp and
# restored on exit (scripts/sysctl-setup.sh). The ramp stops at the per-process open-file cap of
# this machine (ulimit -Hn; root cannot raise it here): a one-process broker cannot hold more
# connections than that, and the script says so. uringmq-load is $LOAD if set, else built here.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BROKER=""
GOAL=1000000
HOLD=10s
MQTT=3
IDLE_SUB=own
PORT=18850
while [[ $# -gt 0 ]]; do
  case "$1" in
    --broker) BROKER=$2; shift ;;
    --target) GOAL=$2; shift ;;
    --hold) HOLD=$2; shift ;;
    --mqtt) MQTT=$2; shift ;;
    --idle-sub) IDLE_SUB=$2; shift ;;
    *) echo "usage: $0 [--broker uringmq|mosquitto] [--target N] [--hold 10s] [--mqtt 3|5] [--idle-sub own|shared|none]" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z ${LOAD:-} ]]; then
  (cd "$ROOT" && cargo build -q --release -p uringmq-bench --bin uringmq-load) || exit 1
  LOAD=$TARGET/release/uringmq-load
fi
if [[ -z $BROKER ]]; then
  if [[ -x $TARGET/release/uringmq ]]; then BROKER=uringmq; else BROKER=mosquitto; fi
fi
TMP=$(mktemp -d)
NCPU=$(nproc)
BROKER_CPUS=$(seq -s, 0 $(( NCPU > 1 ? NCPU / 2 - 1 : 0 )))
BROKER_CORES=$(awk -F, '{print NF}' <<<"$BROKER_CPUS")
case "$BROKER" in
  uringmq) CMD=("$TARGET/release/uringmq" --bind 127.0.0.1 --port "$PORT" --cores "$BROKER_CORES") ;;
  mosquitto)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\nlog_dest none\n' "$PORT" >"$TMP/mosquitto.conf"
    CMD=("$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$TMP/mosquitto.conf") ;;
  *) echo "million: unknown broker $BROKER" >&2; exit 2 ;;
esac
[[ -x ${CMD[0]} ]] || { echo "million: ${CMD[0]} not found" >&2; exit 1; }

finish() { broker_stop; "$ROOT/scripts/sysctl-setup.sh" restore; rm -rf "$TMP"; }
"$ROOT/scripts/sysctl-setup.sh" apply || exit 1
trap finish EXIT INT TERM

CAP=$(ulimit -Hn)
# The broker keeps a few descriptors for itself (listener, io_uring, eventfds, logs).
BROKER_MAX=$(( CAP - 100 ))
STEPS=()
for n in 10000 50000 100000 250000 500000 750000 1000000; do (( n <= GOAL )) && STEPS+=("$n"); done
echo "million: broker $BROKER on CPUs $BROKER_CPUS, per-process open-file cap $CAP"
printf '%10s %10s %12s %14s %10s\n' conns opened "connects/s" "broker B/conn" failed
for n in "${STEPS[@]}"; do
  capped=0
  if (( n > BROKER_MAX )); then n=$BROKER_MAX; capped=1; fi
  broker_start "$PORT" "$TMP/broker.log" taskset -c "$BROKER_CPUS" "${CMD[@]}" ||
    { echo "million: no broker on port $PORT (see $TMP/broker.log)" >&2; exit 1; }
  procs=$(( (n + 17999) / 18000 ))
  timeout 600 "$LOAD" --port "$PORT" -s idle -c "$n" --procs "$procs" --sources 80 --mqtt "$MQTT" \
    --idle-sub "$IDLE_SUB" \
    --keepalive 60 -d "$HOLD" --connect-timeout 30s --broker-pid "$BROKER_PID" --label "$BROKER" \
    --quiet --json "$TMP/step.json" 2>>"$TMP/load.err"
  python3 - "$TMP/step.json" "$n" <<'PY' || echo "million: step $n produced no report (see $TMP/load.err)"
import json, sys
r = json.load(open(sys.argv[1]))
b = r.get("broker") or {}
print(f"{sys.argv[2]:>10} {r['connects_ok']:>10} {r['connects_per_s']:>12.0f} {b.get('mem_per_conn_bytes', 0):>14.0f} {r['connects_failed']:>10}")
PY
  broker_stop
  if (( capped )); then
    echo "million: stopped at $n connections: this machine caps a process at $CAP open files"
    echo "         (ulimit -Hn; root cannot raise it here), so one broker process cannot hold more."
    echo "         Beyond that, the load side already scales (worker processes, 80 source addresses)."
    break
  fi
done
