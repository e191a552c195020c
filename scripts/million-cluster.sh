#!/usr/bin/env bash
# A million connections through a uringmq cluster on this one box (issue #19).
#
#   scripts/million-cluster.sh [--target N] [--nodes N] [--per-node N] [--hold 60s] [--mqtt 3|5]
#                              [--idle-sub own|shared|none] [--rate MSGS_PER_S] [--ttl SECS]
#
# One process here may hold at most ~20,000 open files (ulimit -Hn; root cannot raise it), so
# one broker process cannot hold a million connections: this starts etcd (temporary directory,
# free ports) and as many one-core uringmq nodes as the target needs (--per-node connections
# each, default 18,500), waits until every node has a link to every other, then runs
# uringmq-load with one worker process per node. Worker i holds its share of idle connections
# on node i (keep-alive 60 s, one subscription each: a topic of its own by default) and one
# publisher on node i+1 whose messages (a trickle, --rate in all) cross to a subscriber on node
# i, so every message crosses between nodes and is counted.
#
# Reports: connections reached and the time to connect them all; broker memory per connection
# (the nodes' RSS added up, minus the sum before connecting, at the end of the hold); kernel
# memory per connection (Slab and TCP buffers, both ends of each loopback connection); messages
# published, received and lost. Network sysctls are raised for the run and restored
# (scripts/sysctl-setup.sh). Binaries: $URINGMQ and $LOAD if set, else built here with
# --profile $PROFILE (default ci). Heavy: it loads the whole machine; not for CI.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PROFILE=${PROFILE:-ci}
GOAL=1000000
NODES=""
PER_NODE=18500
HOLD=60s
MQTT=3
IDLE_SUB=own
RATE=""
TTL=15
BASE_PORT=${BASE_PORT:-19000}
usage="usage: $0 [--target N] [--nodes N] [--per-node N] [--hold 60s] [--mqtt 3|5] [--idle-sub own|shared|none] [--rate R] [--ttl S]"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --target) GOAL=$2; shift ;;
    --nodes) NODES=$2; shift ;;
    --per-node) PER_NODE=$2; shift ;;
    --hold) HOLD=$2; shift ;;
    --mqtt) MQTT=$2; shift ;;
    --idle-sub) IDLE_SUB=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --ttl) TTL=$2; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $NODES ]] || NODES=$(( (GOAL + PER_NODE - 1) / PER_NODE ))
(( NODES >= 2 )) || NODES=2
# One message per second per publisher (one publisher per node) unless told otherwise.
[[ -n $RATE ]] || RATE=$NODES
CAP=$(ulimit -Hn)
# A node also holds two links per other node, its listeners, io_uring, etcd and log files.
NODE_MAX=$(( CAP - 2 * NODES - 200 ))
if (( (GOAL + NODES - 1) / NODES + 1 > NODE_MAX )); then
  echo "million-cluster: $GOAL connections over $NODES nodes exceed $NODE_MAX per node" \
    "(open-file cap $CAP): add --nodes" >&2
  exit 2
fi

if [[ -z ${URINGMQ:-} || -z ${LOAD:-} ]]; then
  (cd "$ROOT" && cargo build -q --profile "$PROFILE" -p uringmq --bin uringmq \
    -p uringmq-bench --bin uringmq-load) || exit 1
fi
URINGMQ=${URINGMQ:-$TARGET_DIR/$PROFILE/uringmq}
LOAD=${LOAD:-$TARGET_DIR/$PROFILE/uringmq-load}
command -v etcd >/dev/null || { echo "million-cluster: etcd not found (Debian: etcd-server)" >&2; exit 1; }

TMP=$(mktemp -d)
PIDS=()
ETCD_PID=""
stop_all() {
  local p live
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  # Up to 10 s for all of them together (55 nodes one after the other took minutes).
  for _ in $(seq 100); do
    live=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && live=1 && break; done
    (( live )) || break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  PIDS=()
  [[ -n $ETCD_PID ]] && { kill "$ETCD_PID" 2>/dev/null; wait "$ETCD_PID" 2>/dev/null; }
  ETCD_PID=""
}
finish() {
  stop_all
  sysctl -q -w "net.ipv4.ip_local_reserved_ports=$RESERVED_BEFORE"
  "$ROOT/scripts/sysctl-setup.sh" restore
  if [[ -n ${KEEP_TMP:-} ]]; then echo "million-cluster: logs kept in $TMP"; else rm -rf "$TMP"; fi
}
"$ROOT/scripts/sysctl-setup.sh" apply || exit 1
# The nodes' ports, kept out of the ephemeral range: links dialed while nodes still start
# would otherwise take a later node's port.
RESERVED_BEFORE=$(sysctl -n net.ipv4.ip_local_reserved_ports)
last=$(( BASE_PORT + NODES - 1 ))
sysctl -q -w "net.ipv4.ip_local_reserved_ports=$BASE_PORT-$last,$(( BASE_PORT + 1000 ))-$(( last + 1000 )),$(( BASE_PORT + 2000 ))-$(( last + 2000 ))${RESERVED_BEFORE:+,$RESERVED_BEFORE}"
trap finish EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_etcd() {
  local client peer
  client=$(free_port); peer=$(free_port)
  ETCD_URL="http://127.0.0.1:$client"
  # No fsync: the data directory is thrown away; etcd is on the control path only.
  etcd --name default --data-dir "$TMP/etcd" --listen-client-urls "$ETCD_URL" \
    --advertise-client-urls "$ETCD_URL" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "default=http://127.0.0.1:$peer" --unsafe-no-fsync \
    --log-level warn >"$TMP/etcd.log" 2>&1 &
  ETCD_PID=$!
  for _ in $(seq 200); do
    port_open "$client" && return 0
    sleep 0.1
  done
  echo "million-cluster: etcd did not start (see $TMP/etcd.log)" >&2
  return 1
}

# Node i: MQTT on BASE_PORT+i, /metrics on BASE_PORT+1000+i, links on BASE_PORT+2000+i (all
# chosen here: a port 0 of one node could take another's).
start_nodes() {
  local i port
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
  for (( i = 0; i < NODES; i++ )); do
    for port in $(( BASE_PORT + i )) $(( BASE_PORT + 1000 + i )) $(( BASE_PORT + 2000 + i )); do
      port_open "$port" && { echo "million-cluster: port $port in use (set BASE_PORT)" >&2; return 1; }
    done
  done
  for (( i = 0; i < NODES; i++ )); do
    port=$(( BASE_PORT + i ))
    cat >"$TMP/node$i.toml" <<EOF
bind = "127.0.0.1"
port = $port
cores = 1
pin_cores = false
log_level = "warn,uringmq::cluster=info"
metrics_listen = "127.0.0.1:$(( port + 1000 ))"
[cluster]
name = "n$i"
etcd = ["$ETCD_URL"]
prefix = "/million"
port = $(( port + 2000 ))
lease_ttl_secs = $TTL
secret_file = "$TMP/secret"
EOF
    "$URINGMQ" -c "$TMP/node$i.toml" >"$TMP/node$i.log" 2>&1 &
    PIDS+=($!)
  done
  for (( i = 0; i < NODES; i++ )); do
    for _ in $(seq 200); do port_open $(( BASE_PORT + i )) && break; sleep 0.05; done
    port_open $(( BASE_PORT + i )) || { echo "million-cluster: node $i did not start (see $TMP/node$i.log)" >&2; return 1; }
  done
}

# Links up on node i (outbound and inbound), from its /metrics.
links_up() {
  curl -s "http://127.0.0.1:$(( BASE_PORT + 1000 + $1 ))/metrics" |
    awk '/^uringmq_cluster_link_up\{/ { n += $NF } END { print n + 0 }'
}

# Until every node has both links with every other node (up to 10 minutes).
wait_mesh() {
  local want=$(( 2 * (NODES - 1) )) i up t0=$SECONDS
  while (( SECONDS - t0 < 600 )); do
    up=0
    for (( i = 0; i < NODES; i++ )); do (( $(links_up "$i") == want )) && up=$(( up + 1 )); done
    (( up == NODES )) && { echo "million-cluster: full mesh after $(( SECONDS - t0 )) s"; return 0; }
    sleep 2
  done
  echo "million-cluster: only $up of $NODES nodes have all $want links after 10 min" >&2
  return 1
}

echo "million-cluster: $GOAL connections over $NODES nodes (open-file cap $CAP), idle-sub $IDLE_SUB," \
  "trickle $RATE msg/s, hold $HOLD, MQTT $MQTT, lease TTL ${TTL}s"
echo "million-cluster: machine before: $(free -m | awk '/Mem:/ {print $3 " MiB used, " $7 " MiB available"}')," \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"
start_etcd || exit 1
t0=$SECONDS
start_nodes || exit 1
echo "million-cluster: $NODES nodes listening after $(( SECONDS - t0 )) s"
wait_mesh || exit 1
sleep 2
PIDLIST=$(IFS=,; echo "${PIDS[*]}")
procs=$NODES
timeout 3600 "$LOAD" --ports "$BASE_PORT-$(( BASE_PORT + NODES - 1 ))" -s idle -c "$GOAL" \
  --idle-sub "$IDLE_SUB" --pubs "$NODES" --rate "$RATE" --procs "$procs" --sources 80 \
  --mqtt "$MQTT" --keepalive 60 -d "$HOLD" --drain 10s --connect-timeout 120s \
  --broker-pid "$PIDLIST" --label "uringmq x$NODES" --json "$TMP/run.json" 2>>"$TMP/load.err"
status=$?
tail -5 "$TMP/load.err" >&2
alive=0
for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=$(( alive + 1 )); done
echo "million-cluster: load generator exit $status; nodes still running: $alive of $NODES"
python3 - "$TMP/run.json" "$GOAL" <<'PY' || echo "million-cluster: no report (see $TMP/load.err)"
import json, sys
r = json.load(open(sys.argv[1]))
b, k, d = r.get("broker") or {}, r.get("kernel") or {}, r["delivery"]
ok = r["connects_ok"]
secs = ok / r["connects_per_s"] if r["connects_per_s"] else 0
print(f"connections       {ok} of {r['conns']} ({r['connects_failed']} failed, {r['dropped']} dropped by a node)")
print(f"time to connect   {secs:.0f} s ({r['connects_per_s']:.0f} connections/s)")
print(f"broker memory     {b.get('mem_per_conn_bytes', 0):.0f} B/conn at the end of the hold "
      f"({b.get('mem_per_conn_ready_bytes', 0):.0f} after connecting); "
      f"RSS of {b.get('processes', 0)} nodes {b.get('rss_before_kb', 0) // 1024} -> "
      f"{b.get('rss_end_kb', 0) // 1024} MiB")
if k:
    print(f"kernel memory     {k['per_conn_bytes']:.0f} B/conn (Slab {k['before']['slab_kb'] // 1024} -> "
          f"{k['held']['slab_kb'] // 1024} MiB, TCP buffers {k['before']['tcp_mem_pages']} -> "
          f"{k['held']['tcp_mem_pages']} pages); machine {k['machine_per_conn_bytes']:.0f} B/conn "
          f"(every process and the kernel)")
print(f"messages          published {r['published']}, received {r['received']}, lost {d['lost']}, "
      f"duplicates {d['duplicates']}, misrouted {d['unexpected']}; "
      f"p99 {r['latency_us']['p99'] / 1000:.1f} ms")
PY
echo "million-cluster: load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
