"""A broker the pytest fixtures did not start (``--mqtt-broker-url``), reached through paho-mqtt.

``ExternalBroker`` offers what tests use of ``uringmq.Broker``: ``host``, ``port``, ``url``,
``publish()`` and ``subscribe()``; the subscription is an MQTT 5 client whose messages wait in a
queue, with the ``poll``/``get``/``get_async``/``close`` of ``uringmq.Subscription``. paho-mqtt
is imported only when a broker is used (``pip install uringmq[test]`` brings it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit

__all__ = ["CapturedMessage", "ExternalBroker"]

_ids = itertools.count()


@dataclass(frozen=True)
class CapturedMessage:
    """A message received from an external broker (the fields of ``uringmq.Message``)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Dict[str, Any] = field(default_factory=dict)


def _properties(props: Any) -> Dict[str, Any]:
    """The MQTT 5 publish properties paho received, with ``uringmq.Message``'s names."""
    names = {
        "PayloadFormatIndicator": "payload_format_indicator",
        "MessageExpiryInterval": "message_expiry_interval",
        "ContentType": "content_type",
        "ResponseTopic": "response_topic",
        "CorrelationData": "correlation_data",
        "UserProperty": "user_properties",
        "SubscriptionIdentifier": "subscription_identifiers",
    }
    return {ours: getattr(props, theirs) for theirs, ours in names.items() if props and hasattr(props, theirs)}


@dataclass
class ExternalBroker:
    """A running broker at ``host:port``, with optional credentials."""

    host: str
    port: int = 1883
    username: Optional[str] = None
    password: Optional[str] = None

    @classmethod
    def from_url(cls, url: str) -> "ExternalBroker":
        """Parses ``mqtt://[user:password@]host[:port]`` (``tcp://`` too)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError(f"expected mqtt://[user:password@]host[:port], got {url!r}")
        return cls(
            host=parts.hostname,
            port=parts.port or 1883,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def url(self) -> str:
        """``mqtt://host:port`` (without the credentials)."""
        return f"mqtt://[{self.host}]:{self.port}" if ":" in self.host else f"mqtt://{self.host}:{self.port}"

    @property
    def address(self) -> Tuple[str, int]:
        """``(host, port)``."""
        return (self.host, self.port)

    @property
    def is_running(self) -> bool:
        """Always true: the plugin does not manage this broker."""
        return True

    def client(self) -> Any:
        """A connected paho-mqtt MQTT 5 client (network loop running); call ``disconnect()``
        and ``loop_stop()`` when done."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"uringmq-fixture-{os.getpid()}-{next(_ids)}",
            protocol=paho.MQTTv5,
        )
        if self.username is not None:
            c.username_pw_set(self.username, self.password)
        connected = threading.Event()
        refused: List[Any] = []

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                refused.append(reason)
            connected.set()

        c.on_connect = on_connect
        c.connect(self.host, self.port)
        c.loop_start()
        if not connected.wait(10) or refused:
            c.loop_stop()
            raise ConnectionError(f"{self.url} refused the fixture's client: {refused or 'timeout'}")
        return c

    def publish(
        self,
        topic: str,
        payload: Any = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Publishes through a short-lived client and waits until the broker has it."""
        if properties:
            raise NotImplementedError("properties are supported by the in-process broker only")
        from paho.mqtt.subscribeoptions import SubscribeOptions

        c = self.client()
        try:
            c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)
            if qos == 0:
                # A QoS 0 PUBLISH is not acknowledged, and raising its QoS would change what
                # subscribers see. A broker handles one connection's packets in order, so the
                # SUBACK of a later SUBSCRIBE (to a filter nobody uses) shows that it
                # has routed the message.
                barrier = f"uringmq-fixture/barrier/{os.getpid()}-{next(_ids)}"
                _subscribe_acked(c, barrier, SubscribeOptions(qos=0))
        finally:
            c.disconnect()
            c.loop_stop()

    def subscribe(
        self,
        topic_filter: str,
        qos: int = 2,
        *,
        retain_handling: int = 0,
        retain_as_published: bool = False,
        no_local: bool = False,
    ) -> "ExternalSubscription":
        """Subscribes with a client of its own; returns once the broker acknowledged it."""
        return ExternalSubscription(self, topic_filter, qos, retain_handling, retain_as_published, no_local)


class ExternalSubscription:
    """The messages of one filter on an external broker, as ``uringmq.Subscription`` gives them."""

    def __init__(
        self,
        broker: ExternalBroker,
        topic_filter: str,
        qos: int,
        retain_handling: int,
        retain_as_published: bool,
        no_local: bool,
    ) -> None:
        from paho.mqtt.subscribeoptions import SubscribeOptions

        self.filter = topic_filter
        self._queue: "queue.Queue[CapturedMessage]" = queue.Queue()
        self._client = broker.client()
        self._client.on_message = lambda client, userdata, m: self._queue.put(
            CapturedMessage(m.topic, m.payload, m.qos, bool(m.retain), _properties(m.properties))
        )
        options = SubscribeOptions(
            qos=qos, noLocal=no_local, retainAsPublished=retain_as_published, retainHandling=retain_handling
        )
        try:
            codes = _subscribe_acked(self._client, topic_filter, options)
        except BaseException:
            self.close()
            raise
        refused = [code for code in codes if code.is_failure]
        if refused:
            # A refused filter (0x80 unspecified, 0x87 not authorised...) would leave a capture
            # that silently sees nothing.
            self.close()
            raise PermissionError(f"{broker.url} refused the subscription to {topic_filter!r}: {refused[0]}")

    def poll(self) -> Optional[CapturedMessage]:
        """A waiting message, or None."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def get(self, timeout: Optional[float] = None) -> CapturedMessage:
        """The next message; ``TimeoutError`` after ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no message on {self.filter!r} within {timeout} s") from None

    async def get_async(self, timeout: Optional[float] = None) -> CapturedMessage:
        """``get`` for asyncio: polls every 10 ms (paho delivers on its own thread)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self.poll()
            if msg is not None:
                return msg
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no message on {self.filter!r} within {timeout} s")
            await asyncio.sleep(0.01)

    def close(self) -> None:
        """Disconnects the client."""
        self._client.disconnect()
        self._client.loop_stop()


def _subscribe_acked(client: Any, topic_filter: str, options: Any, timeout: float = 10.0) -> List[Any]:
    """Subscribes and waits for the SUBACK; returns its reason codes (paho ``ReasonCode``s)."""
    acked = threading.Event()
    codes: List[Any] = []

    def on_subscribe(client: Any, userdata: Any, mid: Any, reason_codes: Any, props: Any) -> None:
        codes.extend(reason_codes)
        acked.set()

    client.on_subscribe = on_subscribe
    client.subscribe(topic_filter, options=options)
    if not acked.wait(timeout):
        raise TimeoutError(f"no SUBACK for the subscription to {topic_filter!r} within {timeout} s")
    return codes
