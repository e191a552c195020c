#!/usr/bin/env bash
# Idle ramp to the file cap, uringmq against Mosquitto (#20): broker memory per idle connection
# at each step, MQTT 3.1.1 and 5, keep-alive 60 s, one subscription each (a topic of its own).
#
#   URINGMQ=target/ci/uringmq LOAD=target/ci/uringmq-load scripts/idle-ramp.sh
#       [--steps "1000 5000 10000 19000"] [--mqtt "3 5"] [--brokers "uringmq mosquitto"]
#       [--idle-sub "own leaf none"] [--rounds 1] [--hold 3s] [--settle 1s] [--out DIR]
#       [--label BUILD]
#
# Every run starts a fresh broker on a free loopback port (temp dir), pinned to CPU 0 (uringmq
# with one core; Mosquitto with max_connections -1), and `uringmq-load -s idle` on the other
# CPUs (--procs 2, 40 source addresses); one broker runs at a time. For each MQTT version and
# step the brokers run back to back, so the ratio to Mosquitto compares runs seconds apart.
# Filter shapes (--idle-sub, default own): `own` is a device's command topic
# (`.../idle/<i>/cmd`, the shape #20 names), `leaf` ends in the connection's own level
# (`.../idle/<i>`, cheaper for Mosquitto), `none` subscribes to nothing.
#
# Per run: broker RSS growth per connection at the end of the hold ("held", the figure of
# BENCHMARKS.md) and right after connecting plus --settle ("ready"); kernel memory per
# connection, both ends of each loopback connection (the broker's socket and the load
# generator's): the socket slab caches (scripts/lib/idle_ramp.py; root reads /proc/slabinfo)
# and the load generator's Slab + TCP buffer growth (all of the kernel: other work moves it).
# The load average of each run is in the table: other jobs on the machine move rates, and
# some memory. The file cap of this machine (20,000 descriptors per process) ends the ramp.
#
# Default steps, one round: ~2.5 min here. JSON per run, the table (table.md), the held
# figures side by side (summary.md: the rows of BENCHMARKS.md, first column --label) and logs
# in DIR (default target/idle-ramp/DATE); --rounds N gives medians with min..max. uringmq is
# $URINGMQ (default target/ci/uringmq), the load generator $LOAD (default
# target/ci/uringmq-load; built with --profile ci if missing).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
URINGMQ=${URINGMQ:-$TARGET/ci/uringmq}
LOAD=${LOAD:-$TARGET/ci/uringmq-load}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
STEPS="1000 5000 10000 19000"
VERSIONS="3 5"
SUBS=own
ROUNDS=1
BROKERS="uringmq mosquitto"
HOLD=3s
SETTLE=1s
OUT=""
LABEL=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) STEPS=$2; shift ;;
    --mqtt) VERSIONS=$2; shift ;;
    --idle-sub) SUBS=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --brokers) BROKERS=$2; shift ;;
    --hold) HOLD=$2; shift ;;
    --settle) SETTLE=$2; shift ;;
    --out) OUT=$2; shift ;;
    --label) LABEL=$2; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "idle-ramp: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ ! -x $LOAD ]]; then
  (cd "$ROOT" && cargo build -q --profile ci -p uringmq-bench --bin uringmq-load) || exit 1
fi
OUT=${OUT:-$ROOT/target/idle-ramp/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
TMP=$(mktemp -d)
HELPER=$ROOT/scripts/lib/idle_ramp.py
finish() { broker_stop; rm -rf "$TMP"; }
trap finish EXIT INT TERM
NCPU=$(nproc)
LOAD_CPUS=$( ((NCPU > 1)) && seq -s, 1 $((NCPU - 1)) || echo 0)

# broker_cmd BROKER PORT: CMD = the command line of a fresh broker on PORT (config in $TMP).
broker_cmd() {
  case "$1" in
    # warn: Mosquitto runs with log_dest none, so neither writes a line per connection.
    uringmq) CMD=("$URINGMQ" --bind 127.0.0.1 --port "$2" --cores 1 --log-level warn) ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest none\n' \
        "$2" >"$TMP/mosquitto.conf"
      CMD=("$MOSQUITTO" -c "$TMP/mosquitto.conf") ;;
  esac
}

# one_run BROKER MQTT N SUB ROUND: one step on a fresh broker; NAME.json (the load's report)
# and NAME.meta (what the table needs besides).
one_run() {
  local b=$1 v=$2 n=$3 sub=$4 port name sock_before load fds sampler
  port=$(free_port)
  name=$OUT/$sub-$b-v$v-$n.r$5
  broker_cmd "$b" "$port"
  broker_start "$port" "$OUT/$b.log" taskset -c 0 "${CMD[@]}" ||
    { echo "idle-ramp: $b did not start" >&2; return 1; }
  sock_before=$(python3 "$HELPER" sockslab)
  load=$(cut -d' ' -f1 /proc/loadavg)
  fds=$(python3 "$HELPER" fds "$BROKER_PID")
  # Sampled once the broker holds all N connections (and the load generator their other ends).
  python3 "$HELPER" wait-sockets "$BROKER_PID" $((fds + n)) 120 >"$TMP/sock" &
  sampler=$!
  timeout 300 taskset -c "$LOAD_CPUS" "$LOAD" --port "$port" -s idle -c "$n" --procs 2 \
    --sources 40 --mqtt "$v" --idle-sub "$sub" --keepalive 60 --settle "$SETTLE" -d "$HOLD" \
    --drain 0s --connect-timeout 60s --broker-pid "$BROKER_PID" --label "$b" --quiet \
    --json "$name.json" 2>>"$OUT/load.err" || echo "idle-ramp: $b v$v $n $sub: load failed" >&2
  # A run that did not open every connection never gets there: no socket caches figure.
  kill "$sampler" 2>/dev/null
  wait "$sampler" 2>/dev/null
  broker_stop
  printf '{"broker":"%s","sub":"%s","mqtt":%s,"n":%s,"load":"%s","sock_before_kb":%s,"sock_held_kb":%s}\n' \
    "$b" "$sub" "$v" "$n" "$load" "$sock_before" \
    "$(cat "$TMP/sock" 2>/dev/null | grep . || echo 0)" >"$name.meta"
  [[ -s $name.json ]] || rm -f "$name.meta"
}

echo "idle-ramp: $BROKERS, MQTT $VERSIONS, steps $STEPS, idle-sub $SUBS, $ROUNDS round(s); results in $OUT"
echo "idle-ramp: load average $(cut -d' ' -f1-3 /proc/loadavg) at the start" | tee "$OUT/load.txt"
for r in $(seq "$ROUNDS"); do
  for sub in $SUBS; do
    for v in $VERSIONS; do
      for n in $STEPS; do
        for b in $BROKERS; do one_run "$b" "$v" "$n" "$sub" "$r"; done
      done
    done
  done
done
echo "idle-ramp: load average $(cut -d' ' -f1-3 /proc/loadavg) at the end" | tee -a "$OUT/load.txt"
python3 "$HELPER" table "$OUT" | tee "$OUT/table.md"
python3 "$HELPER" summary "$OUT" "${LABEL:-$(basename "$URINGMQ")}" >"$OUT/summary.md"
