"""Retained messages: store, replace, delete, delivery on subscribe, the RETAIN flag, retain handling."""

import pytest

from mqtt_helpers import (
    DISCONNECT,
    MQTT5,
    MQTT311,
    P_RETAIN_AVAILABLE,
    PUBLISH,
    QUIET,
    Paho,
    expect_disconnect,
    raw,
    sub_options,
    uid,
)

VERSIONS = pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])


def _sub(c, f, qos=1, **opts):
    if c.version == MQTT5:
        return c.subscribe((f, sub_options(qos, **opts)))
    return c.subscribe((f, qos))


@VERSIONS
def test_retained_delivered_on_subscribe_with_retain_flag(broker, version):
    """[MQTT-3.3.1-5/6] a retained message is stored and sent to new matching subscribers with RETAIN=1
    [MQTT-3.3.1-8], at min(stored QoS, granted QoS)."""
    topic = uid("ret")
    pub = raw(broker, version)
    pub.publish_acked(topic, b"kept", qos=1, retain=True)
    for qos, expected in ((2, 1), (0, 0)):
        sub = raw(broker, version)
        _sub(sub, topic, qos)
        (m,) = sub.messages(1)
        assert (m.topic, m.payload, m.retain, m.qos) == (topic, b"kept", True, expected)


def test_retained_matched_by_wildcards(broker):
    base = uid("rw")
    pub = raw(broker, MQTT311)
    for t in ("a", "b/c", "b/d"):
        pub.publish_acked(f"{base}/{t}", t.encode(), qos=1, retain=True)
    sub = raw(broker, MQTT311)
    sub.subscribe((f"{base}/b/+", 1))
    got = sorted(m.payload for m in sub.messages(2))
    assert got == [b"b/c", b"b/d"]
    sub2 = raw(broker, MQTT311)
    sub2.subscribe((f"{base}/#", 1))
    assert sorted(m.payload for m in sub2.messages(3)) == [b"a", b"b/c", b"b/d"]


@VERSIONS
def test_retained_replaced_by_newer(broker, version):
    """[MQTT-3.3.1-5] a new retained message replaces the stored one."""
    topic = uid("rep")
    pub = raw(broker, version)
    pub.publish_acked(topic, b"old", qos=1, retain=True)
    pub.publish_acked(topic, b"new", qos=1, retain=True)
    sub = raw(broker, version)
    _sub(sub, topic)
    assert [m.payload for m in sub.messages(1)] == [b"new"]
    assert [p for p in sub.drain(QUIET) if p.type == PUBLISH] == []


@VERSIONS
def test_empty_retained_payload_deletes(broker, version):
    """[MQTT-3.3.1-10/11] a retained PUBLISH with an empty payload removes the retained message and is
    not stored itself; it is still forwarded to current subscribers [MQTT-3.3.1-12?]."""
    topic, marker = uid("del"), uid("marker")
    current = raw(broker, version)
    _sub(current, topic)
    pub = raw(broker, version)
    pub.publish_acked(topic, b"x", qos=1, retain=True)
    pub.publish_acked(topic, b"", qos=1, retain=True)
    assert [m.payload for m in current.messages(2)] == [b"x", b""]
    late = raw(broker, version)
    _sub(late, topic)
    _sub(late, marker)
    pub.publish_acked(marker, b"m", qos=1)
    assert [m.topic for m in late.messages(1)] == [marker]


def test_live_messages_have_retain_0_for_v3(broker):
    """[MQTT-3.3.1-9] a retained message forwarded to an existing subscription has RETAIN=0 (3.1.1)."""
    topic = uid("live")
    sub = raw(broker, MQTT311)
    sub.subscribe((topic, 1))
    raw(broker, MQTT311).publish_acked(topic, b"x", qos=1, retain=True)
    (m,) = sub.messages(1)
    assert m.payload == b"x" and not m.retain


@pytest.mark.parametrize("rap", [False, True], ids=["rap0", "rap1"])
def test_v5_retain_as_published(broker, rap):
    """v5 [MQTT-3.3.1-12/13]: live forwarding keeps RETAIN only when Retain As Published is set."""
    topic = uid("rap")
    sub = raw(broker, MQTT5)
    _sub(sub, topic, rap=rap)
    pub = raw(broker, MQTT5)
    pub.publish_acked(topic, b"r", qos=1, retain=True)
    pub.publish_acked(topic, b"n", qos=1, retain=False)
    got = sub.messages(2)
    assert [(m.payload, m.retain) for m in got] == [(b"r", rap), (b"n", False)]


def test_v5_retain_handling(broker):
    """v5 [MQTT-3.3.1-9/10/11]: Retain Handling 0 sends retained at every subscribe, 1 only when the
    subscription is new, 2 never."""
    base = uid("rh")
    marker = f"{base}/marker"
    pub = raw(broker, MQTT5)
    pub.publish_acked(f"{base}/t", b"kept", qos=1, retain=True)

    def retained_after_subscribe(c, rh):
        _sub(c, f"{base}/t", rh=rh)
        pub.publish_acked(marker, b"", qos=1)
        got = []
        while True:
            (m,) = c.messages(1)
            if m.topic == marker:
                return got
            got.append(m.payload)

    for rh, first, second in ((0, [b"kept"], [b"kept"]), (1, [b"kept"], []), (2, [], [])):
        c = raw(broker, MQTT5)
        _sub(c, marker)
        assert retained_after_subscribe(c, rh) == first, f"rh={rh} on a new subscription"
        assert retained_after_subscribe(c, rh) == second, f"rh={rh} on a replaced subscription"


@pytest.mark.xfail_mosquitto(reason="2.0.11 sends retained messages to new $share subscriptions")
def test_v5_no_retained_to_shared_subscription(broker):
    """v5 4.8.2 / [MQTT-3.8.4-?]: retained messages are not sent to a shared subscription."""
    topic = uid("rs")
    marker = uid("marker")
    pub = raw(broker, MQTT5)
    pub.publish_acked(topic, b"kept", qos=1, retain=True)
    sub = raw(broker, MQTT5)
    _sub(sub, f"$share/g/{topic}")
    _sub(sub, marker)
    pub.publish_acked(marker, b"", qos=1)
    assert [m.topic for m in sub.messages(1)] == [marker]


def test_retain_not_available(make_broker):
    """retain_available=false: v5 CONNACK Retain Available 0 [MQTT-3.2.2-?]; a retained PUBLISH is a
    protocol error answered with DISCONNECT 0x9A (Retain not supported) [MQTT-3.3.1-?]."""
    b = make_broker(retain_available=False)
    c = raw(b, MQTT5)
    assert c.connack.props.get(P_RETAIN_AVAILABLE) == 0
    c.publish(uid("r"), b"x", qos=1, retain=True)
    d = expect_disconnect(c, 0x9A)
    assert d is not None and d.type == DISCONNECT


def test_retained_qos0_stored(broker):
    """Retained messages of every QoS are stored, including QoS 0 (paho as both ends)."""
    topic = uid("r0")
    p = Paho(broker)
    p.publish(topic, b"zero", qos=0, retain=True)
    # A QoS 1 publish from the same client after it: once acknowledged, the QoS 0 one was processed.
    p.publish(topic + "/sync", b"", qos=1)
    sub = Paho(broker)
    sub.subscribe(topic, 1)
    m = sub.get()
    assert (m.payload, m.retain, m.qos) == (b"zero", True, 0)
