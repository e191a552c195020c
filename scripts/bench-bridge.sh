#!/usr/bin/env bash
# Messages per second and added latency through a bridge, uringmq against Mosquitto, in one run:
#
#   direct:    publishers -> remote <- subscribers                  (the baseline)
#   uringmq:   publishers -> uringmq  --[[bridge]]--> remote <- subscribers
#   mosquitto: publishers -> Mosquitto --connection--> remote <- subscribers
#
#   scripts/bench-bridge.sh [--qos N] [--rate R] [--duration D] [--rounds N] [--out DIR]
#
# The remote is the same uringmq each time; only the bridging broker changes. uringmq-load
# publishes to the bridging broker (--port) and subscribes on the remote (--sub-port), so the
# latency is end to end. Each path gets two runs: open loop at --rate (default 20000 msg/s over
# 10 pairs, 64-byte payloads) for the latency, whose p50/p99 minus the direct path's are the
# "added" columns, and closed loop (`uringmq-load --max`) for the most messages per second the
# path carries. About 2 minutes with the defaults. Binaries: URINGMQ_BIN (default
# target/ci/uringmq), LOAD (default target/ci/uringmq-load), MOSQUITTO (default mosquitto).
# Loopback only; every run is bounded by --duration plus a drain.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
URINGMQ_BIN=${URINGMQ_BIN:-$ROOT/target/ci/uringmq}
LOAD=${LOAD:-$ROOT/target/ci/uringmq-load}
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
QOS=1
RATE=20000
DURATION=5s
ROUNDS=1
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --qos) QOS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench-bridge: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-$ROOT/target/bench-bridge/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
say() { echo "bench-bridge: $*" >&2; }
for b in "$URINGMQ_BIN" "$LOAD" "$MOSQUITTO"; do
  [[ -x $b ]] || { say "missing $b (cargo build --profile ci -p uringmq -p uringmq-bench)"; exit 1; }
done

# Two brokers run at once (the remote and a bridging one): scripts/lib/broker.sh starts and
# stops one at a time, so their pids are kept here.
PIDS=()
start_broker() { # port log command...
  broker_start "$@" || return 1
  PIDS+=("$BROKER_PID")
}
cleanup() {
  for p in "${PIDS[@]}"; do
    BROKER_PID=$p
    broker_stop
  done
  PIDS=()
}
trap cleanup EXIT

# One uringmq, one core per broker so the two bridging brokers get the same CPU budget.
start_uringmq() { # port config-file
  start_broker "$1" "$OUT/uringmq.log" "$URINGMQ_BIN" -c "$2" --port "$1" --cores 1 --log-level warn
}

run_load() { # label pub-port sub-port [more uringmq-load options]
  local label=$1 pub=$2 sub=$3
  shift 3
  timeout 120 "$LOAD" --scenario pairs --conns 10 --qos "$QOS" --mqtt 3 --rate "$RATE" \
    --duration "$DURATION" --drain 3s --port "$pub" --sub-port "$sub" --label "$label" \
    --json "$OUT/$label.json" --quiet "$@" >>"$OUT/load.log" 2>&1 || say "$label: the load run failed (see $OUT/load.log)"
}

# Latency at the offered rate, then the most the path carries.
both_runs() { # path round pub-port sub-port
  run_load "$1-$2" "$3" "$4"
  run_load "$1-max-$2" "$3" "$4" --max
}

one_round() {
  local remote=$(free_port) ubridge=$(free_port) mbridge=$(free_port) r=$1
  printf 'port = %s\n' "$remote" >"$OUT/remote.toml"
  start_uringmq "$remote" "$OUT/remote.toml" || { say "remote did not start"; return; }
  both_runs direct "$r" "$remote" "$remote"

  cat >"$OUT/bridge.toml" <<EOF
[[bridge]]
name = "bench"
address = "127.0.0.1:$remote"
protocol = "mqttv311"
max_inflight = 100
[[bridge.topic]]
pattern = "#"
direction = "out"
qos = $QOS
EOF
  start_uringmq "$ubridge" "$OUT/bridge.toml" || { say "uringmq bridge did not start"; return; }
  sleep 1 # the bridge connects
  both_runs uringmq "$r" "$ubridge" "$remote"

  cat >"$OUT/mosquitto.conf" <<EOF
listener $mbridge 127.0.0.1
allow_anonymous true
user root
connection bench
address 127.0.0.1:$remote
topic # out $QOS
max_inflight_messages 100
# The same queue bound as uringmq's bridge (Mosquitto's default, 1000, drops under bursts).
max_queued_messages 100000
cleansession true
EOF
  start_broker "$mbridge" "$OUT/mosquitto.log" "$MOSQUITTO" -c "$OUT/mosquitto.conf" ||
    { say "mosquitto did not start"; return; }
  sleep 1
  both_runs mosquitto "$r" "$mbridge" "$remote"
  cleanup
}

for r in $(seq "$ROUNDS"); do one_round "$r"; done

python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, statistics, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
def runs(label):
    return [json.load(open(p)) for r in range(1, rounds + 1)
            if os.path.exists(p := os.path.join(out, f"{label}-{r}.json"))]
def load(path):
    rated, top = runs(path), runs(f"{path}-max")
    if not rated:
        return None
    med = lambda xs, f: statistics.median(f(x) for x in xs) if xs else float("nan")
    return {
        "max msgs/s": med(top, lambda x: x["msgs_out_per_s"]),
        "p50": med(rated, lambda x: x["latency_us"]["p50"]),
        "p99": med(rated, lambda x: x["latency_us"]["p99"]),
        "lost": sum(max(0, x["published"] - x["received"]) for x in rated + top) / len(rated),
    }
rows = {l: load(l) for l in ["direct", "uringmq", "mosquitto"]}
base = rows["direct"]
print("| path | max msgs/s | p50 us | p99 us | added p50 us | added p99 us | lost |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for label, r in rows.items():
    if r is None:
        print(f"| {label} | (failed) | | | | | |")
        continue
    add = lambda k: r[k] - base[k] if base else float("nan")
    print(f"| {label} | {r['max msgs/s']:,.0f} | {r['p50']:,.0f} | {r['p99']:,.0f} "
          f"| {add('p50'):,.0f} | {add('p99'):,.0f} | {r['lost']:,.0f} |")
EOF
say "reports in $OUT"
