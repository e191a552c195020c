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
* ``mqtt_capture``: records every message published on ``mqtt_broker`` during the test through
  an in-process subscriber: ``.messages``, ``.wait_for(topic, n, timeout)``.

Brokers made by the plugin use ``FIXTURE_DEFAULTS`` (port 0, one core, no CPU pinning, so parallel
test processes do not fight over CPUs) under the test's settings. Connect clients to
``broker.host`` / ``broker.port``.

The native extension is imported only when a fixture is used, so a broken build cannot break
test collection of a project that merely has the package installed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

if TYPE_CHECKING:
    from .broker import Broker
    from .subscription import Subscription
    from ._uringmq import Message

__all__ = ["FIXTURE_DEFAULTS", "MqttCapture", "topic_matches"]

#: Settings every fixture broker starts with; the test's settings override them.
FIXTURE_DEFAULTS: Dict[str, Any] = {"port": 0, "cores": 1, "pin_cores": False}


def pytest_configure(config: pytest.Config) -> None:
    """Registers the ``mqtt_broker`` marker."""
    config.addinivalue_line(
        "markers",
        "mqtt_broker(**settings): settings (uringmq config keys) of the test's own broker for the "
        "mqtt_broker / mqtt_broker_fresh fixtures",
    )


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
def mqtt_broker_factory() -> Iterator[Callable[..., "Broker"]]:
    """``make(**settings)`` starts a broker (``FIXTURE_DEFAULTS`` under ``settings``); every
    broker made is stopped when the test ends."""
    made: List["Broker"] = []

    def make(**settings: Any) -> "Broker":
        broker = _start(settings)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture(scope="session")
def mqtt_broker_session() -> Iterator["Broker"]:
    """One broker shared by the whole test session (``FIXTURE_DEFAULTS``)."""
    broker = _start({})
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_broker(request: pytest.FixtureRequest, mqtt_broker_factory: Callable[..., "Broker"]) -> "Broker":
    """The session's shared broker, or a broker of the test's own when the test gives settings
    (``@pytest.mark.mqtt_broker(...)`` or indirect parametrisation)."""
    settings = _test_settings(request)
    if settings:
        return mqtt_broker_factory(**settings)
    broker: "Broker" = request.getfixturevalue("mqtt_broker_session")
    return broker


@pytest.fixture
def mqtt_broker_fresh(request: pytest.FixtureRequest, mqtt_broker_factory: Callable[..., "Broker"]) -> "Broker":
    """A broker of the test's own (test settings over ``FIXTURE_DEFAULTS``), stopped afterwards."""
    return mqtt_broker_factory(**_test_settings(request))


@pytest.fixture
def mqtt_capture(mqtt_broker: "Broker") -> Iterator["MqttCapture"]:
    """Every message published on ``mqtt_broker`` (by clients or in-process) during the test."""
    capture = MqttCapture(mqtt_broker)
    yield capture
    capture.close()


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
    """Records messages through an in-process subscription to ``topic_filter`` (default ``#``).

    Retained messages the broker already held arrive first, with ``retain=True``.
    """

    def __init__(self, broker: "Broker", topic_filter: str = "#") -> None:
        self.broker = broker
        self._sub: "Subscription" = broker.subscribe(topic_filter)
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
