"""Python authentication and authorisation hooks: allow, deny, raise."""

from __future__ import annotations

import logging
import threading

import pytest

uringmq = pytest.importorskip("uringmq")
import mqtt_helpers  # noqa: E402
from mqtt_helpers import MQTT311, MQTT5, RawClient, uid  # noqa: E402

WAIT = 5.0


@pytest.fixture
def make():
    brokers = []

    def start(**kw):
        b = uringmq.Broker(port=0, cores=2, pin_cores=False, **kw).start()
        brokers.append(b)
        return b

    yield start
    mqtt_helpers.close_all()
    for b in brokers:
        b.stop()


def connack(broker, version=MQTT311, **kw) -> int:
    c = RawClient(broker.host, broker.port, version)
    try:
        return c.connect(uid("hook"), **kw).rc
    finally:
        c.close()


def test_authenticate_sees_the_client_and_decides(make):
    calls = []

    def authenticate(client, password):
        calls.append((client.username, password, threading.current_thread() is threading.main_thread()))
        return client.username == "alice" and password == b"secret"

    b = make(authenticate=authenticate)
    assert connack(b, username="alice", password=b"secret") == 0
    assert connack(b, username="alice", password=b"wrong") == 4  # v3.1.1: bad user name or password
    assert connack(b, MQTT5, username="mallory", password=b"x") == 0x86
    assert ("alice", b"secret", False) in calls  # called, and not on the main thread
    assert b.stats().auth_failures >= 2


def test_authenticate_can_name_the_reason(make):
    b = make(authenticate=lambda client, password: "banned")
    assert connack(b, MQTT5, username="u", password=b"p") == 0x8A


def test_raising_authenticate_denies_and_logs(make, caplog):
    def authenticate(client, password):
        raise RuntimeError("database down")

    b = make(authenticate=authenticate)
    with caplog.at_level(logging.ERROR, logger="uringmq"):
        assert connack(b, MQTT5, username="u", password=b"p") == 0x87
    assert any("authenticate" in r.getMessage() and "database down" in r.exc_text for r in caplog.records)


def test_authorize_filters_publish_and_subscribe(make):
    def authorize(client, access, topic):
        if access == "subscribe":
            return not topic.startswith("secret")
        if access == "publish":
            return topic != "forbidden"
        return True

    b = make(authorize=authorize)
    with b.subscribe("#") as spy:
        c = mqtt_helpers.raw(b, MQTT5)
        suback = c.subscribe(("secret/#", 1), ("open/#", 1))
        assert suback.codes[0] >= 0x80 and suback.codes[1] == 1
        c.publish("forbidden", b"no", qos=0)
        c.publish("open/1", b"yes", qos=0)
        # The allowed publish arrives; the forbidden one (sent first) never did.
        m = spy.get(WAIT)
        assert (m.topic, m.payload) == ("open/1", b"yes")
        assert spy.poll() is None


def test_raising_authorize_denies_and_logs(make, caplog):
    def authorize(client, access, topic):
        raise ValueError(f"bad rule for {topic}")

    b = make(authorize=authorize)
    with caplog.at_level(logging.ERROR, logger="uringmq"):
        c = mqtt_helpers.raw(b, MQTT5)
        suback = c.subscribe(("t/#", 1))
    assert suback.codes[0] >= 0x80
    assert any("authorize" in r.getMessage() and "bad rule for t/#" in r.exc_text for r in caplog.records)
