"""Helpers of scripts/idle-ramp.sh (run, not imported): the kernel's socket memory, and the
table of a ramp.

  idle_ramp.py sockslab                      KiB in the slab caches every TCP socket takes
  idle_ramp.py fds PID                       descriptors process PID holds
  idle_ramp.py wait-sockets PID FDS TIMEOUT  once process PID holds FDS descriptors (it
                                             accepted every connection), print sockslab
  idle_ramp.py table OUT_DIR                 the markdown table of the runs in OUT_DIR
  idle_ramp.py summary OUT_DIR [LABEL]       the held figures side by side (BENCHMARKS.md rows)

Socket caches: each end of a loopback connection holds a `TCP` socket, its inode
(`sock_inode_cache`), a `filp` and an epoll item (`eventpoll_epi`) where a process waits on it
with epoll; whole slab pages are counted (what the kernel holds, not what the objects need).
Other work on the machine moves these caches less than the `Slab` total of /proc/meminfo
(builds fill `dentry` and `kmalloc-*`), but still (its files take `filp`, its tests sockets):
at 1,000 connections the figure is noise, at 10,000 and more it is steady. The sum leaves out
the socket's dentry (192 B) and small kmalloc pieces, so it is a floor.
"""

import glob
import json
import os
import statistics
import sys
import time

# --idle-sub: the filter each connection subscribes to.
SHAPES = {"own": "`.../idle/<i>/cmd`", "leaf": "`.../idle/<i>`", "none": "none", "shared": "`.../idle`"}
SOCKET_CACHES = ("TCP", "sock_inode_cache", "filp", "eventpoll_epi", "eventpoll_pwq")


def sockslab_kb():
    """KiB of whole slab pages in SOCKET_CACHES (0 if /proc/slabinfo is not readable)."""
    try:
        lines = open("/proc/slabinfo").read().splitlines()[2:]
    except OSError:
        return 0
    total = 0
    for line in lines:
        f = line.split()
        if f[0] in SOCKET_CACHES:
            # name active num objsize perslab pagesperslab : tunables ... : slabdata active num shared
            pages_per_slab, num_slabs = int(f[5]), int(f[f.index("slabdata") + 2])
            total += pages_per_slab * num_slabs * 4
    return total


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def wait_sockets(pid, want, timeout):
    """Wait until process `pid` holds `want` descriptors (the broker's end of every
    connection; other processes' sockets do not count); print the socket caches' KiB then, or
    nothing when it does not happen in time."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if fds(pid) >= want:
            # Let the last handshakes' buffers go before reading.
            time.sleep(0.5)
            print(sockslab_kb())
            return
        time.sleep(0.1)


def fmt(x):
    return f"{x:,.0f}"


def spread(xs):
    """Median, with min..max when there are several rounds; '-' without any figure."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return "-"
    med = fmt(statistics.median(xs))
    return med if len(xs) == 1 else f"{med} ({fmt(xs[0])}..{fmt(xs[-1])})"


def figures(meta, r):
    """One run's figures, per connection."""
    b = r.get("broker") or {}
    ok = r.get("connects_ok", 0)
    sock = meta["sock_held_kb"] - meta["sock_before_kb"]
    return {
        "ok": ok,
        "held": b.get("mem_per_conn_bytes"),
        "ready": b.get("mem_per_conn_ready_bytes"),
        "sock": sock * 1024 / ok if ok and meta["sock_held_kb"] else None,
        "kernel": (r.get("kernel") or {}).get("per_conn_bytes"),
        "cps": r.get("connects_per_s"),
        "load": float(meta["load"]),
    }


def runs_by_row(out):
    """(filter, mqtt, connections, broker) -> the figures of each round."""
    rows = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        meta_path = path[: -len(".json")] + ".meta"
        if not os.path.exists(meta_path):
            continue
        meta = json.load(open(meta_path))
        key = (meta["sub"], meta["mqtt"], meta["n"], meta["broker"])
        rows.setdefault(key, []).append(figures(meta, json.load(open(path))))
    return rows


def median_of(runs, name):
    xs = [f[name] for f in runs if f[name] is not None]
    return statistics.median(xs) if xs else None


def table(out):
    rows = runs_by_row(out)
    print(
        "| filter | MQTT | connections | broker | held B/conn | ready B/conn | vs Mosquitto "
        "(held) | B/conn added since the last step | kernel B/conn: socket caches "
        "| kernel B/conn: Slab + TCP buffers | connects/s | load avg |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    order = {"uringmq": 0, "mosquitto": 1}
    # (filter, mqtt, broker) -> (connections, RSS growth) of the step before: the slope
    # leaves out what the broker grows by once, whatever the count.
    last = {}
    for key in sorted(rows, key=lambda k: (k[0], k[1], k[2], order.get(k[3], 9))):
        sub, mqtt, n, broker = key
        runs = rows[key]
        peer = rows.get((sub, mqtt, n, "mosquitto"))
        ratio = ""
        if peer and broker != "mosquitto" and median_of(peer, "held"):
            ratio = f"{median_of(runs, 'held') / median_of(peer, 'held'):.2f}x"
        grown = (median_of(runs, "held") or 0) * n
        before = last.get((sub, mqtt, broker))
        slope = fmt((grown - before[1]) / (n - before[0])) if before else ""
        last[(sub, mqtt, broker)] = (n, grown)
        opened = min(f["ok"] for f in runs)
        conns = fmt(n) if opened == n else f"{fmt(opened)} of {fmt(n)}"
        col = lambda name: spread([f[name] for f in runs])
        loads = sorted({f"{f['load']:.0f}" for f in runs}, key=float)
        load = loads[0] if len(loads) == 1 else f"{loads[0]}-{loads[-1]}"
        print(
            f"| {SHAPES.get(sub, sub)} | {'5.0' if mqtt == 5 else '3.1.1'} | {conns} | {broker} "
            f"| {col('held')} | {col('ready')} | {ratio} | {slope} | {col('sock')} | {col('kernel')} "
            f"| {col('cps')} | {load} |"
        )


def summary(out, label):
    """The held figures side by side, one line per filter and step (medians): the rows of the
    condensed table in BENCHMARKS.md, labelled `label` (the build)."""
    rows = runs_by_row(out)
    held = {k: median_of(v, "held") for k, v in rows.items()}
    subs = sorted({k[0] for k in rows})
    versions = sorted({k[1] for k in rows})
    steps = sorted({k[2] for k in rows})

    def cells(sub, n, growth):
        out = []
        for v in versions:
            u, m = growth(sub, v, n, "uringmq"), growth(sub, v, n, "mosquitto")
            ratio = f"{u / m:.2f}x" if u and m else ""
            out += [fmt(u) if u else "-", fmt(m) if m else "-", ratio]
        return " | ".join(out)

    def per_conn(sub, v, n, b):
        return held.get((sub, v, n, b))

    def added(sub, v, _n, b):
        # RSS added per connection between the last two steps (what one more costs).
        a, z = steps[-2], steps[-1]
        if per_conn(sub, v, a, b) is None or per_conn(sub, v, z, b) is None:
            return None
        return (per_conn(sub, v, z, b) * z - per_conn(sub, v, a, b) * a) / (z - a)

    for sub in subs:
        for n in steps:
            print(f"| {label} | {SHAPES.get(sub, sub)} | {fmt(n)} | {cells(sub, n, per_conn)} |")
        if len(steps) > 1:
            what = f"added per connection, {fmt(steps[-2])} -> {fmt(steps[-1])}"
            print(f"| {label} | {SHAPES.get(sub, sub)} | {what} | {cells(sub, 0, added)} |")


def main():
    cmd = sys.argv[1]
    if cmd == "sockslab":
        print(sockslab_kb())
    elif cmd == "fds":
        print(fds(int(sys.argv[2])))
    elif cmd == "wait-sockets":
        wait_sockets(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "table":
        table(sys.argv[2])
    elif cmd == "summary":
        summary(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
    else:
        sys.exit(f"idle_ramp.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
