"""Broker fixtures for the MQTT conformance suite.

``--broker`` (or ``URINGMQ_TEST_BROKER``) picks what the suite runs against:

* ``uringmq`` (default): the in-process Python binding, ``uringmq.Broker(port=0, cores=2, ...)``;
* ``uringmq-bin``: the binary (``$URINGMQ_BIN`` or ``target/release/uringmq``) with a TOML config;
* ``mosquitto``: ``/usr/sbin/mosquitto`` with a generated config, the reference implementation.

Every test gets a fresh broker (``broker``) or builds one with settings (``make_broker(**settings)``),
using uringmq's setting names. For Mosquitto each setting is mapped to its option; a setting Mosquitto
has no equivalent for skips the test there.

Markers: ``xfail_mosquitto(reason)`` for a spec-correct assertion Mosquitto 2.x does not meet (or a
uringmq choice where the spec leaves room and Mosquitto chose otherwise), and
``skip_mosquitto(reason)`` for behaviour Mosquitto cannot be configured for.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import mqtt_helpers  # noqa: E402

MOSQUITTO = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
REPO = Path(__file__).resolve().parents[2]

# uringmq setting -> mosquitto option. Settings marked None have no Mosquitto equivalent: a test
# that needs them skips on Mosquitto. Settings in IGNORED_ON_MOSQUITTO are tuning without an
# observable contract, so the test still means something without them.
MOSQUITTO_OPTIONS = {
    "max_packet_size": "max_packet_size",
    "max_inflight": "max_inflight_messages",
    "max_queued_messages": "max_queued_messages",
    "max_queued_bytes": "max_queued_bytes",
    "queue_qos0_messages": "queue_qos0_messages",
    "max_keepalive": "max_keepalive",
    "topic_alias_maximum": "max_topic_alias",
    "retain_available": "retain_available",
    "allow_anonymous": "allow_anonymous",
    "password_file": "password_file",
    "acl_file": "acl_file",
    # listener-scoped options in Mosquitto 2.x
    "max_connections": "max_connections",
    "max_qos": "max_qos",
    "connect_timeout_secs": None,
    "max_topic_levels": None,
    "max_topic_length": None,
    "max_subscriptions_per_client": None,
    "max_subscription_bytes_per_client": None,
    "max_session_expiry_secs": None,
}
LISTENER_SCOPED = {"max_connections", "max_qos"}
IGNORED_ON_MOSQUITTO = {"max_outbound_bytes"}


def pytest_addoption(parser):
    parser.addoption(
        "--broker",
        default=os.environ.get("URINGMQ_TEST_BROKER", "uringmq"),
        choices=["uringmq", "uringmq-bin", "mosquitto"],
        help="broker under test (env URINGMQ_TEST_BROKER)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "xfail_mosquitto(reason): spec-correct assertion Mosquitto 2.x fails")
    config.addinivalue_line("markers", "skip_mosquitto(reason): Mosquitto has no equivalent setting/behaviour")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--broker") != "mosquitto":
        return
    for item in items:
        m = item.get_closest_marker("xfail_mosquitto")
        if m:
            reason = m.kwargs.get("reason") or (m.args[0] if m.args else "")
            item.add_marker(pytest.mark.xfail(reason=f"mosquitto: {reason}", strict=True))
        m = item.get_closest_marker("skip_mosquitto")
        if m:
            reason = m.kwargs.get("reason") or (m.args[0] if m.args else "")
            item.add_marker(pytest.mark.skip(reason=f"mosquitto: {reason}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether a socket is in LISTEN state on ``port`` (IPv4 loopback), read from /proc/net/tcp.

    The readiness check must not open a connection: Mosquitto 2.0.11 miscounts `max_connections`
    once a connection has come and gone, which would skew the connection-limit test."""
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                    return True
    except OSError:
        return False
    return False


def _wait_accepting(host: str, port: int, proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with status {proc.returncode} before accepting")
        if _listening(port):
            return
        time.sleep(0.01)
    raise RuntimeError(f"broker did not listen on {host}:{port} within {timeout}s")


class RunningBroker:
    """What a test sees: where to connect, which implementation, and how it was configured."""

    def __init__(self, kind: str, host: str, port: int, settings: dict, stop):
        self.kind = kind
        self.host = host
        self.port = port
        self.settings = settings
        self._stop = stop

    @property
    def is_mosquitto(self) -> bool:
        return self.kind == "mosquitto"

    def stop(self) -> None:
        if self._stop:
            stop, self._stop = self._stop, None
            stop()


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _start_mosquitto(settings: dict, tmp: Path) -> RunningBroker:
    if not Path(MOSQUITTO).exists():
        pytest.skip(f"{MOSQUITTO} not installed")
    global_lines, listener_lines = [], []
    for key, value in settings.items():
        if key in IGNORED_ON_MOSQUITTO:
            continue
        if key not in MOSQUITTO_OPTIONS:
            raise KeyError(f"unknown uringmq setting {key!r}")
        option = MOSQUITTO_OPTIONS[key]
        if option is None:
            pytest.skip(f"mosquitto has no equivalent of uringmq's `{key}`")
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        (listener_lines if key in LISTENER_SCOPED else global_lines).append(f"{option} {text}")
    port = _free_port()
    conf = tmp / f"mosquitto-{port}.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        *listener_lines,
        "persistence false",
        "log_dest stderr",
        "log_type error",
        "sys_interval 0",
    ]
    if "allow_anonymous" not in settings:
        lines.append("allow_anonymous true")
    conf.write_text("\n".join(lines + global_lines) + "\n")
    # SIGKILL on stop: nothing to persist (persistence false), and SIGTERM costs ~0.1 s per test.
    return _spawn("mosquitto", [MOSQUITTO, "-c", str(conf)], port, settings, tmp, graceful=False)


def _spawn(kind: str, argv: list, port: int, settings: dict, tmp: Path, graceful: bool) -> RunningBroker:
    """Starts a broker process logging to ``tmp``, waits until it listens on ``port``."""
    log = open(tmp / f"{kind}-{port}.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def stop():
        if graceful:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

    try:
        _wait_accepting("127.0.0.1", port, proc)
    except RuntimeError:
        stop()
        raise
    return RunningBroker(kind, "127.0.0.1", port, settings, stop)


def _start_uringmq(settings: dict) -> RunningBroker:
    try:
        import uringmq

        # The package imports its native extension lazily: touching Broker is the real import.
        broker_class = uringmq.Broker
    except (ImportError, AttributeError) as e:
        pytest.skip(f"cannot import uringmq (build it with `maturin develop` in python/): {e}")
    # Unpinned: several test brokers may run in one process on a shared machine.
    b = broker_class(port=0, cores=2, pin_cores=False, **settings)
    b.start()
    return RunningBroker("uringmq", b.host, b.port, settings, b.stop)


def _start_uringmq_bin(settings: dict, tmp: Path) -> RunningBroker:
    binary = os.environ.get("URINGMQ_BIN") or str(REPO / "target" / "release" / "uringmq")
    if not (Path(binary).exists() or shutil.which(binary)):
        pytest.skip(f"uringmq binary {binary} not found (set URINGMQ_BIN or build --release)")
    port = _free_port()
    conf = tmp / f"uringmq-{port}.toml"
    conf.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in settings.items()))
    argv = [binary, "--port", str(port), "--cores", "2", "--config", str(conf)]
    return _spawn("uringmq-bin", argv, port, settings, tmp, graceful=True)


@pytest.fixture
def broker_kind(request) -> str:
    return request.config.getoption("--broker")


@pytest.fixture
def make_broker(request, tmp_path):
    """Factory: ``make_broker(**settings)`` starts a fresh broker with uringmq-named settings."""
    kind = request.config.getoption("--broker")
    started: list[RunningBroker] = []

    def make(**settings) -> RunningBroker:
        if kind == "mosquitto":
            b = _start_mosquitto(settings, tmp_path)
        elif kind == "uringmq-bin":
            b = _start_uringmq_bin(settings, tmp_path)
        else:
            b = _start_uringmq(settings)
        started.append(b)
        return b

    yield make
    mqtt_helpers.close_all()
    for b in started:
        b.stop()


@pytest.fixture
def broker(make_broker) -> RunningBroker:
    """A fresh broker with default settings."""
    return make_broker()
