#!/usr/bin/env bash
# Cluster benchmarks (issue #19): a real etcd and three uringmq nodes (a, b, c) on loopback,
# each figure against a peer measured in the same run.
#
#   scripts/bench-cluster.sh [--duration 3s] [--rate 5000] [--lease-ttl 5] [--rounds 1]
#                            [--hop-runs 3] [--reps 30] [--out DIR]
#                            [--only throughput,hop,connect,takeover,kill]
#
#   throughput  closed loop (uringmq-load --max), fan-in (8 publishers, 1 subscriber) and
#               fan-out (1 publisher, 20 subscribers), QoS 0 and 1: publishers on node a,
#               subscribers on node b, against one node of 2 cores without [cluster] that
#               has them all (the same cores). Node CPU per delivered message from /proc (a+b),
#               and from a's /metrics the messages per write on the a->b link.
#   hop         open loop at --rate msg/s (10 publisher/subscriber pairs), QoS 0 and 1:
#               p50/p99 with both sides on node a, and with publishers on a, subscribers on b
#               (--hop-runs of each, alternating, medians: single runs are noisy here).
#   connect     CONNACKs/s and CONNACK latency of a connection storm on node a (with
#               [cluster]; CPU of a+b+c) and on a one-core node without it, and the writes
#               and requests etcd served meanwhile.
#   takeover    a persistent client (QoS 1 subscription) with 0 and 1,000 queued QoS 1
#               messages, its old connection closed or still open, connects again elsewhere:
#               ms from CONNECT sent to CONNACK (session present) and to the last queued
#               message, for a session on node a taken over on node b, against one on core 0
#               of one2 taken over on its core 1 (source addresses probed for the core the
#               SO_REUSEPORT hash gives them); --reps of each, alternating, p50/p90 (a
#               raw-socket Python client; ~30-60 s).
#   kill        a subscriber on node c, c killed with -9: time until a and b see the link
#               down and until they drop c's routes (/metrics polled every 10 ms), against
#               lease_ttl_secs.
#
# Each cluster node has one core (`--cores 1`, pin_cores off), the one-node peers 1 (one1)
# and 2 (one2); all brokers share CPU 0 (BROKER_CPUS) and the load generator and etcd get
# CPU 1 (LOAD_CPUS), so a cross-node path and the one-node path have the same CPU. Binaries: URINGMQ_BIN (default target/ci/uringmq, the `--profile ci`
# build), LOAD (default target/ci/uringmq-load), ETCD (default etcd, Debian's etcd-server).
# About 3 minutes with the defaults; loopback only; everything started is stopped on exit.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
HELPER="$ROOT/scripts/lib/cluster_bench.py"
URINGMQ_BIN=${URINGMQ_BIN:-$ROOT/target/ci/uringmq}
LOAD=${LOAD:-$ROOT/target/ci/uringmq-load}
ETCD=${ETCD:-etcd}
BROKER_CPUS=${BROKER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
[[ $(nproc) -lt 2 ]] && LOAD_CPUS=0
DURATION=3s
RATE=5000
TTL=5
ROUNDS=1
HOP_RUNS=3
REPS=30
ONLY=throughput,hop,connect,takeover,kill
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DURATION=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --lease-ttl) TTL=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --hop-runs) HOP_RUNS=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) echo "bench-cluster: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-$ROOT/target/bench-cluster/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
say() { echo "bench-cluster: $*" >&2; }
wanted() { [[ ,$ONLY, == *,$1,* ]]; }
NEED=("$URINGMQ_BIN")
wanted throughput || wanted hop || wanted connect && NEED+=("$LOAD")
for b in "${NEED[@]}"; do
  [[ -x $b ]] || { say "missing $b (cargo build --profile ci -p uringmq -p uringmq-bench)"; exit 1; }
done
command -v "$ETCD" >/dev/null || { say "missing $ETCD (Debian: apt-get install etcd-server)"; exit 1; }

# Several brokers run at once: scripts/lib/broker.sh starts and stops one at a time, so their
# pids are kept here (etcd's too).
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    BROKER_PID=$p
    broker_stop
  done
  PIDS=()
  rm -rf "$OUT/etcd-data"
}
trap cleanup EXIT INT TERM

ETCD_PORT=$(free_port)
ETCD_URL=http://127.0.0.1:$ETCD_PORT
start_etcd() {
  local peer=http://127.0.0.1:$(free_port)
  broker_start "$ETCD_PORT" "$OUT/etcd.log" taskset -c "$LOAD_CPUS" "$ETCD" --name bench \
    --data-dir "$OUT/etcd-data" --log-level error --logger zap \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "bench=$peer" || return 1
  PIDS+=("$BROKER_PID")
}

# The limits bench-compare.sh gives every broker (queues deep enough that closed loop never
# drops), no $SYS, one core not pinned (taskset places the process).
base_config() {
  cat <<EOF
pin_cores = false
max_inflight = 100
max_queued_messages = 100000
max_queued_bytes = 0
max_outbound_bytes = 16777216
sys_interval_secs = 0
metrics_listen = "127.0.0.1:$1"
EOF
}

declare -A PORT MPORT PID
start_node() { # name cores [cluster]
  local name=$1 cores=$2 conf="$OUT/$1.toml"
  PORT[$name]=$(free_port)
  MPORT[$name]=$(free_port)
  base_config "${MPORT[$name]}" >"$conf"
  if [[ ${3:-} == cluster ]]; then
    cat >>"$conf" <<EOF
[cluster]
name = "$name"
etcd = ["$ETCD_URL"]
prefix = "/bench-cluster"
port = 0
lease_ttl_secs = $TTL
secret = "bench-cluster-secret-0123456789"
EOF
  fi
  broker_start "${PORT[$name]} ${MPORT[$name]}" "$OUT/$name.log" taskset -c "$BROKER_CPUS" \
    "$URINGMQ_BIN" -c "$conf" --port "${PORT[$name]}" --cores "$cores" --log-level warn ||
    return 1
  PID[$name]=$BROKER_PID
  PIDS+=("$BROKER_PID")
}

say "etcd, nodes a b c (1 core each, [cluster]), one1 (1 core) and one2 (2 cores) without it"
start_etcd || { say "etcd did not start (see $OUT/etcd.log)"; exit 1; }
for n in a b c; do start_node "$n" 1 cluster || exit 1; done
start_node one1 1 || exit 1
start_node one2 2 || exit 1
for n in a b c one1 one2; do echo "$n pid ${PID[$n]} port ${PORT[$n]} metrics ${MPORT[$n]}"; done >"$OUT/nodes.txt"
python3 "$HELPER" wait-cluster --nodes 3 "${MPORT[a]}" "${MPORT[b]}" "${MPORT[c]}" ||
  { say "the cluster did not form (see $OUT/*.log)"; exit 1; }

run_load() { # label pub-node sub-node [uringmq-load options]
  local label=$1 pub=$2 sub=$3 pids=${PID[$2]}
  shift 3
  [[ $pub != "$sub" ]] && pids="$pids,${PID[$sub]}"
  pids="$pids${EXTRA_PIDS:+,$EXTRA_PIDS}"
  timeout 120 taskset -c "$LOAD_CPUS" "$LOAD" --port "${PORT[$pub]}" --sub-port "${PORT[$sub]}" \
    --mqtt 3 --duration "$DURATION" --drain 3s --settle 300ms --broker-pid "$pids" \
    --label "$label" --json "$OUT/$label.json" --quiet "$@" >>"$OUT/load.log" 2>&1 ||
    say "$label: the load run failed (see $OUT/load.log)"
}

# A cross-node run also keeps a's cluster counters before and after (messages per link write).
run_cross() { # label [uringmq-load options]
  local label=$1
  shift
  python3 "$HELPER" snap "${MPORT[a]}" >"$OUT/$label.before.json"
  run_load "$label" a b "$@"
  python3 "$HELPER" snap "${MPORT[a]}" >"$OUT/$label.after.json"
}

throughput() { # round
  local s q args
  for s in fan-in fan-out; do
    args=(-c 8)
    [[ $s == fan-out ]] && args=(-c 20)
    for q in 0 1; do
      say "throughput $s QoS $q, round $1"
      run_load "tp-$s-q$q-one-$1" one2 one2 -s "$s" "${args[@]}" -q "$q" --max
      run_cross "tp-$s-q$q-cross-$1" -s "$s" "${args[@]}" -q "$q" --max
    done
  done
}

hop() { # round
  local q i
  for q in 0 1; do
    say "hop latency QoS $q at $RATE msg/s, round $1"
    for i in $(seq "$HOP_RUNS"); do
      run_load "hop-q$q-same-$1.$i" a a -s pairs -c 10 -q "$q" --rate "$RATE"
      run_cross "hop-q$q-cross-$1.$i" -s pairs -c 10 -q "$q" --rate "$RATE"
    done
  done
}

# etcd's committed writes around each storm: a CONNECT that wrote to etcd would show here.
# On node a the CPU of all three nodes counts: a CONNECT asks its client id's owner node.
connect_rate() {
  local n others
  for n in one1 a; do
    say "connect storm on $n"
    others=""
    [[ $n == a ]] && others="${PID[b]},${PID[c]}"
    python3 "$HELPER" etcd "$ETCD_URL" >"$OUT/connect-$n.etcd-before.json"
    EXTRA_PIDS=$others run_load "connect-$n" "$n" "$n" -s connect-storm -c 64 --sources 8
    python3 "$HELPER" etcd "$ETCD_URL" >"$OUT/connect-$n.etcd-after.json"
  done
}

for r in $(seq "$ROUNDS"); do
  wanted throughput && throughput "$r"
  wanted hop && hop "$r"
done
wanted connect && connect_rate
if wanted takeover; then
  say "takeover: node a -> node b against core 0 -> core 1 of one2, $REPS repetitions each"
  taskset -c "$LOAD_CPUS" python3 "$HELPER" takeover --reps "$REPS" \
    --node-a "${PORT[a]}" "${MPORT[a]}" --node-b "${PORT[b]}" "${MPORT[b]}" \
    --core "${PORT[one2]}" "${MPORT[one2]}" >"$OUT/takeover.json" ||
    say "the takeover measurement failed"
fi
if wanted kill; then
  say "kill -9 of node c (lease_ttl_secs = $TTL)"
  # Out of the job table: bash would report the job killed by a signal.
  disown "${PID[c]}" 2>/dev/null
  python3 "$HELPER" kill --pid "${PID[c]}" --mqtt-port "${PORT[c]}" --peer c --ttl "$TTL" \
    a="${MPORT[a]}" b="${MPORT[b]}" >"$OUT/kill.json" || say "the kill measurement failed"
fi

{
  echo "# bench-cluster $(date -u +%FT%TZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)," \
    "URINGMQ_BIN=$URINGMQ_BIN, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 "$HELPER" table "$OUT" --ttl "$TTL" --rate "$RATE"
} | tee "$OUT/table.md"
say "reports in $OUT"
