#!/usr/bin/env bash
# Durable state (#15), side by side in one run: persistent-session QoS 1 pairs (closed loop)
# against uringmq without a store, with `persistence_sync` never / interval / always, and
# Mosquitto with `persistence true` (its autosave). Each run on a fresh broker and a fresh
# store directory, the broker on CPU 0 and uringmq-load on CPU 1 (scripts/bench-one.sh).
# For uringmq with a store it adds, from the broker's stop line, the syncs per second and the
# records per sync (group commit: how many changes one fdatasync covered).
#
#   scripts/bench-persist.sh [SECONDS]        (default 5 per run)
#
# $URINGMQ (default target/ci/uringmq, else target/release/uringmq) and $LOAD (uringmq-load,
# default target/release/uringmq-load) must exist; both need `--persistent` support.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-5}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
URINGMQ=${URINGMQ:-$( [[ -x $TARGET/ci/uringmq ]] && echo "$TARGET/ci/uringmq" || echo "$TARGET/release/uringmq")}
export LOAD=${LOAD:-$TARGET/release/uringmq-load}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
WORK=$(mktemp -d /tmp/bench-persist.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK" # Mosquitto run as root writes as user mosquitto
PORT=18850
LOADOPTS=(-s pairs -c 10 -q 1 --max --inflight 16 --mqtt 3 --persistent -d "${SECS}s")

run_uringmq() { # label, extra config lines
  local label=$1 extra=$2 dir=$WORK/$1
  mkdir -p "$dir"
  printf 'port = %d\ncores = 1\npin_cores = false\n%s\n' "$PORT" "$extra" >"$dir/uringmq.toml"
  "$ROOT/scripts/bench-one.sh" --json "$dir/run.json" --label "$label" \
    env RUST_LOG=info "$URINGMQ" --config "$dir/uringmq.toml" -- -p "$PORT" "${LOADOPTS[@]}"
  # The stop line carries the store's counters (`persistence_stats`).
  python3 - "$dir/run.json.broker.log" "$SECS" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"records: (\d+), syncs: (\d+)", text)
if m:
    records, syncs = int(m[1]), int(m[2])
    per = records / syncs if syncs else float("nan")
    print(f"    store: {records} records, {syncs} syncs ({syncs / float(sys.argv[2]):.0f}/s), "
          f"{per:.1f} records per sync")
PY
}

run_uringmq "uringmq-memory" ""
for sync in never interval always; do
  run_uringmq "uringmq-$sync" "persistence_dir = \"$WORK/uringmq-$sync/store\"
persistence_sync = \"$sync\""
done
if [[ -x $MOSQUITTO ]]; then
  dir=$WORK/mosquitto && mkdir -p "$dir" && chmod 777 "$dir"
  printf 'listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nautosave_interval 1800\nmax_queued_messages 100000\n' \
    "$PORT" "$dir" >"$dir/mosquitto.conf"
  "$ROOT/scripts/bench-one.sh" --json "$dir/run.json" --label "mosquitto-persistence" \
    "$MOSQUITTO" -c "$dir/mosquitto.conf" -- -p "$PORT" "${LOADOPTS[@]}"
else
  echo "mosquitto: not installed (skipped)"
fi
