"""Helpers of scripts/bench-cluster.sh (run, not imported): read the nodes' /metrics and
etcd's, time a node's death as the others see it, and print the tables.

  cluster_bench.py wait-cluster --nodes N METRICS_PORT...   every node sees N nodes, links up
  cluster_bench.py snap METRICS_PORT                        the node's cluster counters (JSON)
  cluster_bench.py etcd URL                                 etcd's write/request counters (JSON)
  cluster_bench.py kill --pid P --mqtt-port M --peer NAME --ttl T NODE=METRICS_PORT...
  cluster_bench.py takeover --node-a PORT METRICS --node-b PORT METRICS --core PORT METRICS
                           [--reps 30] [--queued 0,1000]
  cluster_bench.py table OUT_DIR --ttl T --rate R
"""

import argparse
import glob
import http.client
import itertools
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import struct
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


# --- takeover: a persistent session moved to another node, or to another core of one node ---

def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def mstr(s):
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def connect_packet(cid, clean):
    return packet(0x10, mstr("MQTT") + bytes([4, 0x02 if clean else 0x00]) + b"\x00\x3c"
                  + mstr(cid))


def publish_packet(topic, pid, payload):
    return packet(0x32, mstr(topic) + pid.to_bytes(2, "big") + payload)


class Client:
    """A raw MQTT 3.1.1 client on one socket (QoS 1 only); closed with a reset so that a
    chosen source port leaves no TIME_WAIT behind."""

    def __init__(self, port, src=None):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if src:
            s.bind(src)
        s.settimeout(20)
        s.connect(("127.0.0.1", port))
        self.s, self.buf = s, bytearray()

    def packets(self):
        """The packets read by one recv: [(first byte, body)]."""
        while True:
            out = []
            while len(self.buf) >= 2:
                n, mul, i = 0, 1, 1
                while i < len(self.buf) and self.buf[i] & 0x80:
                    n, mul, i = n + (self.buf[i] & 0x7F) * mul, mul * 128, i + 1
                if i >= len(self.buf):
                    break
                n += self.buf[i] * mul
                if len(self.buf) < i + 1 + n:
                    break
                out.append((self.buf[0], bytes(self.buf[i + 1:i + 1 + n])))
                del self.buf[:i + 1 + n]
            if out:
                return out
            data = self.s.recv(1 << 16)
            if not data:
                raise ConnectionError("closed by the broker")
            self.buf += data

    def expect(self, kind):
        p = self.packets()
        assert p[0][0] >> 4 == kind, f"expected packet type {kind}, got {p[0][0] >> 4}"
        self.buf[:0] = b"".join(bytes([f]) + varint(len(b)) + b for f, b in p[1:])
        return p[0][1]

    def connect(self, cid, clean):
        self.s.sendall(connect_packet(cid, clean))
        ack = self.expect(2)
        assert ack[1] == 0, f"CONNACK return code {ack[1]}"
        return ack[0] & 1

    def subscribe(self, topic):
        self.s.sendall(packet(0x82, b"\x00\x01" + mstr(topic) + b"\x01"))
        self.expect(9)

    def publish(self, topic, n):
        """n QoS 1 messages (payload: their index), then every PUBACK."""
        self.s.sendall(b"".join(publish_packet(topic, i + 1, b"%d" % i) for i in range(n)))
        acked = 0
        while acked < n:
            acked += sum(1 for f, _ in self.packets() if f >> 4 == 4)

    def receive(self, n):
        """Until messages 0..n-1 are all in (each acknowledged; a resent one counts once)."""
        seen = set()
        while len(seen) < n:
            acks = []
            for f, body in self.packets():
                if f >> 4 != 3:
                    continue
                tl = int.from_bytes(body[:2], "big")
                acks.append(b"\x40\x02" + body[2 + tl:4 + tl])
                seen.add(int(body[4 + tl:]))
            self.s.sendall(b"".join(acks))

    def close(self, disconnect=True):
        try:
            if disconnect:
                self.s.sendall(b"\xe0\x00")
        except OSError:
            pass
        self.s.close()


def queued(port):
    """Messages a node holds for sessions: queued plus in flight, all cores."""
    m = node_metrics(port)
    return sum(v for k, v in m.items()
               if k.startswith(("uringmq_queued_messages{", "uringmq_inflight_messages{")))


def wait_for(what, cond, secs=20):
    deadline = time.monotonic() + secs
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


def accepted_by_core(port):
    m = node_metrics(port)
    return {re.search(r'core="(\d+)"', k).group(1): v for k, v in m.items()
            if k.startswith("uringmq_accepted_sockets_total{")}


class CorePorts:
    """Source addresses whose connections the kernel's SO_REUSEPORT hash gives to each core of
    a 2-core node: the hash of the 4-tuple is fixed while the listeners are, so each probe
    connects from one address and sees which core's accept count moved. The addresses are on a
    loopback IP of this run's own (other tests may hold any port of 127.0.0.1) and are used in
    turn: each connection ends with a reset, which leaves no TIME_WAIT on either side."""

    def __init__(self, mqtt_port, metrics_port, per_core):
        rng = random.Random()
        self.ip = "127.%d.%d.%d" % (rng.randrange(100, 250), rng.randrange(256),
                                    rng.randrange(1, 255))
        self.port, self.pool = mqtt_port, {"0": [], "1": []}
        before = accepted_by_core(metrics_port)
        while min(len(v) for v in self.pool.values()) < per_core:
            src = (self.ip, rng.randrange(20000, 60000))
            try:
                c = Client(mqtt_port, src)
            except OSError:
                continue
            deadline = time.monotonic() + 5
            while sum((after := accepted_by_core(metrics_port)).values()) <= sum(before.values()):
                if time.monotonic() > deadline:
                    raise TimeoutError("a probe connection was not accepted")
                time.sleep(0.002)
            core = next(k for k in after if after[k] > before.get(k, 0))
            before = after
            c.close(disconnect=False)
            if src not in self.pool[core]:
                self.pool[core].append(src)
        self.turn = {k: itertools.cycle(v) for k, v in self.pool.items()}

    def client(self, core):
        """A connection that lands on `core` (an address still busy is skipped)."""
        for _ in range(len(self.pool[core])):
            try:
                return Client(self.port, next(self.turn[core]))
            except OSError as e:
                err = e
        raise err


IDS = itertools.count()


def one_takeover(t, n, connected):
    """One client id: a persistent session with a QoS 1 subscription on the old side (from
    t['old_client']), n messages queued for it (offline, or connected and not reading), then a
    CONNECT on the new side. Seconds from CONNECT sent to CONNACK (session present) and to the
    last queued message."""
    cid = "tko-%d-%d" % (os.getpid(), next(IDS))
    topic = "bench/takeover/" + cid
    old = t["old_client"]()
    old.connect(cid, False)
    old.subscribe(topic)
    if not connected:
        old.close()
        wait_for("old connection gone", lambda: not t["online"]())
    base = queued(t["metrics"])
    pub = Client(t["old"])
    pub.connect(cid + "-pub", True)
    pub.publish(topic, n)
    pub.close()
    wait_for("messages queued", lambda: queued(t["metrics"]) >= base + n)
    new = t["new_client"]()
    t0 = time.perf_counter()
    present = new.connect(cid, False)
    t1 = time.perf_counter()
    new.receive(n)
    t2 = time.perf_counter()
    new.close()
    if connected:
        old.close(disconnect=False)
    assert present, "CONNACK without session present"
    return t1 - t0, (t2 - t0 if n else None)


def takeover(a):
    """Alternating repetitions of each case (queued n x offline/connected) on both paths: a
    session on node a taken over on node b, and one on core 0 of a 2-core node taken over on
    its core 1 (source addresses chosen by CorePorts)."""
    cores = CorePorts(a.core[0], a.core[1], 16)
    online = lambda m: lambda: sum(v for k, v in node_metrics(m).items()
                                   if k.startswith("uringmq_connections{"))
    cross_node = {"old": a.node_a[0], "metrics": a.node_a[1], "online": online(a.node_a[1]),
                  "old_client": lambda: Client(a.node_a[0]),
                  "new_client": lambda: Client(a.node_b[0])}
    cross_core = {"old": a.core[0], "metrics": a.core[1], "online": online(a.core[1]),
                  "old_client": lambda: cores.client("0"), "new_client": lambda: cores.client("1")}
    results = []
    for n in a.queued:
        for connected in (False, True):
            case = {"queued": n, "connected": connected, "node": [], "core": [], "failed": []}
            for rep in range(a.reps + 1):  # the first of each is a warm-up
                for path, t in (("node", cross_node), ("core", cross_core)):
                    try:
                        r = one_takeover(t, n, connected)
                    except (OSError, AssertionError) as e:
                        case["failed"].append(f"{path}: {e!r}")
                        continue
                    if rep:
                        case[path].append(r)
            results.append(case)
            print(f"takeover: queued {n}, {'connected' if connected else 'offline'}: done",
                  file=sys.stderr)
    json.dump({"reps": a.reps, "cases": results}, sys.stdout)
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


def p90(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[math.ceil(0.9 * len(xs)) - 1] if xs else float("nan")


def takeover_table(out):
    try:
        with open(os.path.join(out, "takeover.json")) as f:
            t = json.load(f)
    except (OSError, ValueError):
        return
    print(f"\n### Takeover of a persistent session: node a -> node b (cluster) vs core 0 -> "
          f"core 1 (one 2-core node), {t['reps']} repetitions, ms\n")
    print("| old connection | queued QoS 1 | path | CONNACK p50 | p90 | last message p50 | p90 "
          "| failed |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for c in t["cases"]:
        for path, name in (("node", "a -> b"), ("core", "core 0 -> 1")):
            ack = [r[0] * 1e3 for r in c[path]]
            last = [r[1] * 1e3 if r[1] is not None else None for r in c[path]]
            print(f"| {'open' if c['connected'] else 'closed'} | {c['queued']:,} | {name} | "
                  f"{fmt(med(ack), 2)} | {fmt(p90(ack), 2)} | {fmt(med(last), 2)} | "
                  f"{fmt(p90(last), 2)} | {sum(f.startswith(path) for f in c['failed'])} |")


def table(a):
    throughput_table(a.out)
    hop_table(a.out, a.rate)
    connect_table(a.out)
    kill_table(a.out, a.ttl)
    takeover_table(a.out)
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
    o = sub.add_parser("takeover")
    for side in ("--node-a", "--node-b", "--core"):
        o.add_argument(side, type=int, nargs=2, required=True, metavar=("PORT", "METRICS"))
    o.add_argument("--reps", type=int, default=30)
    o.add_argument("--queued", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1000])
    t = sub.add_parser("table")
    t.add_argument("out")
    t.add_argument("--ttl", type=float, required=True)
    t.add_argument("--rate", type=int, required=True)
    a = p.parse_args()
    return {"wait-cluster": wait_cluster, "snap": snap, "etcd": etcd, "kill": kill,
            "takeover": takeover, "table": table}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
