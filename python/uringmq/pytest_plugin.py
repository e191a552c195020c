"""pytest plugin (entry point ``pytest11``): MQTT brokers as fixtures, no docker, no fixed ports.

Fixtures:

* ``mqtt_broker``: a running ``uringmq.Broker`` on an ephemeral port. Without settings it is one
  broker shared by the whole session (fast); with settings, from ``@pytest.mark.mqtt_broker(...)``
  or indirect parametrisation (``@pytest.mark.parametrize("mqtt_broker", [{...}],
  indirect=True)``), the test gets its own broker with those settings.
* ``mqtt_broker_fresh``: always a broker of the test's own (same settings sources), stopped after
  the test: no retained messages or sessions left over from other tests.
* ``mqtt_broker_session``: the shared session broker, for session- or module-scoped fixtures.
* ``mqtt_broker_factory``: ``make(**settings)`` starts more brokers, all stopped after the test.
* ``mqtt_capture``: records the messages published during the test on the broker the test uses
  (``mqtt_broker_fresh`` if the test asks for it, else ``mqtt_broker``): ``.messages``,
  ``.wait_for(topic, n, timeout)``. It starts empty (retained messages from before are not
  sent) and listens to ``#`` unless ``@pytest.mark.mqtt_capture(filter="sensors/#")`` says
  otherwise. ``mqtt_capture_factory(filter, broker=None)`` makes more captures.

* ``mqtt_cluster_factory``: ``make(nodes=2, **settings)`` starts a cluster: a real etcd (one
  per test, on free ports, in a temporary directory; ``etcd`` on the PATH or ``$ETCD_BIN``,
  Debian's ``etcd-server``) and ``nodes`` in-process brokers registered in it under a prefix of
  their own with a random secret (``MqttCluster``: ``.nodes``, ``.names``, ``.etcd.url``,
  ``.wait_formed(timeout)`` until every node sees and links every other). Everything stops
  after the test; without etcd the test is skipped.
* ``mqtt_cluster``: one such cluster, formed, with ``@pytest.mark.mqtt_cluster(nodes=3,
  **settings)`` for other sizes and node settings (default: two nodes).

External broker: ``--mqtt-broker-url mqtt://[user:password@]host:port`` (or the ini setting
``mqtt_broker_url``) points ``mqtt_broker``, ``mqtt_broker_fresh`` and ``mqtt_capture`` at a
running broker (a staging broker, Mosquitto) instead of the in-process one; the fixtures then
give an ``ExternalBroker`` (``host``, ``port``, ``url``, ``username``, ``password``,
``publish()``), captures go through an MQTT 5 client (paho-mqtt), and tests that need the
in-process broker (settings, ``mqtt_broker_factory``) are skipped.

Brokers made by the plugin use ``FIXTURE_DEFAULTS`` (port 0, one core, no CPU pinning, so parallel
test processes do not fight over CPUs) under the test's settings. Connect clients to
``broker.host`` / ``broker.port``.

The native extension is imported only when a fixture is used, so a broken build cannot break
test collection of a project that merely has the package installed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import pytest

from ._cluster import MqttCluster
from ._external import ExternalBroker

if TYPE_CHECKING:
    from ._uringmq import Message
    from .broker import Broker

__all__ = ["FIXTURE_DEFAULTS", "ExternalBroker", "MqttCapture", "MqttCluster", "topic_matches"]

#: What the broker fixtures give: the in-process broker, or a handle on an external one.
AnyBroker = Union["Broker", ExternalBroker]

#: Settings every fixture broker starts with; the test's settings override them.
FIXTURE_DEFAULTS: Dict[str, Any] = {"port": 0, "cores": 1, "pin_cores": False}


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--mqtt-broker-url`` and the ``mqtt_broker_url`` ini setting."""
    help = (
        "run the MQTT fixtures against this broker instead of an in-process uringmq: "
        "mqtt://[user:password@]host[:port]"
    )
    parser.addoption("--mqtt-broker-url", default=None, help=help)
    parser.addini("mqtt_broker_url", help=help, default="")


def pytest_configure(config: pytest.Config) -> None:
    """Registers the ``mqtt_broker`` and ``mqtt_capture`` markers."""
    config.addinivalue_line(
        "markers",
        "mqtt_broker(**settings): settings (uringmq config keys) of the test's own broker for the "
        "mqtt_broker / mqtt_broker_fresh fixtures",
    )
    config.addinivalue_line(
        "markers",
        "mqtt_capture(filter='#'): the topic filter the mqtt_capture fixture listens to",
    )
    config.addinivalue_line(
        "markers",
        "mqtt_cluster(nodes=2, **settings): size and node settings of the mqtt_cluster fixture",
    )


def _external(config: pytest.Config) -> Optional[ExternalBroker]:
    """The external broker named by ``--mqtt-broker-url`` / ``mqtt_broker_url``, if any."""
    url = config.getoption("--mqtt-broker-url") or config.getini("mqtt_broker_url")
    return ExternalBroker.from_url(url) if url else None


def _needs_in_process(request: pytest.FixtureRequest, what: str) -> None:
    if _external(request.config) is not None:
        pytest.skip(f"{what} needs the in-process broker (--mqtt-broker-url is set)")


def _test_settings(request: pytest.FixtureRequest) -> Dict[str, Any]:
    """The test's settings: markers (closest wins) then an indirect parameter (a dict)."""
    settings: Dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("mqtt_broker"))):
        if marker.args:
            raise pytest.UsageError("@pytest.mark.mqtt_broker takes keyword arguments only")
        settings.update(marker.kwargs)
    param = getattr(request, "param", None)
    if param is not None:
        if not isinstance(param, dict):
            raise pytest.UsageError("indirect parameters of mqtt_broker must be dicts of settings")
        settings.update(param)
    return settings


def _start(settings: Dict[str, Any]) -> "Broker":
    from .broker import Broker

    return Broker(**{**FIXTURE_DEFAULTS, **settings}).start()


@pytest.fixture
def mqtt_broker_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., "Broker"]]:
    """``make(**settings)`` starts a broker (``FIXTURE_DEFAULTS`` under ``settings``); every
    broker made is stopped when the test ends."""
    made: List["Broker"] = []

    def make(**settings: Any) -> "Broker":
        _needs_in_process(request, "mqtt_broker_factory")
        broker = _start(settings)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture
def mqtt_cluster_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., MqttCluster]]:
    """``make(nodes=2, **settings)``: a cluster of ``nodes`` in-process brokers (settings over
    ``FIXTURE_DEFAULTS``; a ``cluster`` dict adds keys to each node's table) in an etcd of the
    test's own. Clusters and etcd stop when the test ends; skipped without etcd."""
    from ._cluster import Etcd, etcd_binary

    etcd: List[Etcd] = []
    brokers: List["Broker"] = []

    def start(**settings: Any) -> "Broker":
        broker = _start(settings)
        brokers.append(broker)
        return broker

    def make(nodes: int = 2, **settings: Any) -> MqttCluster:
        _needs_in_process(request, "mqtt_cluster_factory")
        if not etcd:
            binary = etcd_binary()
            if binary is None:
                pytest.skip("no etcd (install Debian's etcd-server or set ETCD_BIN)")
            etcd.append(Etcd(binary))
        return MqttCluster(etcd[0], nodes, start, **settings)

    yield make
    for broker in brokers:
        broker.stop()
    for e in etcd:
        e.stop()


@pytest.fixture
def mqtt_cluster(request: pytest.FixtureRequest, mqtt_cluster_factory: Callable[..., MqttCluster]) -> MqttCluster:
    """A formed cluster of two in-process nodes, or as ``@pytest.mark.mqtt_cluster(nodes=N,
    **settings)`` says."""
    marker = request.node.get_closest_marker("mqtt_cluster")
    kwargs: Dict[str, Any] = {}
    if marker is not None:
        if marker.args:
            raise pytest.UsageError("@pytest.mark.mqtt_cluster takes keyword arguments only")
        kwargs = dict(marker.kwargs)
    cluster = mqtt_cluster_factory(**kwargs)
    cluster.wait_formed()
    return cluster


@pytest.fixture(scope="session")
def mqtt_broker_session(request: pytest.FixtureRequest) -> Iterator[AnyBroker]:
    """One broker shared by the whole test session (``FIXTURE_DEFAULTS``), or the external one."""
    external = _external(request.config)
    if external is not None:
        yield external
        return
    broker = _start({})
    yield broker
    broker.stop()


def _own_broker(request: pytest.FixtureRequest, make: Callable[..., "Broker"]) -> AnyBroker:
    """A broker with the test's settings; the external one when it has none."""
    settings = _test_settings(request)
    external = _external(request.config)
    if external is None:
        return make(**settings)
    if settings:
        pytest.skip(f"broker settings {sorted(settings)} need the in-process broker")
    return external


@pytest.fixture
def mqtt_broker(request: pytest.FixtureRequest, mqtt_broker_factory: Callable[..., "Broker"]) -> AnyBroker:
    """The session's shared broker, or a broker of the test's own when the test gives settings
    (``@pytest.mark.mqtt_broker(...)`` or indirect parametrisation)."""
    if _test_settings(request):
        return _own_broker(request, mqtt_broker_factory)
    broker: AnyBroker = request.getfixturevalue("mqtt_broker_session")
    return broker


@pytest.fixture
def mqtt_broker_fresh(request: pytest.FixtureRequest, mqtt_broker_factory: Callable[..., "Broker"]) -> AnyBroker:
    """A broker of the test's own (test settings over ``FIXTURE_DEFAULTS``), stopped afterwards.
    With an external broker: that broker (its state is whatever it holds)."""
    return _own_broker(request, mqtt_broker_factory)


@pytest.fixture
def mqtt_capture_factory() -> Iterator[Callable[..., "MqttCapture"]]:
    """``make(topic_filter="#", broker)``: more captures, closed when the test ends."""
    made: List["MqttCapture"] = []

    def make(topic_filter: str = "#", broker: Optional[AnyBroker] = None) -> "MqttCapture":
        if broker is None:
            raise TypeError("mqtt_capture_factory needs the broker to capture")
        capture = MqttCapture(broker, topic_filter)
        made.append(capture)
        return capture

    yield make
    for capture in made:
        capture.close()


@pytest.fixture
def mqtt_capture(request: pytest.FixtureRequest, mqtt_capture_factory: Callable[..., "MqttCapture"]) -> "MqttCapture":
    """The messages published during the test on the test's broker (``mqtt_broker_fresh`` if
    the test uses it, else ``mqtt_broker``), matching ``@pytest.mark.mqtt_capture(filter=...)``
    (default ``#``). Starts empty: retained messages published before are not sent."""
    name = "mqtt_broker_fresh" if "mqtt_broker_fresh" in request.fixturenames else "mqtt_broker"
    broker: AnyBroker = request.getfixturevalue(name)
    marker = request.node.get_closest_marker("mqtt_capture")
    topic_filter = "#"
    if marker is not None:
        if marker.args or set(marker.kwargs) - {"filter"}:
            raise pytest.UsageError("@pytest.mark.mqtt_capture takes one keyword argument: filter")
        topic_filter = marker.kwargs.get("filter", "#")
    return mqtt_capture_factory(topic_filter, broker)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT ``topic_filter`` (``+`` one level, ``#`` the rest;
    wildcards at the first level do not match ``$`` topics [MQTT-4.7.2-1])."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


class MqttCapture:
    """Records the messages published on ``broker`` from now on that match ``topic_filter``
    (default ``#``).

    Retained messages the broker held before are not sent (retain handling 2), so a capture
    starts empty whatever earlier tests left; the RETAIN flag of what arrives is the
    publisher's (retain as published). On an ``ExternalBroker`` an MQTT 5 client subscribes.
    """

    def __init__(self, broker: AnyBroker, topic_filter: str = "#") -> None:
        self.broker = broker
        self.topic_filter = topic_filter
        self._sub: Any = broker.subscribe(topic_filter, retain_handling=2, retain_as_published=True)
        self._messages: List["Message"] = []

    def _drain(self) -> None:
        while True:
            msg = self._sub.poll()
            if msg is None:
                return
            self._messages.append(msg)

    @property
    def messages(self) -> List["Message"]:
        """Every message received so far, in arrival order."""
        self._drain()
        return list(self._messages)

    @property
    def topics(self) -> List[str]:
        """The topics of ``messages``."""
        return [m.topic for m in self.messages]

    def clear(self) -> None:
        """Forgets the messages received so far."""
        self._drain()
        self._messages.clear()

    def _progress(self, topic: str, n: int, timeout: float, deadline: float) -> Tuple[Optional[List["Message"]], float]:
        """``(matching messages, 0)`` once ``n`` arrived, else ``(None, seconds left)``; raises
        ``AssertionError`` listing what came once the time is up."""
        self._drain()
        got = [m for m in self._messages if topic_matches(topic, m.topic)]
        if len(got) >= n:
            return got, 0.0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"expected {n} message(s) matching {topic!r} within {timeout} s, got {len(got)}; "
                f"topics seen: {[m.topic for m in self._messages][:20]}"
            )
        return None, remaining

    def wait_for(self, topic: str = "#", n: int = 1, timeout: float = 5.0) -> List["Message"]:
        """Waits until at least ``n`` messages matching ``topic`` (a name or filter) arrived and
        returns all matching ones; raises ``AssertionError`` listing what came after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            got, remaining = self._progress(topic, n, timeout, deadline)
            if got is not None:
                return got
            try:
                self._messages.append(self._sub.get(remaining))
            except TimeoutError:
                pass

    async def wait_for_async(self, topic: str = "#", n: int = 1, timeout: float = 5.0) -> List["Message"]:
        """``wait_for`` for asyncio tests: awaits instead of blocking the event loop."""
        deadline = time.monotonic() + timeout
        while True:
            got, remaining = self._progress(topic, n, timeout, deadline)
            if got is not None:
                return got
            try:
                self._messages.append(await self._sub.get_async(remaining))
            except TimeoutError:
                pass

    def close(self) -> None:
        """Ends the capture (unsubscribes)."""
        self._sub.close()
