"""Will messages: when they are and are not published, will retain, v5 will delay."""

import queue
import time

import pytest

from mqtt_helpers import (
    MQTT5,
    MQTT31,
    MQTT311,
    P_SESSION_EXPIRY,
    P_WILL_DELAY,
    Paho,
    RawClient,
    disconnect_packet,
    raw,
    uid,
)

ALL_VERSIONS = pytest.mark.parametrize("version", [MQTT31, MQTT311, MQTT5], ids=["3.1", "3.1.1", "5.0"])


def _with_will(
    broker,
    version,
    topic,
    payload=b"will",
    qos=1,
    retain=False,
    will_props=None,
    connect_props=None,
    client_id=None,
    clean=True,
):
    c = RawClient(broker.host, broker.port, version)
    ack = c.connect(
        client_id or uid("w"),
        clean=clean,
        properties=connect_props,
        will={"topic": topic, "payload": payload, "qos": qos, "retain": retain, "props": will_props},
    )
    assert ack.rc == 0
    return c


def _watch(broker, *topics):
    w = Paho(broker)
    for t in topics:
        w.subscribe(t, 2)
    return w


@ALL_VERSIONS
def test_abnormal_close_publishes_will(broker, version):
    """[MQTT-3.1.2-8] the will is published when the connection closes without DISCONNECT."""
    topic = uid("will")
    w = _watch(broker, topic)
    c = _with_will(broker, version, topic, b"bye", qos=2)
    c.abort()
    m = w.get()
    assert (m.topic, m.payload, m.qos, m.retain) == (topic, b"bye", 2, False)


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_normal_disconnect_discards_will(broker, version):
    """[MQTT-3.1.2-10] / v5 [MQTT-3.14.4-3]: DISCONNECT (0x00) deletes the will without publishing it."""
    topic, marker = uid("will"), uid("marker")
    w = _watch(broker, topic, marker)
    c = _with_will(broker, version, topic)
    c.send(disconnect_packet(version))
    c.expect_closed()  # the broker has processed the DISCONNECT once it closes its side
    probe = raw(broker, version)
    probe.publish_acked(marker, b"m", qos=1)
    assert [m.topic for m in w.until(marker)] == [marker]


def test_v5_disconnect_with_will_message_publishes_will(broker):
    """v5 DISCONNECT with reason 0x04 (Disconnect with Will Message): the will is published."""
    topic = uid("will")
    w = _watch(broker, topic)
    c = _with_will(broker, MQTT5, topic, b"asked")
    c.disconnect(rc=0x04)
    assert w.get().payload == b"asked"


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_will_retain(broker, version):
    """[MQTT-3.1.2-17] a will with Will Retain=1 is published as a retained message."""
    topic = uid("will")
    w = _watch(broker, topic)
    _with_will(broker, version, topic, b"last", retain=True).abort()
    assert w.get().payload == b"last"
    late = Paho(broker)
    late.subscribe(topic, 1)
    m = late.get()
    assert (m.payload, m.retain) == (b"last", True)


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_will_on_protocol_violation(broker, version):
    """[MQTT-3.1.2-8] the will is published when the server closes the connection for a protocol error."""
    topic = uid("will")
    w = _watch(broker, topic)
    c = _with_will(broker, version, topic, b"err")
    c.publish("bad/#", b"x")  # wildcard in a topic name [MQTT-3.3.2-2]
    c.expect_closed()
    assert w.get().payload == b"err"


def test_v5_will_delay(broker):
    """v5 [MQTT-3.1.3-9]: with Will Delay Interval the will is published after the delay, not at once."""
    topic = uid("will")
    w = _watch(broker, topic)
    c = _with_will(broker, MQTT5, topic, b"late", will_props={P_WILL_DELAY: 2}, connect_props={P_SESSION_EXPIRY: 60})
    closed = time.monotonic()
    c.abort()
    with pytest.raises(queue.Empty):
        w.get(timeout=0.8)  # bounded negative check, well inside the 2 s delay
    m = w.get(timeout=6)
    assert m.payload == b"late"
    assert time.monotonic() - closed >= 1.5


def test_v5_will_delay_cancelled_by_reconnect(broker):
    """v5 [MQTT-3.1.3-9]: a new connection to the session before the delay elapses cancels the will."""
    topic, marker = uid("will"), uid("marker")
    w = _watch(broker, topic, marker)
    cid = uid("wd")
    c = _with_will(
        broker,
        MQTT5,
        topic,
        b"never",
        will_props={P_WILL_DELAY: 1},
        connect_props={P_SESSION_EXPIRY: 60},
        client_id=cid,
    )
    c.abort()
    back = RawClient(broker.host, broker.port, MQTT5)
    ack = back.connect(cid, clean=False, properties={P_SESSION_EXPIRY: 60})
    assert ack.rc == 0 and ack.session_present
    # Wait past the delay (Mosquitto's timers have 1 s granularity), then sync with a marker.
    time.sleep(2.5)
    back.publish_acked(marker, b"m", qos=1)
    assert [m.topic for m in w.until(marker)] == [marker]


def test_v5_session_expiry_shorter_than_will_delay(broker):
    """v5 [MQTT-3.1.2-?] / 3.1.3.2.2: the will is published when the session ends, even if the will
    delay is longer."""
    topic = uid("will")
    w = _watch(broker, topic)
    c = _with_will(
        broker, MQTT5, topic, b"session-end", will_props={P_WILL_DELAY: 60}, connect_props={P_SESSION_EXPIRY: 1}
    )
    c.abort()
    assert w.get(timeout=8).payload == b"session-end"


def test_v5_will_properties_forwarded(broker):
    """v5 will properties (content type, user property, response topic) travel with the will."""
    from mqtt_helpers import P_CONTENT_TYPE, P_RESPONSE_TOPIC, P_USER_PROPERTY

    topic = uid("will")
    sub = raw(broker, MQTT5)
    sub.subscribe((topic, 1))
    c = _with_will(
        broker,
        MQTT5,
        topic,
        b"{}",
        will_props=[(P_CONTENT_TYPE, "application/json"), (P_RESPONSE_TOPIC, "re/ply"), (P_USER_PROPERTY, ("k", "v"))],
    )
    c.abort()
    (m,) = sub.messages(1)
    assert m.props.get(P_CONTENT_TYPE) == "application/json"
    assert m.props.get(P_RESPONSE_TOPIC) == "re/ply"
    assert m.props.get(P_USER_PROPERTY) == [("k", "v")]
