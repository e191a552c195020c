"""Helpers of scripts/bench-cluster.sh (run, not imported): read the nodes' /metrics and
etcd's, time a node's death as the others see it, and print the tables.

  cluster_bench.py wait-cluster --nodes N METRICS_PORT...   every node sees N nodes, links up
  cluster_bench.py snap METRICS_PORT                        the node's cluster counters (JSON)
  cluster_bench.py etcd URL                                 etcd's write/request counters (JSON)
  cluster_bench.py kill --pid P --mqtt-port M --peer NAME --ttl T NODE=METRICS_PORT...
  cluster_bench.py table OUT_DIR --ttl T --rate R
"""

import argparse
import glob
import http.client
import json
import os
import re
import signal
import socket
import statistics
import sys
import time

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def scrape(host, port, path="/metrics"):
    """{'name{labels}': value} of a Prometheus text page; {} if it cannot be read."""
    try:
        c = http.client.HTTPConnection(host, port, timeout=2)
        c.request("GET", path)
        text = c.getresponse().read().decode()
        c.close()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def node_metrics(port):
    return scrape("127.0.0.1", port)


def cluster_formed(port, nodes):
    m = node_metrics(port)
    ups = [v for k, v in m.items() if k.startswith("uringmq_cluster_link_up{")]
    return m.get("uringmq_cluster_nodes") == nodes and len(ups) == 2 * (nodes - 1) and all(ups)


def wait_cluster(a):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(cluster_formed(p, a.nodes) for p in a.ports):
            return 0
        time.sleep(0.1)
    print("the cluster did not form within 30 s", file=sys.stderr)
    return 1


def snap(a):
    m = node_metrics(a.port)
    json.dump({k: v for k, v in m.items() if k.startswith("uringmq_cluster_")}, sys.stdout)
    return 0


def etcd(a):
    """Committed raft proposals (every write) and unary gRPC calls by method."""
    host, port = a.url.removeprefix("http://").rsplit(":", 1)
    m = scrape(host, int(port))
    calls = {}
    for k, v in m.items():
        if k.startswith("grpc_server_started_total{") and 'grpc_type="unary"' in k:
            method = re.search(r'grpc_method="([^"]*)"', k).group(1)
            calls[method] = calls.get(method, 0) + v
    json.dump({"proposals": m.get("etcd_server_proposals_committed_total", 0),
               "calls": calls}, sys.stdout)
    return 0


def mqtt_subscriber(port, topic):
    """A 3.1.1 client subscribed to `topic` (QoS 0): the socket, kept open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    cid = b"bench-cluster-kill"
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    s.sendall(bytes([0x10, len(body)]) + body)
    assert s.recv(4)[:1] == b"\x20", "no CONNACK"
    t = topic.encode()
    body = b"\x00\x01" + len(t).to_bytes(2, "big") + t + b"\x00"
    s.sendall(bytes([0x82, len(body)]) + body)
    assert s.recv(5)[:1] == b"\x90", "no SUBACK"
    return s


def routes_of(m, peer):
    return m.get(f'uringmq_cluster_routes{{peer="{peer}"}}', 0)


def link_up(m, peer):
    return m.get(f'uringmq_cluster_link_up{{peer="{peer}",direction="outbound"}}', 0)


def kill(a):
    """kill -9 of the node, then the seconds until each watched node saw its link down and
    dropped its routes (the peer gone from the node's view: its routes leave every core)."""
    watch = dict(w.split("=") for w in a.nodes)
    sub = mqtt_subscriber(a.mqtt_port, "bench/kill/#")
    deadline = time.monotonic() + 10
    while not all(routes_of(node_metrics(p), a.peer) >= 1 for p in watch.values()):
        if time.monotonic() > deadline:
            print("the subscription on the node to kill never reached the others", file=sys.stderr)
            return 1
        time.sleep(0.02)
    os.kill(a.pid, signal.SIGKILL)
    t0 = time.monotonic()
    seen = {n: {} for n in watch}
    deadline = t0 + 3 * a.ttl + 10
    while time.monotonic() < deadline and any(len(s) < 2 for s in seen.values()):
        for n, p in watch.items():
            m = node_metrics(p)
            now = time.monotonic() - t0
            if m and not link_up(m, a.peer):
                seen[n].setdefault("link_down_s", now)
            if m and routes_of(m, a.peer) == 0:
                seen[n].setdefault("routes_dropped_s", now)
        time.sleep(0.01)
    sub.close()
    json.dump({"ttl": a.ttl, "nodes": seen}, sys.stdout)
    return 0


def load(out, pattern):
    runs = []
    for path in sorted(glob.glob(os.path.join(out, pattern))):
        if path.endswith((".before.json", ".after.json")) or ".etcd-" in path:
            continue
        with open(path) as f:
            runs.append((path, json.load(f)))
    return runs


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def us_per(d, count):
    b = d.get("broker")
    return b["cpu_pct"] / 100 / count * 1e6 if b and count else None


def link_batching(path):
    """Messages, and messages per write, on a's outbound link to b over one run."""
    base = path[: -len(".json")]
    try:
        with open(base + ".before.json") as f:
            before = json.load(f)
        with open(base + ".after.json") as f:
            after = json.load(f)
    except (OSError, ValueError):
        return None, None
    key = lambda n: f'uringmq_cluster_link_{n}{{peer="b",direction="outbound"}}'
    delta = lambda n: after.get(key(n), 0) - before.get(key(n), 0)
    msgs, writes = delta("messages_total"), delta("frames_sent_total")
    return msgs, (msgs / writes if writes else None)


def fmt(x, digits=0):
    return "n/a" if x is None or x != x else f"{x:,.{digits}f}"


def throughput_table(out):
    if not load(out, "tp-*.json"):
        return
    print("\n### Throughput: publishers on node a, subscribers on node b, vs one node of 2 cores\n")
    print("| scenario | QoS | one node msgs/s | a->b msgs/s | a->b / one | one node us/msg "
          "| a+b us/msg | a->b / one | msgs per link write | lost (one / a->b) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in ("fan-in", "fan-out"):
        for q in (0, 1):
            one = [d for _, d in load(out, f"tp-{s}-q{q}-one-*.json")]
            cross = load(out, f"tp-{s}-q{q}-cross-*.json")
            if not one or not cross:
                continue
            rate = lambda rs: med(d["msgs_out_per_s"] for d in rs)
            cost = lambda rs: med(us_per(d, d["msgs_out_per_s"]) for d in rs)
            lost = lambda rs: sum(d["delivery"]["lost"] for d in rs)
            cd = [d for _, d in cross]
            batch = med(link_batching(p)[1] for p, _ in cross)
            print(f"| {s} | {q} | {fmt(rate(one))} | {fmt(rate(cd))} | "
                  f"{fmt(rate(cd) / rate(one), 2)}x | {fmt(cost(one), 2)} | {fmt(cost(cd), 2)} | "
                  f"{fmt(cost(cd) / cost(one), 2)}x | {fmt(batch, 1)} | {lost(one)} / {lost(cd)} |")


def hop_table(out, rate):
    if not load(out, "hop-*.json"):
        return
    print(f"\n### Added latency of a hop: open loop at {rate:,} msg/s, 10 pairs, "
          "both on node a vs publishers on a and subscribers on b\n")
    print("| QoS | same node p50 us | p99 us | a->b p50 us | p99 us | added p50 us "
          "| added p99 us | msgs/s out (same / a->b) | lost |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for q in (0, 1):
        same = [d for _, d in load(out, f"hop-q{q}-same-*.json")]
        cross = [d for _, d in load(out, f"hop-q{q}-cross-*.json")]
        if not same or not cross:
            continue
        lat = lambda rs, k: med(d["latency_us"][k] for d in rs)
        rate_of = lambda rs: med(d["msgs_out_per_s"] for d in rs)
        lost = sum(d["delivery"]["lost"] for d in same + cross)
        print(f"| {q} | {fmt(lat(same, 'p50'))} | {fmt(lat(same, 'p99'))} | "
              f"{fmt(lat(cross, 'p50'))} | {fmt(lat(cross, 'p99'))} | "
              f"{fmt(lat(cross, 'p50') - lat(same, 'p50'))} | "
              f"{fmt(lat(cross, 'p99') - lat(same, 'p99'))} | "
              f"{fmt(rate_of(same))} / {fmt(rate_of(cross))} | {lost} |")


def etcd_delta(out, node):
    try:
        with open(os.path.join(out, f"connect-{node}.etcd-before.json")) as f:
            b = json.load(f)
        with open(os.path.join(out, f"connect-{node}.etcd-after.json")) as f:
            a = json.load(f)
    except (OSError, ValueError):
        return None, None
    calls = sum(a["calls"].values()) - sum(b["calls"].values())
    return a["proposals"] - b["proposals"], calls


def connect_table(out):
    rows = [(n, load(out, f"connect-{n}.json")) for n in ("one1", "a")]
    if not all(r for _, r in rows):
        return
    print("\n### Connect rate: a connection storm on one node, without and with [cluster]\n")
    print("| node | CONNACKs/s | CONNACK p50 us | p99 us | broker us/CONNACK "
          "| etcd writes committed | etcd requests |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    names = {"one1": "one node, no [cluster]", "a": "node a of the cluster (CPU: a+b+c)"}
    for n, runs in rows:
        d = runs[0][1]
        writes, calls = etcd_delta(out, n)
        lat = d["connect_latency_us"]
        print(f"| {names[n]} | {fmt(d['connects_per_s'])} | {fmt(lat['p50'])} | "
              f"{fmt(lat['p99'])} | {fmt(us_per(d, d['connects_per_s']), 2)} | {fmt(writes)} | "
              f"{fmt(calls)} |")


def kill_table(out, ttl):
    try:
        with open(os.path.join(out, "kill.json")) as f:
            k = json.load(f)
    except (OSError, ValueError):
        return
    print(f"\n### kill -9 of node c (a subscriber on it), lease_ttl_secs = {ttl}\n")
    print("| seen by | link down after s | c's routes dropped after s |")
    print("| --- | ---: | ---: |")
    for n, s in k["nodes"].items():
        print(f"| {n} | {fmt(s.get('link_down_s'), 2)} | {fmt(s.get('routes_dropped_s'), 2)} |")


def table(a):
    throughput_table(a.out)
    hop_table(a.out, a.rate)
    connect_table(a.out)
    kill_table(a.out, a.ttl)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait-cluster")
    w.add_argument("--nodes", type=int, required=True)
    w.add_argument("ports", type=int, nargs="+")
    sub.add_parser("snap").add_argument("port", type=int)
    sub.add_parser("etcd").add_argument("url")
    k = sub.add_parser("kill")
    k.add_argument("--pid", type=int, required=True)
    k.add_argument("--mqtt-port", type=int, required=True)
    k.add_argument("--peer", required=True)
    k.add_argument("--ttl", type=float, required=True)
    k.add_argument("nodes", nargs="+")
    t = sub.add_parser("table")
    t.add_argument("out")
    t.add_argument("--ttl", type=float, required=True)
    t.add_argument("--rate", type=int, required=True)
    a = p.parse_args()
    return {"wait-cluster": wait_cluster, "snap": snap, "etcd": etcd, "kill": kill,
            "table": table}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
