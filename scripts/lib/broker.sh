# Starting and stopping the broker under test, for the benchmark scripts (sourced, not run):
# refuse a port something else listens on (it would be measured in the broker's place), start
# the broker in the background, wait until its ports accept connections, and stop it again.
#
#   source "$ROOT/scripts/lib/broker.sh"
#   broker_start "PORT [PORT...]" LOG CMD...  # sets BROKER_PID; status 1 if it does not listen
#   broker_stop                               # TERM, KILL after 5 s; harmless when none runs
#
# CMD may start with `taskset -c CPUS`: taskset execs the broker, so BROKER_PID is the broker's
# (uringmq-load --broker-pid measures it).

BROKER_PID=""

# A loopback port free right now (the kernel's pick), for a server started next.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Whether something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether every port of the list $1 accepts connections.
ports_open() {
  local p
  for p in $1; do port_open "$p" || return 1; done
}

broker_start() {
  local ports=$1 log=$2 p
  shift 2
  for p in $ports; do
    if port_open "$p"; then
      echo "port $p is already in use: not starting the broker" >&2
      return 1
    fi
  done
  "$@" >>"$log" 2>&1 &
  BROKER_PID=$!
  # Up to 5 s: a broker that has not bound its listeners by then is not coming up.
  for _ in $(seq 100); do
    kill -0 "$BROKER_PID" 2>/dev/null || break
    ports_open "$ports" && return 0
    sleep 0.05
  done
  echo "$* did not start listening on $ports (see $log)" >&2
  broker_stop
  return 1
}

broker_stop() {
  [[ -n $BROKER_PID ]] || return 0
  # `|| true`: the scripts run with `set -e`, and a broker that is gone already is fine.
  kill "$BROKER_PID" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
  return 0
}
