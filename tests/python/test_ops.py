"""Operations with real third-party components, against the ``uringmq`` binary: the metrics
endpoint read by ``promtool`` and scraped by a real Prometheus server (queried through its HTTP
API), ``mosquitto_sub -t '$SYS/#'``, JSON log lines, and the Prometheus text and ``$SYS`` agreeing
on every counter a client can predict.

The binary is ``$URINGMQ_BIN``, else the first of target/{ci,release,debug}/uringmq; a test skips
without it or without the tool it drives (scripts/test.sh installs them).
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mqtt_helpers import Paho, need_tool, uid, uringmq_binary

REPO = Path(__file__).resolve().parents[2]
WAIT = 15.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether a socket listens on ``port`` (IPv4), read from /proc/net/tcp: a test connection
    would count as an accepted socket."""
    with open("/proc/net/tcp") as f:
        next(f)
        return any(
            fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port
            for fields in (line.split() for line in f)
        )


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        if _listening(port):
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {port}")


class Bin:
    """The broker binary with a config file; stdout kept for the log tests."""

    def __init__(self, tmp: Path, **settings):
        self.host, self.port = "127.0.0.1", _free_port()
        self.metrics_port = _free_port()
        settings.setdefault("metrics_listen", f"127.0.0.1:{self.metrics_port}")
        lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        conf = tmp / f"uringmq-{self.port}.toml"
        conf.write_text("\n".join(lines) + "\n")
        self.log = tmp / f"uringmq-{self.port}.log"
        self._out = open(self.log, "wb")
        argv = [uringmq_binary(), "--port", str(self.port), "--cores", "2", "--config", str(conf)]
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc)
        _wait_port(self.metrics_port, self.proc)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=WAIT) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@pytest.fixture
def start(tmp_path):
    started: list[Bin] = []

    def make(**settings) -> Bin:
        b = Bin(tmp_path, **settings)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def metric(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (all label sets)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        sample, value = line.rsplit(" ", 1)
        if sample.split("{", 1)[0] == name:
            total += float(value)
    return total


def _known_traffic(b) -> tuple[Paho, Paho]:
    """5 QoS 1 PUBLISH of 8 bytes to a subscriber, one retained of 3: returns (pub, sub)."""
    sub = Paho(b, uid("sub"))
    sub.subscribe("known/#", qos=1)
    pub = Paho(b, uid("pub"))
    for _ in range(5):
        pub.publish("known/t", b"12345678", qos=1)
    pub.publish("known/kept", b"abc", qos=1, retain=True)
    sub.get_n(6)
    return pub, sub


def test_endpoint_health_readiness_and_promtool(start):
    """``/healthz`` and ``/readyz`` answer 200; ``promtool check metrics`` accepts ``/metrics``
    (format and naming lint); unknown paths are 404."""
    promtool = need_tool("promtool")
    b = start()
    assert b.get("/healthz") == (200, "ok\n")
    assert b.get("/readyz") == (200, "ready\n")
    assert b.get("/nope")[0] == 404
    _known_traffic(b)
    status, text = b.get("/metrics")
    assert status == 200
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert metric(text, "uringmq_publish_received_total") == 6


def test_prometheus_scrapes_the_broker(start, tmp_path):
    """A real Prometheus server scrapes the endpoint every second: ``up`` is 1 and a uringmq
    series holds the count of known traffic, read through Prometheus's HTTP API."""
    prometheus = need_tool("prometheus")
    b = start()
    _known_traffic(b)
    port = _free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: uringmq\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{b.metrics_port}']\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_port(port, proc, timeout=30)

        def query(q: str) -> list:
            url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(q)}"
            with urllib.request.urlopen(url, timeout=WAIT) as r:
                body = json.load(r)
            assert body["status"] == "success", body
            return body["data"]["result"]

        def value(q: str) -> float | None:
            try:
                r = query(q)
            except urllib.error.URLError:
                return None  # 503 while Prometheus starts
            return float(r[0]["value"][1]) if r else None

        deadline = time.monotonic() + 60
        while not (value('up{job="uringmq"}') == 1.0
                   and value("sum(uringmq_publish_received_total)") == 6.0):
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        assert value("sum(uringmq_connections)") == 2.0
        assert value('count(uringmq_core_timer_lag_seconds_bucket{le="+Inf"})') == 2.0
        # Every query of the Grafana dashboard parses and names series this broker exports.
        _, text = b.get("/metrics")
        exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
        for expr in _dashboard_queries():
            for name in re.findall(r"uringmq_[a-z_]+", expr):
                assert name in exported, f"{name} (in {expr}) is not exported"
            query(expr.replace("$job", ".*").replace("$__rate_interval", "1m"))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _dashboard_queries() -> list:
    d = json.loads((REPO / "scripts" / "deploy" / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def test_prometheus_text_and_sys_agree_on_known_traffic(start):
    """The counters a client can predict are the same in ``/metrics`` and in ``$SYS``."""
    b = start(sys_interval_secs=1)
    _known_traffic(b)
    watch = Paho(b, uid("watch"))
    watch.subscribe("$SYS/broker/#", qos=0)
    # What $SYS must show; the watcher's own CONNECT and SUBSCRIBE count too.
    want = {
        "publish/messages/received": 6,
        "publish/bytes/received": 5 * 8 + 3,
        "clients/connected": 3,
        "clients/total": 3,
        "subscriptions/count": 2,
        "retained messages/count": 1,
        "connections/socket/count": 3,
        # CONNECT x3, SUBSCRIBE x2, PUBLISH x6, PUBACK x6 (sub, for its 6 QoS 1 deliveries)
        "messages/received": 17,
    }
    values: dict = {}
    deadline = time.monotonic() + WAIT
    while any(values.get(f"$SYS/broker/{k}") != str(v) for k, v in want.items()):
        assert time.monotonic() < deadline, f"$SYS: {sorted(values.items())}"
        try:
            m = watch.get(timeout=0.5)
        except queue.Empty:
            continue
        values[m.topic] = m.payload.decode()
    _, text = b.get("/metrics")
    prom = {
        "publish/messages/received": "uringmq_publish_received_total",
        "publish/bytes/received": "uringmq_publish_received_bytes_total",
        "clients/connected": "uringmq_connections",
        "clients/total": "uringmq_sessions",
        "subscriptions/count": "uringmq_subscriptions",
        "retained messages/count": "uringmq_retained_messages",
        "connections/socket/count": "uringmq_accepted_sockets_total",
        "messages/received": "uringmq_packets_received_total",
    }
    for k, name in prom.items():
        assert metric(text, name) == want[k], name


def test_mosquitto_sub_reads_sys(start):
    """``mosquitto_sub -t '$SYS/#' -v -C N`` prints N retained ``$SYS`` lines at once."""
    mosquitto_sub = need_tool("mosquitto_sub")
    b = start(sys_interval_secs=1)

    def sub(topic: str, n: int) -> list:
        out = subprocess.run(
            [mosquitto_sub, "-h", "127.0.0.1", "-p", str(b.port), "-t", topic, "-v", "-C", str(n), "-W", "10"],
            capture_output=True, text=True, timeout=20,
        )
        lines = out.stdout.splitlines()
        assert out.returncode == 0 and len(lines) == n, out
        return lines

    assert all(line.startswith("$SYS/broker/") for line in sub("$SYS/#", 20))
    (version,) = sub("$SYS/broker/version", 1)
    assert version.startswith("$SYS/broker/version uringmq version "), version


def test_json_log_lines_carry_connect_and_disconnect_fields(start):
    """``log_format = "json"``: one JSON object per line; connect and disconnect lines name the
    client id, listener, peer and protocol, and the disconnect its reason."""
    b = start(log_format="json", sys_interval_secs=0)
    c = Paho(b, "json-logger")
    c.disconnect()
    deadline = time.monotonic() + WAIT
    while True:
        events = [json.loads(line) for line in b.log.read_text().splitlines() if line.strip()]
        by_message = {e["message"]: e for e in events if e.get("client_id") == "json-logger"}
        if "client disconnected" in by_message or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    connected, gone = by_message["client connected"], by_message["client disconnected"]
    for e in (connected, gone):
        assert e["listener"] == "default"
        assert e["peer"].startswith("127.0.0.1:"), e
        assert e["protocol"] == "V3_1_1"
        assert e["level"] == "INFO" and "timestamp" in e
    assert "disconnect" in gone["reason"].lower(), gone
