#!/usr/bin/env bash
# Messages per second and latency through a bridge, uringmq against Mosquitto, in one run:
#
#   direct:    publishers -> remote <- subscribers                  (the baseline)
#   uringmq:   publishers -> uringmq  --[[bridge]]--> remote <- subscribers
#   mosquitto: publishers -> Mosquitto --connection--> remote <- subscribers
#
#   scripts/bench-bridge.sh [--qos N] [--rate R] [--duration D] [--rounds N] [--out DIR]
#
# The remote is the same uringmq each time; only the bridging broker changes. uringmq-load
# publishes to the bridging broker (--port) and subscribes on the remote (--sub-port), so the
# latency is end to end; "added p99" is a path's p99 minus the direct one. Open loop at --rate
# (default 20000 msg/s over 10 pairs), 64-byte payloads. Binaries: URINGMQ_BIN (default
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
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
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

run_load() { # label pub-port sub-port
  timeout 120 "$LOAD" --scenario pairs --conns 10 --qos "$QOS" --mqtt 3 --rate "$RATE" \
    --duration "$DURATION" --drain 5s --port "$2" --sub-port "$3" --label "$1" \
    --json "$OUT/$1.json" --quiet >>"$OUT/load.log" 2>&1 || say "$1: the load run failed (see $OUT/load.log)"
}

one_round() {
  local remote=$(free_port) ubridge=$(free_port) mbridge=$(free_port) r=$1
  printf 'port = %s\n' "$remote" >"$OUT/remote.toml"
  start_uringmq "$remote" "$OUT/remote.toml" || { say "remote did not start"; return; }
  run_load "direct-$r" "$remote" "$remote"

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
  run_load "uringmq-$r" "$ubridge" "$remote"

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
  run_load "mosquitto-$r" "$mbridge" "$remote"
  cleanup
}

for r in $(seq "$ROUNDS"); do one_round "$r"; done

python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, statistics, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
def load(label):
    runs = [json.load(open(p)) for r in range(1, rounds + 1)
            if os.path.exists(p := os.path.join(out, f"{label}-{r}.json"))]
    if not runs:
        return None
    med = lambda f: statistics.median(f(x) for x in runs)
    return {
        "msgs/s": med(lambda x: x["msgs_out_per_s"]),
        "p50 us": med(lambda x: x["latency_us"]["p50"]),
        "p99 us": med(lambda x: x["latency_us"]["p99"]),
        "lost": med(lambda x: max(0, x["published"] - x["received"])),
    }
rows = {l: load(l) for l in ["direct", "uringmq", "mosquitto"]}
base = rows["direct"]
print(f"{'path':<12}{'msgs/s':>12}{'p50 us':>10}{'p99 us':>10}{'added p99':>12}{'lost':>8}")
for label, r in rows.items():
    if r is None:
        print(f"{label:<12}{'(failed)':>12}")
        continue
    added = r["p99 us"] - base["p99 us"] if base else float("nan")
    print(f"{label:<12}{r['msgs/s']:>12.0f}{r['p50 us']:>10.0f}{r['p99 us']:>10.0f}{added:>12.0f}{r['lost']:>8.0f}")
EOF
say "reports in $OUT"
