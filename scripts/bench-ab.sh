#!/usr/bin/env bash
# A/B comparison of two uringmq builds (e.g. main vs a branch) on one scenario, alternating
# runs (A B A B ...) on freshly started brokers pinned to the same CPU.
#
#   scripts/bench-ab.sh A_BINARY B_BINARY ROUNDS [uringmq-load options...]
#   e.g. scripts/bench-ab.sh /tmp/uringmq-main target/release/uringmq 5 \
#            -s fan-out -c 20 -q 0 --max --inflight 8 --payload 65536 -d 4s --mqtt 3
#
# Prints, per build, msgs/s out (connects/s for a connection storm), the broker's and the load
# generator's CPU time per delivered message (per CONNACK), p99 latency (median and every run),
# and B/A. Each run is scripts/bench-one.sh: the broker with --cores 1 on CPU 0, uringmq-load
# ($LOAD, default target/release/uringmq-load) on CPU 1. Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
A=$1 B=$2 ROUNDS=$3
shift 3
LOAD=${LOAD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/uringmq-load}
PORT=${PORT:-18931}
OUT=$(mktemp -d /tmp/bench-ab.XXXXXX)
for r in $(seq 1 "$ROUNDS"); do
  for v in A B; do
    bin=$A; [[ $v == B ]] && bin=$B
    LOAD=$LOAD "$ROOT/scripts/bench-one.sh" --json "$OUT/$v-$r.json" --label "$v run $r" \
      "$bin" --port "$PORT" --cores 1 --log-level warn -- -p "$PORT" "$@" ||
      echo "run $v $r failed: see $OUT/$v-$r.json.load.txt"
  done
done
python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
med = {}
unit = "msgs/s"
for v in "AB":
    runs = []
    for f in sorted(glob.glob(f"{out}/{v}-*.json")):
        d = json.load(open(f))
        # A connection storm is measured in CONNACKs, everything else in delivered messages.
        storm = d["scenario"] == "connect-storm"
        unit, per = ("connects/s", "CONNACK") if storm else ("msgs/s", "delivery")
        m = d["connects_per_s"] if storm else d["msgs_out_per_s"]
        cost = lambda pct: pct / 100 / m * 1e6 if m else float("nan")
        runs.append((m, cost(d["broker"]["cpu_pct"]), cost(d["loadgen_cpu_pct"]),
                     d["latency_us"]["p99"], d["delivery"]["lost"]))
    if not runs:
        sys.exit(f"no results for {v}: see {out}")
    med[v] = [statistics.median(r[i] for r in runs) for i in range(4)]
    p99 = "" if unit == "connects/s" else f"  p99 us {med[v][3]:.0f} {[round(r[3]) for r in runs]}"
    print(f"{v}: {unit} {med[v][0]:.0f} {[round(r[0]) for r in runs]}  "
          f"broker us/{per} {med[v][1]:.1f} {[round(r[1], 1) for r in runs]}  "
          f"loadgen us/{per} {med[v][2]:.1f}{p99}  lost {[r[4] for r in runs]}")
print(f"B/A: {unit} {med['B'][0] / med['A'][0]:.2f}x  broker us/{per} "
      f"{med['B'][1] / med['A'][1]:.2f}x   (runs in {out})")
PY
