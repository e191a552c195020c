#!/usr/bin/env bash
# Smoke run of uringmq-load against Mosquitto: every scenario for a few seconds, MQTT 3.1.1 and
# 5.0, QoS 0/1/2, with --strict (QoS 1/2 loss, QoS 2 duplicates, misrouting, protocol errors and
# failed connections fail the run). Not part of `cargo test`: it needs a broker and ~1 minute.
#
#   scripts/bench-smoke.sh [--port P] [--broker-cmd "CMD"]   (default: a private Mosquitto)
#
# With --broker-cmd the command must listen on 127.0.0.1:P (e.g. to smoke-test uringmq:
#   --broker-cmd "target/release/uringmq --bind 127.0.0.1 --port 18840 --cores 1").
# uringmq-load is $LOAD if set, else built here (release).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PORT=18840
CMD=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT=$2; shift ;;
    --broker-cmd) CMD=$2; shift ;;
    *) echo "usage: $0 [--port P] [--broker-cmd CMD]" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z ${LOAD:-} ]]; then
  (cd "$ROOT" && cargo build -q --release -p uringmq-bench --bin uringmq-load) || exit 1
  LOAD=$TARGET/release/uringmq-load
fi
TMP=$(mktemp -d)
if [[ -z $CMD ]]; then
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  [[ -x $MOSQUITTO ]] || { apt-get install -y -qq mosquitto >/dev/null 2>&1; MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto); }
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nset_tcp_nodelay true\nlog_dest none\n' "$PORT" >"$TMP/mosquitto.conf"
  CMD="$MOSQUITTO -c $TMP/mosquitto.conf"
fi
cleanup() { broker_stop; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
# shellcheck disable=SC2086
broker_start "$PORT" "$TMP/broker.log" $CMD || { echo "bench-smoke: no broker (use --port?)" >&2; exit 1; }

pass=0; fail=0
run() {
  local name=$1; shift
  if timeout 60 "$LOAD" --port "$PORT" -d 2s --drain 5s --broker-pid "$BROKER_PID" --strict --quiet --json "$TMP/$name.json" "$@" 2>"$TMP/$name.err"; then
    pass=$((pass + 1))
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'ok   {sys.argv[2]:<22} out {r[\"msgs_out_per_s\"]:>9.0f}/s p99 {r[\"latency_us\"][\"p99\"]:>8.1f} us lost {r[\"delivery\"][\"lost\"]} dup {r[\"delivery\"][\"duplicates\"]} conn/s {r[\"connects_per_s\"]:.0f}')" "$TMP/$name.json" "$name"
  else
    fail=$((fail + 1))
    echo "FAIL $name: $(tail -3 "$TMP/$name.err" | tr '\n' ' ')"
  fi
}
# MQTT 3.1.1 has no Receive Maximum. Mosquitto completes the QoS 2 exchange (PUBREC, PUBCOMP) for
# publications beyond its max_inflight_messages (20) but does not deliver them (seen here with
# uringmq-load: "lost" with zero unacknowledged), so 3.1.1 QoS 2 publishers keep to 20.
for v in 3 5; do
  q2=(); [[ $v == 3 ]] && q2=(--max-unacked 20)
  # Mosquitto 2.0.11 drops outgoing QoS 1 messages ("Outgoing messages are being dropped") for a
  # 3.1.1 subscriber hit by 8 x 64 publications at once; 8 x 8 in flight stays clear of it.
  run "fan-in-q1-v$v" -s fan-in -c 8 -q 1 --max --inflight 8 --mqtt $v
  run "fan-out-q2-v$v" -s fan-out -c 20 -q 2 -r 5000 --mqtt $v "${q2[@]}"
  run "pairs-q0-v$v" -s pairs -c 8 -q 0 -r 20000 --mqtt $v
  run "pairs-q2-v$v" -s pairs -c 8 -q 2 --max --mqtt $v "${q2[@]}"
  run "shared-q1-v$v" -s shared -c 4 --pubs 2 -q 1 -r 5000 --mqtt $v
  run "wildcard-q1-v$v" -s wildcard -c 8 --pubs 2 -q 1 -r 5000 --mqtt $v
  run "connect-storm-v$v" -s connect-storm -c 16 --mqtt $v
  run "idle-v$v" -s idle -c 500 --mqtt $v --sources 4
done
run "procs-pairs-q1" -s pairs -c 8 -q 1 --max --procs 2 --sources 8
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
