#!/usr/bin/env bash
# Side-by-side broker comparison: uringmq vs Mosquitto vs rumqttd, same scenarios, same CPUs.
#
#   scripts/bench-compare.sh [--quick] [--rounds N] [--brokers "uringmq mosquitto rumqttd"]
#                            [--out DIR] [--no-build] [--no-install] [--broker-cpus LIST]
#                            [--load-cpus LIST] [--only REGEX]
#
# Builds uringmq and uringmq-load (release), installs Mosquitto (apt) and rumqttd (cargo) if
# missing, then for each scenario runs every broker in turn, round after round (A B A B ...), each
# run on a freshly started broker pinned with taskset to the same CPUs, and prints one table:
# per figure and broker the median and spread (min..max) over the rounds, and uringmq/peer.
# A broker that is missing or fails to start is reported and skipped, never fatal.
# Only loopback; every run is bounded by --duration and a timeout.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=3
ONLY=""
QUICK=0
BROKERS="uringmq mosquitto rumqttd"
OUT=""
BUILD=1
INSTALL=1
NCPU=$(nproc)
BROKER_CPUS=""
LOAD_CPUS=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --brokers) BROKERS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --no-install) INSTALL=0 ;;
    --broker-cpus) BROKER_CPUS=$2; shift ;;
    --load-cpus) LOAD_CPUS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench-compare: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $QUICK == 1 && $ROUNDS == 3 ]] && ROUNDS=2

# CPU split: the first half for the broker, the rest for the load generator (1 + 1 on 2 cores).
if [[ -z $BROKER_CPUS ]]; then
  half=$(( NCPU > 1 ? NCPU / 2 : 1 ))
  BROKER_CPUS=$(seq -s, 0 $((half - 1)))
  LOAD_CPUS=${LOAD_CPUS:-$( ((NCPU > 1)) && seq -s, "$half" $((NCPU - 1)) || echo 0)}
fi
LOAD_CPUS=${LOAD_CPUS:-$BROKER_CPUS}
BROKER_CORES=$(awk -F, '{print NF}' <<<"$BROKER_CPUS")
OUT=${OUT:-$ROOT/target/bench-compare/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
LOG=$OUT/harness.log
say() { echo "bench-compare: $*" | tee -a "$LOG" >&2; }

# ---- build and install ----------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
  say "building uringmq-load (release)"
  (cd "$ROOT" && cargo build --release -p uringmq-bench --bin uringmq-load) >>"$LOG" 2>&1 || { say "cannot build uringmq-load; see $LOG"; exit 1; }
  if [[ " $BROKERS " == *" uringmq "* ]]; then
    say "building uringmq (release)"
    (cd "$ROOT" && cargo build --release -p uringmq) >>"$LOG" 2>&1 || say "uringmq did not build (skipped; see $LOG)"
  fi
fi
LOAD=$TARGET/release/uringmq-load
[[ -x $LOAD ]] || { say "no $LOAD (build it or drop --no-build)"; exit 1; }

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [[ " $BROKERS " == *" mosquitto "* && ! -x $MOSQUITTO && $INSTALL == 1 ]]; then
  say "installing mosquitto (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; } >>"$LOG" 2>&1 || say "apt-get install mosquitto failed"
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi
RUMQTTD=$(command -v rumqttd || echo "$HOME/.cargo/bin/rumqttd")
if [[ " $BROKERS " == *" rumqttd "* && ! -x $RUMQTTD && $INSTALL == 1 ]]; then
  # rumqttd 0.20.0 (latest) ships a Cargo.lock pinning metrics 0.22.1, which recent rustc (1.95)
  # rejects (E0521, rust-lang/rust#141402), so `cargo install --locked` fails; metrics 0.22.4
  # builds. So: unpack the crate (cargo info does), bump only metrics in a copy of its lockfile
  # (moves ahash/zerocopy too), install --locked from the copy into ~/.cargo/bin. Fallback: the
  # same version unlocked (current semver-compatible deps; also builds, less pinned).
  RQ_VER=0.20.0
  say "installing rumqttd $RQ_VER (cargo, lockfile with metrics 0.22.4; several minutes)"
  rq_tmp=$(mktemp -d)
  {
    cargo info "rumqttd@$RQ_VER" >/dev/null &&
      rq_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rumqttd-$RQ_VER" | head -1) &&
      cp -r "$rq_src" "$rq_tmp/src" &&
      (cd "$rq_tmp/src" && cargo update -p metrics@0.22.1 --precise 0.22.4 &&
        CARGO_TARGET_DIR="$rq_tmp/target" cargo install --path . --locked)
  } >>"$LOG" 2>&1 ||
    { say "patched-lockfile install failed; trying cargo install rumqttd --version $RQ_VER (unlocked)"
      CARGO_TARGET_DIR="$rq_tmp/target" cargo install rumqttd --version "$RQ_VER" >>"$LOG" 2>&1; } ||
    say "cargo install rumqttd failed"
  rm -rf "$rq_tmp"
  RUMQTTD=$(command -v rumqttd || echo "$HOME/.cargo/bin/rumqttd")
fi

# ---- brokers --------------------------------------------------------------------------------
# Equivalent limits: no connection cap below the process's file limit, queues deep enough that a
# closed-loop run never drops, 64 KiB payloads, no authentication, TCP_NODELAY where configurable.
write_configs() {
  # uringmq's defaults are production ones (64 in flight, 1,000 queued): raise them to the
  # limits Mosquitto and rumqttd get here, or a 32-publisher fan-in overflows the subscriber's
  # queue and drops QoS 1 messages that the others would have queued.
  cat >"$OUT/uringmq.toml" <<CONF
max_inflight = 100
max_queued_messages = 100000
max_queued_bytes = 0
max_outbound_bytes = 16777216
max_packet_size = 1048576
CONF
  cat >"$OUT/mosquitto.conf" <<CONF
listener 18831 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages 100000
max_inflight_messages 100
set_tcp_nodelay true
persistence false
log_dest none
CONF
  cat >"$OUT/rumqttd.toml" <<CONF
id = 0
[router]
id = 0
max_connections = 20000
max_outgoing_packet_count = 100000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:18832"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 65536
    max_inflight_count = 100
    dynamic_filters = true

[v5.1]
name = "v5-1"
listen = "127.0.0.1:18833"
next_connection_delay_ms = 0
    [v5.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 65536
    max_inflight_count = 100
    dynamic_filters = true
CONF
}
write_configs

# port_of BROKER MQTT-VERSION
port_of() {
  case "$1" in
    uringmq) echo 18830 ;;
    mosquitto) echo 18831 ;;
    rumqttd) [[ $2 == 5 ]] && echo 18833 || echo 18832 ;;
  esac
}

available() {
  case "$1" in
    uringmq) [[ -x $TARGET/release/uringmq ]] ;;
    mosquitto) [[ -x $MOSQUITTO ]] ;;
    rumqttd) [[ -x $RUMQTTD ]] ;;
    *) false ;;
  esac
}

start_broker() {
  local b=$1 cmd
  case "$b" in
    # --log-level warn: Mosquitto runs with log_dest none, so neither writes a line per connection.
    uringmq) cmd=("$TARGET/release/uringmq" --config "$OUT/uringmq.toml" --bind 127.0.0.1 --port 18830 --cores "$BROKER_CORES" --log-level warn) ;;
    mosquitto) cmd=("$MOSQUITTO" -c "$OUT/mosquitto.conf") ;;
    rumqttd) cmd=("$RUMQTTD" -c "$OUT/rumqttd.toml") ;;
  esac
  broker_start "$(port_of "$b" 3) $(port_of "$b" 5)" "$OUT/$b.log" \
    taskset -c "$BROKER_CPUS" "${cmd[@]}" 2>>"$LOG" ||
    { say "$b did not start (see $LOG and $OUT/$b.log)"; return 1; }
}
trap broker_stop EXIT INT TERM

# ---- scenarios ------------------------------------------------------------------------------
# name|uringmq-load arguments (without host/port/duration). Closed loop (--max) measures
# throughput; the open-loop "latency" rows measure latency well below saturation.
if [[ $QUICK == 1 ]]; then
  DUR=3s
  SCENARIOS=(
    "pairs-q0-max|-s pairs -c 8 -q 0 --max --mqtt 3"
    "fan-in-q1-max|-s fan-in -c 8 -q 1 --max --mqtt 3"
    "fan-out-q0-max|-s fan-out -c 50 -q 0 --max --mqtt 3"
    "latency-q0-5k|-s pairs -c 10 -q 0 -r 5000 --mqtt 3"
    "connect-storm|-s connect-storm -c 32 --mqtt 3 --sources 8"
    "idle-2k|-s idle -c 2000 --mqtt 3 --sources 4"
  )
else
  DUR=10s
  SCENARIOS=(
    "pairs-q0-max|-s pairs -c 16 -q 0 --max --mqtt 3"
    "pairs-q1-max|-s pairs -c 16 -q 1 --max --mqtt 3"
    "pairs-q2-max-v5|-s pairs -c 16 -q 2 --max --mqtt 5"
    "fan-in-q0-max|-s fan-in -c 32 -q 0 --max --mqtt 3"
    "fan-in-q1-max|-s fan-in -c 32 -q 1 --max --mqtt 3"
    "fan-out-q0-max|-s fan-out -c 200 -q 0 --max --mqtt 3"
    "shared-q1-max-v5|-s shared -c 8 --pubs 4 -q 1 --max --mqtt 5"
    "wildcard-q0-max|-s wildcard -c 32 --pubs 4 -q 0 --max --mqtt 3"
    "latency-q0-10k|-s pairs -c 10 -q 0 -r 10000 --mqtt 3"
    "latency-q1-10k|-s pairs -c 10 -q 1 -r 10000 --mqtt 3"
    "payload-4k-q0|-s pairs -c 8 -q 0 --payload 4096 --max --mqtt 3"
    "connect-storm|-s connect-storm -c 64 --mqtt 3 --sources 8"
    "idle-10k|-s idle -c 10000 --mqtt 3 --sources 8"
    "idle-10k-v5|-s idle -c 10000 --mqtt 5 --sources 8"
  )
fi

say "results in $OUT; broker CPUs $BROKER_CPUS, load CPUs $LOAD_CPUS, $ROUNDS rounds, $DUR per run"
declare -A SKIP=()
for b in $BROKERS; do available "$b" || { SKIP[$b]="not installed/built"; say "skipping $b: ${SKIP[$b]}"; }; done

for entry in "${SCENARIOS[@]}"; do
  name=${entry%%|*}
  # --only: the scenarios whose name matches (e.g. "idle|pairs-q0"), to rerun a few rows.
  [[ -n $ONLY && ! $name =~ $ONLY ]] && continue
  args=${entry#*|}
  ver=3; [[ $args == *"--mqtt 5"* ]] && ver=5
  for round in $(seq "$ROUNDS"); do
    for b in $BROKERS; do
      [[ -n ${SKIP[$b]:-} ]] && continue
      start_broker "$b" || { SKIP[$b]="failed to start"; continue; }
      json=$OUT/$name.$b.r$round.json
      # shellcheck disable=SC2086
      timeout 180 taskset -c "$LOAD_CPUS" "$LOAD" --host 127.0.0.1 --port "$(port_of "$b" "$ver")" \
        -d "$DUR" --drain 5s --broker-pid "$BROKER_PID" --label "$b" --quiet --json "$json" $args \
        >>"$LOG" 2>&1
      rc=$?
      broker_stop
      [[ $rc == 0 ]] || say "$name on $b round $round: uringmq-load exited $rc (see $LOG)"
    done
  done
done

for b in "${!SKIP[@]}"; do echo "$b: skipped (${SKIP[$b]})" >>"$OUT/skipped.txt"; done
"$ROOT/scripts/bench-table.sh" "$OUT" | tee "$OUT/table.txt"
# The same medians as SVG charts (throughput, CPU per message, p99, memory per connection).
python3 "$ROOT/scripts/bench-charts.py" "$OUT" --out "$OUT/charts"
