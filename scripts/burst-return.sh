#!/usr/bin/env bash
# Memory a burst of connections leaves behind: starts the broker, opens N idle connections
# (default 19,000: this machine caps a process at 20,000 open files), holds them, closes them,
# and prints the broker's RSS before, while held, and 1, 3 and 5 s after they closed.
#
#   LOAD=.../uringmq-load [MQTT=3|5] [IDLE_SUB=own|shared|none] [HOLD=3s] [BURSTS=1] scripts/burst-return.sh [BROKER_BINARY] [N]
#
# BURSTS=n runs n bursts one after the other on the same broker: what the first leaves behind
# and the later ones do not add to is memory the broker grows by once and reuses (its first
# pages and tables), not memory each burst keeps.
# HOLD is how long the connections stay open once all are connected (the held figure is RSS
# at its end): at 3 s the last connections of a 19,000 burst have not all parked, detached
# and been compacted yet, nor has mimalloc purged what they freed; 10 s shows them settled.
# Each connection subscribes to a topic of its own (IDLE_SUB=own, uringmq-load's default), the
# shape of #20's goal (one subscription per idle connection).
#
# The broker is target/release/uringmq unless given; one core (pinned to CPU 0), so the one
# core that freed the memory is the one that must give it back. uringmq-load is $LOAD if set,
# else built here.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${1:-$TARGET/release/uringmq}
N=${2:-19000}
PORT=18851
MQTT=${MQTT:-3}
IDLE_SUB=${IDLE_SUB:-own}
HOLD=${HOLD:-3s}
BURSTS=${BURSTS:-1}
if [[ -z ${LOAD:-} ]]; then
  (cd "$ROOT" && cargo build -q --release -p uringmq-bench --bin uringmq-load) || exit 1
  LOAD=$TARGET/release/uringmq-load
fi
TMP=$(mktemp -d)
finish() { broker_stop; rm -rf "$TMP"; }
trap finish EXIT INT TERM

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$BROKER_PID/status"; }

broker_start "$PORT" "$TMP/broker.log" taskset -c 0 "$BIN" --bind 127.0.0.1 --port "$PORT" \
  --cores 1 || exit 1
before=$(rss_kb)
# The hold's last RSS sample is the load's report; the connections close when it exits.
for burst in $(seq 1 "$BURSTS"); do
  timeout 300 "$LOAD" --port "$PORT" -s idle -c "$N" --procs 2 --sources 40 --mqtt "$MQTT" \
    --idle-sub "$IDLE_SUB" \
    --keepalive 60 -d "$HOLD" --connect-timeout 30s --broker-pid "$BROKER_PID" --label burst \
    --quiet --json "$TMP/held.json" 2>>"$TMP/load.err" || { echo "burst: load failed" >&2; exit 1; }
  held=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])).get("broker") or {}; print(int(b.get("mem_per_conn_bytes", 0)))' "$TMP/held.json")
  sleep 1; t1=$(rss_kb); sleep 2; t3=$(rss_kb); sleep 2; t5=$(rss_kb)
  echo "burst $burst: $N connections (MQTT $MQTT, idle-sub $IDLE_SUB, hold $HOLD); broker RSS before ${before} KiB, held ${held} B/conn;"
  echo "       after close: +1 s ${t1} KiB, +3 s ${t3} KiB, +5 s ${t5} KiB"
  echo "       left behind after 5 s: $(( t5 - before )) KiB ($(( (t5 - before) * 1024 / N )) B per connection)"
done
