"""SUBSCRIBE / UNSUBSCRIBE: SUBACK and UNSUBACK codes, QoS caps, replacing subscriptions."""

import pytest

from mqtt_helpers import (
    DISCONNECT,
    MQTT5,
    MQTT311,
    P_MAXIMUM_QOS,
    PUBLISH,
    QUIET,
    SUBACK,
    Closed,
    Paho,
    expect_disconnect,
    raw,
    sub_options,
    subscribe_packet,
    uid,
)

VERSIONS = pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])


@VERSIONS
def test_suback_one_code_per_filter_in_order(broker, version):
    """[MQTT-3.8.4-1] SUBACK with the same packet id; [MQTT-3.9.3-1] one code per filter, in order."""
    c = raw(broker, version)
    base = uid("sa")
    ack = c.subscribe((f"{base}/0", 0), (f"{base}/2", 2), (f"{base}/1", 1), (f"{base}/+/#", 2))
    assert ack.codes == [0, 2, 1, 2]


@VERSIONS
@pytest.mark.parametrize("bad", ["a/#/b", "a/b#", "a+/b", ""], ids=["hash-mid", "hash-glued", "plus-glued", "empty"])
def test_invalid_filter_fails_only_that_filter_or_closes(broker, version, bad):
    """An invalid filter [MQTT-4.7.1-1/2, MQTT-4.7.3-1] is a protocol violation. The spec leaves two
    answers: a failure code for that filter (0x80; v5 0x8F or 0x80) with the others granted, or closing the
    connection (v5: DISCONNECT 0x81/0x82/0x8F first). Mosquitto closes. Either way the filter never
    takes effect, and other clients are unaffected."""
    other = raw(broker, version)
    c = raw(broker, version)
    c.send(subscribe_packet(3, [("ok/a", 0), (bad, 1), ("ok/b", 2)], version))
    try:
        p = c.recv()
    except Closed:
        p = None  # closed without a reason code: allowed
    if p is not None and p.type == SUBACK:
        failure = (0x80,) if version == MQTT311 else (0x80, 0x8F)
        assert p.codes[0] == 0 and p.codes[1] in failure and p.codes[2] == 2, p
    elif p is not None:
        assert p.type == DISCONNECT and p.rc in (0x81, 0x82, 0x8F), p
        c.expect_closed()
    assert other.is_open()


def test_v5_disconnect_code_on_invalid_filter(broker):
    """When the connection is closed for an invalid filter, a v5 client gets a reason code first."""
    c = raw(broker, MQTT5)
    c.send(subscribe_packet(9, [("a/#/b", 0)], MQTT5))
    try:
        p = c.recv()
    except Closed:
        pytest.fail("closed without a DISCONNECT reason code")
    if p.type == SUBACK:
        assert p.codes[0] in (0x80, 0x8F)
    else:
        assert p.type == DISCONNECT and p.rc in (0x81, 0x82, 0x8F), p
        c.expect_closed()


@VERSIONS
def test_granted_qos_capped_by_max_qos(make_broker, version):
    """The server may grant a lower QoS than asked [MQTT-3.9.3-?]; with max_qos=1 a QoS 2
    subscription is granted 1 and QoS 2 messages arrive at QoS 1. v5 CONNACK says Maximum QoS 1."""
    b = make_broker(max_qos=1)
    topic = uid("cap")
    sub = raw(b, version)
    if version == MQTT5:
        assert sub.connack.props.get(P_MAXIMUM_QOS) == 1
    assert sub.subscribe((topic, 2)).codes == [1]
    pub = raw(b, version)
    pub.publish_acked(topic, b"x", qos=1)
    (m,) = sub.messages(1)
    assert m.qos == 1


@VERSIONS
def test_resubscribe_replaces_subscription(broker, version):
    """[MQTT-3.8.4-3] a SUBSCRIBE with an existing filter replaces it (new QoS), no second copy."""
    topic = uid("re")
    sub = raw(broker, version)
    assert sub.subscribe((topic, 0)).codes == [0]
    assert sub.subscribe((topic, 2)).codes == [2]
    pub = raw(broker, version)
    pub.publish_acked(topic, b"1", qos=2)
    pub.publish_acked(topic, b"2", qos=2)
    got = sub.messages(2)
    assert [(m.payload, m.qos) for m in got] == [(b"1", 2), (b"2", 2)]
    assert [p for p in sub.drain(QUIET) if p.type == PUBLISH] == []


def test_resubscribe_resends_retained_v311(broker):
    """[MQTT-3.8.4-3] on a replaced subscription, matching retained messages are re-sent."""
    topic = uid("rr")
    pub = raw(broker, MQTT311)
    pub.publish_acked(topic, b"kept", qos=1, retain=True)
    sub = raw(broker, MQTT311)
    sub.subscribe((topic, 1))
    assert [m.payload for m in sub.messages(1)] == [b"kept"]
    sub.subscribe((topic, 1))
    (again,) = sub.messages(1)
    assert again.payload == b"kept" and again.retain


@VERSIONS
def test_unsubscribe_stops_delivery(broker, version):
    """[MQTT-3.10.4-1] after UNSUBACK no new messages for that filter; [MQTT-3.10.4-4] UNSUBACK has the id."""
    topic, marker = uid("un"), uid("marker")
    sub = raw(broker, version)
    sub.subscribe((topic, 1), (marker, 1))
    pub = raw(broker, version)
    pub.publish_acked(topic, b"before", qos=1)
    assert [m.payload for m in sub.messages(1)] == [b"before"]
    ack = sub.unsubscribe(topic)
    if version == MQTT5:
        assert ack.codes == [0]
    pub.publish_acked(topic, b"after", qos=1)
    pub.publish_acked(marker, b"m", qos=1)
    assert [m.topic for m in sub.messages(1)] == [marker]


def test_v5_unsuback_codes_incl_no_subscription_existed(broker):
    """v5 [MQTT-3.11.3-1]: one code per filter: 0x00 success, 0x11 no subscription existed. Filters are
    compared literally: unsubscribing `x/b` does not remove `x/+`."""
    base = uid("us")
    c = raw(broker, MQTT5)
    c.subscribe((f"{base}/+", 1), (f"{base}/a", 0))
    ack = c.unsubscribe(f"{base}/a", f"{base}/b", f"{base}/+", f"{base}/+")
    assert ack.codes == [0x00, 0x11, 0x00, 0x11]


def test_v311_unsuback_for_unknown_filter(broker):
    """3.1.1 [MQTT-3.10.4-5]: UNSUBACK even if no filter matched."""
    c = raw(broker, MQTT311)
    ack = c.unsubscribe(uid("none"))
    assert ack.codes == []


def test_subscribe_then_publish_from_other_client_is_delivered(broker):
    """Once SUBACK is received, a message published afterwards by any client is delivered."""
    topic = uid("sp")
    subs = [Paho(broker) for _ in range(5)]
    for s in subs:
        s.subscribe(topic, 1)
    Paho(broker).publish(topic, b"x", qos=1)
    for s in subs:
        assert s.get().payload == b"x"


def test_v5_subscription_options_round_trip(broker):
    """v5 subscription options with all bits set (except reserved) are accepted; reserved bits set is a
    Malformed Packet [MQTT-3.8.3-5]."""
    c = raw(broker, MQTT5)
    ack = c.subscribe((uid("opt"), sub_options(2, no_local=True, rap=True, rh=2)))
    assert ack.codes == [2]
    c.send(subscribe_packet(5, [(uid("opt"), 0xC1)], MQTT5))
    expect_disconnect(c, 0x81, 0x82)
