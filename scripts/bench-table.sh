#!/usr/bin/env bash
# Prints the comparison table of a bench-compare.sh result directory:
#   scripts/bench-table.sh [--md] DIR
# --md: the condensed Markdown table of BENCHMARKS.md (medians of the key figures and ratios).
# Reads DIR/<scenario>.<broker>.r<round>.json (uringmq-load --json) and prints, per scenario and
# figure, each broker's median and spread (min..max) over the rounds, and uringmq/peer.
set -euo pipefail
MD=0
[[ ${1:-} == --md ]] && { MD=1; shift; }
[[ $# == 1 && -d $1 ]] || { echo "usage: $0 [--md] RESULT_DIR" >&2; exit 2; }
exec python3 - "$1" "$MD" <<'PY'
import json, os, re, statistics, sys
d = sys.argv[1]
md = sys.argv[2] == "1"
runs = {}  # scenario -> broker -> [report]
order = []
for f in sorted(os.listdir(d)):
    m = re.match(r"(.+)\.([a-z0-9_-]+)\.r(\d+)\.json$", f)
    if not m:
        continue
    scen, broker = m.group(1), m.group(2)
    try:
        rep = json.load(open(os.path.join(d, f)))
    except (OSError, ValueError):
        continue
    if scen not in runs:
        order.append(scen)
    runs.setdefault(scen, {}).setdefault(broker, []).append(rep)

def lat(key):
    return lambda r: r["latency_us"][key]

def cpu(r):
    return (r.get("broker") or {}).get("cpu_pct", 0.0)

def loadgen(r):
    return r.get("loadgen_cpu_pct", 0.0)

def per(count):
    # Broker CPU time per unit (us): steadier than rates when the load generator, on its one
    # CPU, is what saturates first.
    def f(r):
        n = count(r)
        return cpu(r) / 100 / n * 1e6 if n else 0.0
    return f

def memconn(r):
    return (r.get("broker") or {}).get("mem_per_conn_bytes", 0.0)

FIGS = {
    "default": [("msgs/s out", lambda r: r["msgs_out_per_s"], True),
                ("latency p50 us", lat("p50"), False),
                ("latency p99 us", lat("p99"), False),
                ("latency p99.9 us", lat("p999"), False),
                ("broker cpu %", cpu, None),
                ("broker cpu us/msg out", per(lambda r: r["msgs_out_per_s"]), False),
                ("loadgen cpu %", loadgen, None),
                ("lost", lambda r: r["delivery"]["lost"], False),
                ("duplicates", lambda r: r["delivery"]["duplicates"], False)],
    "connect-storm": [("connects/s", lambda r: r["connects_per_s"], True),
                      ("CONNACK p99 us", lambda r: r["connect_latency_us"]["p99"], False),
                      ("failed", lambda r: r["connects_failed"], False),
                      ("broker cpu %", cpu, None),
                      ("broker cpu us/CONNACK", per(lambda r: r["connects_per_s"]), False),
                      ("loadgen cpu %", loadgen, None)],
    "idle": [("mem/conn bytes", memconn, False),
             ("connects/s", lambda r: r["connects_per_s"], True),
             ("connected", lambda r: r["connects_ok"], True)],
}
NOTES = {"mosquitto": "mosquitto (1 thread)"}

def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"

KEY = {"msgs/s out", "latency p99 us", "broker cpu us/msg out", "lost", "connects/s",
       "broker cpu us/CONNACK", "loadgen cpu %", "mem/conn bytes"}

if md:
    names = sorted({b for s in runs.values() for b in s}, key=lambda b: (b != "uringmq", b))
    peers = [b for b in names if b != "uringmq"]
    print("| scenario | figure | " + " | ".join(names) + " | "
          + " | ".join(f"uringmq/{p}" for p in peers) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names + peers) + " |")
    for scen in order:
        kind = "connect-storm" if scen.startswith("connect-storm") else "idle" if scen.startswith("idle") else "default"
        first = True
        for label, get, _ in FIGS[kind]:
            if label not in KEY:
                continue
            med = {b: statistics.median([get(r) for r in runs[scen][b]]) for b in names if b in runs[scen]}
            if label == "lost" and not any(med.values()):
                continue
            cells = [fmt(med[b]) if b in med else "-" for b in names]
            ratios = [f"{med['uringmq'] / med[p]:.2f}x" if "uringmq" in med and med.get(p) else "-" for p in peers]
            print(f"| {scen if first else ''} | {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
            first = False
    sys.exit(0)

for scen in order:
    kind = "connect-storm" if scen.startswith("connect-storm") else "idle" if scen.startswith("idle") else "default"
    brokers = sorted(runs[scen], key=lambda b: (b != "uringmq", b))
    any_rep = runs[scen][brokers[0]][0]
    print(f"\n== {scen}: MQTT {any_rep['mqtt']} QoS {any_rep['qos']}, {any_rep['payload']} B, "
          f"{any_rep['pubs']} pubs / {any_rep['subs']} subs / {any_rep['conns']} conns")
    peers = [b for b in brokers if b != "uringmq"]
    head = ["figure"] + [NOTES.get(b, b) + " median [min..max]" for b in brokers]
    if "uringmq" in brokers:
        head += [f"uringmq/{p}" for p in peers]
    rows = [head]
    for label, get, higher_better in FIGS[kind]:
        row = [label]
        med = {}
        for b in brokers:
            vals = [get(r) for r in runs[scen][b]]
            med[b] = statistics.median(vals)
            row.append(f"{fmt(med[b])} [{fmt(min(vals))}..{fmt(max(vals))}] n={len(vals)}")
        if "uringmq" in brokers:
            for p in peers:
                row.append(f"{med['uringmq'] / med[p]:.2f}x" if med[p] else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)))
skipped = os.path.join(d, "skipped.txt")
if os.path.exists(skipped):
    print("\nskipped: " + "; ".join(l.strip() for l in open(skipped) if l.strip()))
print("\nmosquitto is single-threaded: it uses one of the broker CPUs whatever their number.")
PY
