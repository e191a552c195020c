#!/usr/bin/env bash
# Network sysctls for many-connection benchmarks on loopback, with a way back.
#
#   scripts/sysctl-setup.sh apply          record current values, apply the benchmark values
#   scripts/sysctl-setup.sh restore        put the recorded values back
#   scripts/sysctl-setup.sh run CMD ARGS   apply, run CMD, restore on exit (also on Ctrl-C / error)
#   scripts/sysctl-setup.sh show           print current values
#
# Values are recorded in $URINGMQ_SYSCTL_STATE (default /tmp/uringmq-sysctl.saved); `apply` refuses
# to overwrite a record that was not restored yet, so the original values are never lost.
# Needs root (net.* sysctls are writable here; the 20,000 open-file cap per process is not).
set -euo pipefail

STATE=${URINGMQ_SYSCTL_STATE:-/tmp/uringmq-sysctl.saved}

# key=value pairs applied by `apply`.
WANT=(
  "net.ipv4.ip_local_port_range=1024 65535"   # ~64k client ports per (source, destination)
  "net.core.somaxconn=65535"                  # listen() backlog cap
  "net.ipv4.tcp_max_syn_backlog=65535"        # half-open connections during connect storms
  "net.core.netdev_max_backlog=65536"         # loopback packets queued per CPU
  "net.ipv4.tcp_mem=1572864 2097152 3145728"  # pages (4 KiB): 6/8/12 GiB before TCP memory pressure
  "net.ipv4.tcp_tw_reuse=1"                   # reuse TIME_WAIT ports for new outgoing connections
  "net.ipv4.tcp_syncookies=0"                 # cookies would hide backlog overflows in storms
)

keys() { for kv in "${WANT[@]}"; do echo "${kv%%=*}"; done; }

show() {
  for k in $(keys); do printf '%s = %s\n' "$k" "$(sysctl -n "$k" | tr '\t' ' ')"; done
}

apply() {
  if [[ -s $STATE ]]; then
    echo "sysctl-setup: $STATE exists: values from an earlier apply were not restored; run 'restore' first" >&2
    exit 1
  fi
  local tmp; tmp=$(mktemp)
  for k in $(keys); do printf '%s=%s\n' "$k" "$(sysctl -n "$k" | tr '\t' ' ')" >>"$tmp"; done
  mv "$tmp" "$STATE"
  for kv in "${WANT[@]}"; do
    if ! sysctl -q -w "$kv" >/dev/null 2>&1; then echo "sysctl-setup: could not set ${kv%%=*} (kept)" >&2; fi
  done
  echo "sysctl-setup: applied; old values in $STATE"
}

restore() {
  if [[ ! -s $STATE ]]; then echo "sysctl-setup: nothing to restore ($STATE missing)"; return 0; fi
  while IFS= read -r kv; do
    [[ -n $kv ]] && { sysctl -q -w "$kv" >/dev/null 2>&1 || echo "sysctl-setup: could not restore ${kv%%=*}" >&2; }
  done <"$STATE"
  rm -f "$STATE"
  echo "sysctl-setup: restored"
}

case "${1:-}" in
  apply) apply ;;
  restore) restore ;;
  show) show ;;
  run)
    shift
    [[ $# -gt 0 ]] || { echo "usage: $0 run CMD [ARGS...]" >&2; exit 2; }
    apply
    trap restore EXIT INT TERM
    "$@"
    ;;
  *) echo "usage: $0 apply|restore|show|run CMD [ARGS...]" >&2; exit 2 ;;
esac
