"""``$SYS/broker/...``: the topics a Mosquitto dashboard reads, checked with paho against the broker
under test; with ``--broker=mosquitto`` the same test checks the names against Mosquitto itself."""

import queue
import time

import pytest

from mqtt_helpers import Paho, uid

WAIT = 10.0

#: Topics Mosquitto 2.x publishes (its sys_tree.c) that a dashboard reads, and how each payload looks.
MOSQUITTO_TOPICS = {
    "$SYS/broker/version": lambda v: " version " in v,
    "$SYS/broker/uptime": lambda v: v.endswith(" seconds") and v.split()[0].isdigit(),
    "$SYS/broker/clients/connected": str.isdigit,
    "$SYS/broker/clients/disconnected": str.isdigit,
    "$SYS/broker/clients/total": str.isdigit,
    "$SYS/broker/clients/maximum": str.isdigit,
    "$SYS/broker/messages/received": str.isdigit,
    "$SYS/broker/messages/sent": str.isdigit,
    "$SYS/broker/publish/messages/received": str.isdigit,
    "$SYS/broker/publish/messages/sent": str.isdigit,
    "$SYS/broker/bytes/received": str.isdigit,
    "$SYS/broker/bytes/sent": str.isdigit,
    "$SYS/broker/subscriptions/count": str.isdigit,
    "$SYS/broker/retained messages/count": str.isdigit,
    "$SYS/broker/store/messages/count": str.isdigit,
    "$SYS/broker/load/messages/received/1min": lambda v: float(v) >= 0 and "." in v,
    "$SYS/broker/load/publish/received/15min": lambda v: float(v) >= 0 and "." in v,
    "$SYS/broker/load/connections/5min": lambda v: float(v) >= 0 and "." in v,
}


def _collect(sub: Paho, done, timeout: float = WAIT) -> dict:
    """Latest payload per ``$SYS`` topic, until ``done(values)`` holds."""
    values: dict = {}
    deadline = time.monotonic() + timeout
    while not done(values):
        left = deadline - time.monotonic()
        assert left > 0, f"$SYS never matched; got {sorted(values.items())}"
        try:
            m = sub.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        values[m.topic] = m.payload.decode()
    return values


def _traffic(b) -> Paho:
    """Known traffic: one client sends 3 QoS 1 PUBLISH of 10 bytes and one retained of 4; then a
    watcher subscribes to ``$SYS/#`` (returned)."""
    pub = Paho(b, uid("pub"))
    topic = uid("sys-traffic")
    for _ in range(3):
        pub.publish(topic, b"0123456789", qos=1)
    pub.publish(topic + "/kept", b"kept", qos=1, retain=True)
    watch = Paho(b, uid("watch"))
    assert watch.subscribe("$SYS/#", qos=0) == [0]
    return watch


def test_sys_topics_have_mosquitto_names_and_formats(make_broker):
    """``$SYS/#`` carries the topics Mosquitto publishes, with its payload formats."""
    watch = _traffic(make_broker(sys_interval_secs=1))
    # Retained values come first, then each tick's changes: wait for the one after the traffic.
    connected = "$SYS/broker/clients/connected"
    values = _collect(watch, lambda v: all(t in v for t in MOSQUITTO_TOPICS) and v[connected] == "2")
    for t, ok in MOSQUITTO_TOPICS.items():
        assert ok(values[t]), f"{t} = {values[t]!r}"


@pytest.mark.xfail_mosquitto("2.0.11 reports publish/messages/received 3 for these 4 PUBLISH (observed)")
def test_sys_topics_count_known_traffic(make_broker):
    """Every count a client can predict: 4 PUBLISH of 34 payload bytes, 7 packets (2 CONNECT,
    4 PUBLISH, 1 SUBSCRIBE), 2 clients connected, 2 sockets."""
    watch = _traffic(make_broker(sys_interval_secs=1))
    want = {
        "$SYS/broker/publish/messages/received": "4",
        "$SYS/broker/publish/bytes/received": "34",
        "$SYS/broker/messages/received": "7",
        "$SYS/broker/clients/connected": "2",
        "$SYS/broker/clients/total": "2",
        "$SYS/broker/clients/disconnected": "0",
        "$SYS/broker/connections/socket/count": "2",
        "$SYS/broker/subscriptions/count": "1",
    }
    _collect(watch, lambda v: all(v.get(t) == x for t, x in want.items()))


def test_sys_topics_are_retained_and_not_matched_by_wildcards(make_broker):
    """[MQTT-4.7.2-1] ``#`` does not match ``$SYS``; a late subscriber gets the values at once, retained."""
    b = make_broker(sys_interval_secs=1)
    first = Paho(b, uid("first"))
    first.subscribe("$SYS/broker/uptime", qos=0)
    first.get(timeout=WAIT)
    everything = Paho(b, uid("all"))
    everything.subscribe("#", qos=0)
    late = Paho(b, uid("late"))
    late.subscribe("$SYS/broker/version", qos=0)
    m = late.get(timeout=WAIT)
    assert m.retain and m.topic == "$SYS/broker/version"
    # One more update has gone out by the time the next uptime arrives.
    first.get(timeout=WAIT)
    while True:
        try:
            m = everything.get(timeout=0.3)
        except queue.Empty:
            break
        assert not m.topic.startswith("$"), m.topic
