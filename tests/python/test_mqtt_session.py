"""Persistent sessions: session present, stored subscriptions, offline queues, redelivery, expiry."""

import time

import pytest

from mqtt_helpers import (
    MQTT5,
    MQTT311,
    P_SESSION_EXPIRY,
    PUBLISH,
    PUBREL,
    QUIET,
    RawClient,
    ack_packet,
    disconnect_packet,
    expect_disconnect,
    raw,
    uid,
)

VERSIONS = pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])


def persistent(broker, version, cid, expiry=300, clean=False):
    """Connects with a session that outlives the connection (3.1.1 CleanSession=0; v5 Clean Start=0
    and a Session Expiry Interval)."""
    c = RawClient(broker.host, broker.port, version)
    p = {P_SESSION_EXPIRY: expiry} if version == MQTT5 else None
    ack = c.connect(cid, clean=clean, properties=p)
    assert ack.rc == 0, ack
    c.connack = ack
    return c


def offline(c) -> None:
    """Disconnects cleanly and waits until the broker has closed its side (so it has processed it)."""
    c.send(disconnect_packet(c.version))
    c.expect_closed()


@VERSIONS
def test_session_present_flag(broker, version):
    """[MQTT-3.2.2-2/3] session present is 0 for a new session and 1 when resuming one; a clean
    connect always gets 0 [MQTT-3.2.2-1]."""
    cid = uid("sp")
    c = persistent(broker, version, cid)
    assert not c.connack.session_present
    offline(c)
    c = persistent(broker, version, cid)
    assert c.connack.session_present
    offline(c)
    c = persistent(broker, version, cid, clean=True)
    assert not c.connack.session_present


@VERSIONS
@pytest.mark.parametrize("qos", [1, 2])
def test_subscriptions_survive_and_offline_messages_delivered(broker, version, qos):
    """[MQTT-3.1.2-4/5]: a resumed session keeps its subscriptions, and QoS 1/2 messages published
    while the client was away are delivered on reconnect, in order."""
    cid, topic = uid("off"), uid("off/t")
    c = persistent(broker, version, cid)
    c.subscribe((topic, qos))
    offline(c)
    pub = raw(broker, version)
    for i in range(5):
        pub.publish_acked(topic, str(i).encode(), qos=qos)
    c = persistent(broker, version, cid)
    assert c.connack.session_present
    got = c.messages(5)
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(m.qos == qos for m in got)
    # and the stored subscription still works for live messages
    pub.publish_acked(topic, b"live", qos=qos)
    assert [m.payload for m in c.messages(1)] == [b"live"]


def test_qos0_not_queued_for_offline_session_by_default(broker):
    """QoS 0 messages MAY be queued for an offline session (spec 3.1.2.4); by default neither Mosquitto
    (queue_qos0_messages false) nor uringmq queues them."""
    cid, topic, marker = uid("q0"), uid("q0/t"), uid("marker")
    c = persistent(broker, MQTT311, cid)
    c.subscribe((topic, 1), (marker, 1))
    offline(c)
    pub = raw(broker, MQTT311)
    pub.publish(topic, b"zero", qos=0)
    pub.publish_acked(marker, b"m", qos=1)
    c = persistent(broker, MQTT311, cid)
    assert [m.topic for m in c.messages(1)] == [marker]


def test_qos0_queued_when_enabled(make_broker):
    b = make_broker(queue_qos0_messages=True)
    cid, topic = uid("q0"), uid("q0/t")
    c = persistent(b, MQTT311, cid)
    c.subscribe((topic, 0))
    offline(c)
    pub = raw(b, MQTT311)
    pub.publish(topic, b"zero", qos=0)
    pub.publish_acked(uid("sync"), b"", qos=1)  # same publisher: the QoS 0 one was routed before this
    c = persistent(b, MQTT311, cid)
    (m,) = c.messages(1)
    assert (m.payload, m.qos) == (b"zero", 0)


@VERSIONS
def test_unacked_qos1_resent_with_dup_on_reconnect(broker, version):
    """[MQTT-4.4.0-1] on reconnect with a session, unacknowledged PUBLISH packets are re-sent with
    the original packet id and DUP=1 [MQTT-3.3.1-1]."""
    cid, topic = uid("dup"), uid("dup/t")
    c = persistent(broker, version, cid)
    c.subscribe((topic, 1))
    raw(broker, version).publish_acked(topic, b"unacked", qos=1)
    (first,) = c.messages(1, auto_ack=False)
    assert not first.dup
    c.abort()
    c = persistent(broker, version, cid)
    (again,) = c.messages(1, auto_ack=False)
    assert (again.payload, again.pid, again.dup, again.qos) == (b"unacked", first.pid, True, 1)
    c.ack(again)
    offline(c)
    c = persistent(broker, version, cid)
    assert [p for p in c.drain(QUIET) if p.type == PUBLISH] == []


@VERSIONS
def test_qos2_flow_resumes_after_reconnect(broker, version):
    """[MQTT-4.4.0-1] a QoS 2 message whose PUBREC was sent but PUBCOMP not: the server re-sends
    PUBREL (not the PUBLISH) on reconnect, and the message is not delivered again."""
    cid, topic = uid("q2"), uid("q2/t")
    c = persistent(broker, version, cid)
    c.auto_pubcomp = False
    c.subscribe((topic, 2))
    raw(broker, version).publish_acked(topic, b"two", qos=2)
    (m,) = c.messages(1, auto_ack=False)
    c.send(ack_packet(5, m.pid, version))  # PUBREC
    assert c.expect(PUBREL).pid == m.pid
    c.abort()
    c = persistent(broker, version, cid)
    c.auto_pubcomp = False
    rel = c.expect(PUBREL)
    assert rel.pid == m.pid
    c.send(ack_packet(7, m.pid, version))  # PUBCOMP
    assert [p for p in c.drain(QUIET) if p.type == PUBLISH] == []


@VERSIONS
def test_clean_start_discards_session(broker, version):
    """[MQTT-3.1.2-6] / v5 [MQTT-3.1.2-4]: a clean connect discards the old session: no session
    present, no subscriptions, no queued messages."""
    cid, topic, marker = uid("cl"), uid("cl/t"), uid("marker")
    c = persistent(broker, version, cid)
    c.subscribe((topic, 1))
    offline(c)
    pub = raw(broker, version)
    pub.publish_acked(topic, b"queued", qos=1)
    c = persistent(broker, version, cid, clean=True)
    assert not c.connack.session_present
    c.subscribe((marker, 1))
    pub.publish_acked(topic, b"live", qos=1)
    pub.publish_acked(marker, b"m", qos=1)
    assert [m.topic for m in c.messages(1)] == [marker]


def test_v5_session_expiry_zero_ends_session_at_disconnect(broker):
    """v5 [MQTT-3.1.2-23]: Session Expiry Interval absent/0: the session ends with the connection."""
    cid = uid("se0")
    c = persistent(broker, MQTT5, cid, expiry=0)
    c.subscribe((uid("t"), 1))
    offline(c)
    c = persistent(broker, MQTT5, cid, expiry=0)
    assert not c.connack.session_present


def test_v5_session_expiry_ends_session(broker):
    """v5 [MQTT-4.1.0-?]: the session and its subscriptions are discarded once the expiry elapses."""
    cid, topic = uid("se"), uid("se/t")
    c = persistent(broker, MQTT5, cid, expiry=1)
    c.subscribe((topic, 1))
    offline(c)
    still = persistent(broker, MQTT5, cid, expiry=1)
    assert still.connack.session_present
    offline(still)
    # Past the expiry (Mosquitto checks expiry on a 1 s tick), the session is gone.
    time.sleep(2.5)
    c = persistent(broker, MQTT5, cid, expiry=1)
    assert not c.connack.session_present


def test_v5_session_expiry_set_on_disconnect(broker):
    """v5 [MQTT-3.14.2-?]: DISCONNECT may change a non-zero Session Expiry Interval; 0 ends the session."""
    cid = uid("sed")
    c = persistent(broker, MQTT5, cid, expiry=300)
    c.send(disconnect_packet(MQTT5, 0, {P_SESSION_EXPIRY: 0}))
    c.expect_closed()
    c = persistent(broker, MQTT5, cid)
    assert not c.connack.session_present


def test_v5_disconnect_setting_expiry_after_zero_is_protocol_error(broker):
    """v5 [MQTT-3.14.2-2]: Session Expiry 0 in CONNECT and non-zero in DISCONNECT is a Protocol Error."""
    c = persistent(broker, MQTT5, uid("sez"), expiry=0, clean=True)
    c.send(disconnect_packet(MQTT5, 0, {P_SESSION_EXPIRY: 60}))
    expect_disconnect(c, 0x82)


def test_offline_queue_bound_keeps_oldest(make_broker):
    """max_queued_messages bounds an offline session's queue. Beyond it, new messages are dropped and the
    oldest are kept: Mosquitto 2.0.11 with max_queued_messages 5 delivers exactly messages 0-4 of 30 on
    reconnect (measured), and uringmq does the same."""
    b = make_broker(max_queued_messages=5)
    cid, topic = uid("qb"), uid("qb/t")
    c = persistent(b, MQTT311, cid)
    c.subscribe((topic, 1))
    offline(c)
    pub = raw(b, MQTT311)
    for i in range(30):
        pub.publish_acked(topic, str(i).encode(), qos=1)
    c = persistent(b, MQTT311, cid)
    got = [int(m.payload) for m in c.messages(5)]
    got += [int(p.payload) for p in _drain_acking(c)]
    assert got == [0, 1, 2, 3, 4]


def _drain_acking(c):
    out = []
    while True:
        ps = [p for p in c.drain(QUIET) if p.type == PUBLISH]
        if not ps:
            return out
        for p in ps:
            c.ack(p)
        out += ps
