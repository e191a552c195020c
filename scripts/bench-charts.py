#!/usr/bin/env python3
"""Draws the broker comparison as SVG bar charts: throughput, broker CPU per message, p99
latency and memory per idle connection, one bar per broker in each scenario.

    scripts/bench-charts.py RESULT_DIR [--out DIR]        # a bench-compare.sh result directory
    scripts/bench-charts.py --table BENCHMARKS.md [--out DIR]
                                                          # the first comparison table in a file

Reads the medians the way `scripts/bench-table.sh --md` does (it runs it on a result directory)
and writes `throughput.svg`, `cpu-per-message.svg`, `latency-p99.svg` and `memory-per-connection.svg`
(default: DIR/charts, or benches/charts for --table). Plain SVG written here: no plotting library
to install. Scales are logarithmic (the brokers differ by up to 25x); every bar carries its value.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
COLORS = {"uringmq": "#2b7bb9", "mosquitto": "#8a8a8a", "rumqttd": "#d9822b"}
# (file, title, figure in the table, unit, higher is better, scenarios it applies to)
CHARTS = [
    ("throughput.svg", "Messages delivered per second (closed loop)", "msgs/s out", "msg/s", True,
     lambda s: "-max" in s or s.startswith("payload")),
    ("cpu-per-message.svg", "Broker CPU per delivered message", "broker cpu us/msg out", "us", False,
     lambda s: not s.startswith(("idle", "connect"))),
    ("latency-p99.svg", "Latency p99", "latency p99 us", "us", False,
     lambda s: not s.startswith(("idle", "connect"))),
    ("memory-per-connection.svg", "Broker memory per idle connection", "mem/conn bytes", "bytes", False,
     lambda s: s.startswith("idle")),
]


def parse_md(text: str) -> tuple[list, dict]:
    """(brokers, {scenario: {figure: {broker: value}}}) from the first comparison table."""
    brokers: list = []
    data: dict = {}
    scen = None
    for line in text.splitlines():
        if line.startswith("| scenario | figure |"):
            if brokers:
                break
            cells = [c.strip() for c in line.strip("|").split("|")]
            brokers = [c for c in cells[2:] if "/" not in c]
            continue
        if not brokers or not line.startswith("|") or line.startswith("| ---"):
            if brokers and data and not line.startswith("|"):
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        scen = cells[0] or scen
        values = {}
        for b, c in zip(brokers, cells[2:2 + len(brokers)]):
            try:
                values[b] = float(c.replace(",", ""))
            except ValueError:
                pass
        data.setdefault(scen, {})[cells[1]] = values
    return brokers, data


def fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def chart(title: str, unit: str, higher: bool, rows: list, brokers: list) -> str:
    """One horizontal grouped bar chart; rows are (scenario, {broker: value})."""
    bar, gap, left, width, label_w = 14, 10, 170, 520, 90
    top = 56
    height = top + len(rows) * (len(brokers) * bar + gap) + 40
    vals = [v for _, d in rows for v in d.values() if v > 0]
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    span = math.log10(hi) - math.log10(lo) or 1

    def x(v: float) -> float:
        return left + width * (math.log10(max(v, lo)) - math.log10(lo)) / span

    better = "higher is better" if higher else "lower is better"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + label_w}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="10" y="38" fill="#555">{escape(unit)}, log scale, {better}</text>',
    ]
    decade = lo
    while decade <= hi:
        gx = x(decade)
        out.append(f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{height - 30}" stroke="#ddd"/>')
        out.append(f'<text x="{gx:.1f}" y="{height - 16}" text-anchor="middle" fill="#555">{fmt(decade)}</text>')
        decade *= 10
    y = top
    for scen, d in rows:
        out.append(f'<text x="{left - 8}" y="{y + len(brokers) * bar / 2 + 4:.1f}" text-anchor="end">{escape(scen)}</text>')
        for b in brokers:
            if b in d:
                w = x(d[b]) - left
                out.append(f'<rect x="{left}" y="{y}" width="{max(w, 1):.1f}" height="{bar - 2}" '
                           f'fill="{COLORS.get(b, "#444")}"><title>{escape(b)}: {fmt(d[b])}</title></rect>')
                out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 4}" font-size="11">{fmt(d[b])}</text>')
            y += bar
        y += gap
    lx = left
    for b in brokers:
        out.append(f'<rect x="{lx}" y="{top - 14}" width="10" height="10" fill="{COLORS.get(b, "#444")}"/>')
        out.append(f'<text x="{lx + 14}" y="{top - 5}">{escape(b)}</text>')
        lx += 14 + 8 * len(b) + 16
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("result_dir", nargs="?", help="a bench-compare.sh result directory")
    ap.add_argument("--table", help="read the first comparison table of this Markdown file instead")
    ap.add_argument("--out", help="output directory")
    args = ap.parse_args()
    if args.table:
        text = Path(args.table).read_text()
        out = Path(args.out or ROOT / "benches" / "charts")
    elif args.result_dir:
        text = subprocess.run([str(ROOT / "scripts" / "bench-table.sh"), "--md", args.result_dir],
                              check=True, capture_output=True, text=True).stdout
        out = Path(args.out or Path(args.result_dir) / "charts")
    else:
        ap.error("give a result directory or --table FILE")
    brokers, data = parse_md(text)
    if not data:
        print("bench-charts: no comparison table found", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for name, title, figure, unit, higher, wanted in CHARTS:
        rows = [(s, d[figure]) for s, d in data.items() if wanted(s) and d.get(figure)]
        if rows:
            (out / name).write_text(chart(title, unit, higher, rows, brokers))
            print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
