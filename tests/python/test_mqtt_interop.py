"""Normative statements (server side, MQTT 3.1.1 and 5.0) that the Paho interoperability suite and
spec-driven checkers exercise and the other files of this suite did not: DUP propagation, data after a
rejected CONNECT, literal UNSUBSCRIBE matching, no topic normalization, server packet identifiers,
wills on takeover, and CONNECT/SUBSCRIBE fields that must be refused.

Each test names the statement it checks; ids are the 3.1.1 ones, with the 5.0 id where it differs.
"""

import struct

import pytest
from mqtt_helpers import (
    CONNACK,
    DISCONNECT,
    MQTT5,
    MQTT311,
    PINGREQ,
    PINGRESP,
    SUBACK,
    UNSUBACK,
    RawClient,
    connect_packet,
    packet,
    publish_packet,
    raw,
    s,
    subscribe_packet,
    uid,
    unsubscribe_packet,
)

V = pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])


def _refused(c: RawClient) -> list:
    """Waits for the broker to close ``c`` and checks it never accepted the connection: no CONNACK 0,
    and no DISCONNECT before a successful CONNACK (v5 [MQTT-3.14.0-1])."""
    seen = c.expect_closed()
    for p in seen:
        assert p.type != DISCONNECT, f"DISCONNECT sent before a successful CONNACK [MQTT-3.14.0-1]: {seen!r}"
        if p.type == CONNACK:
            assert p.rc != 0, f"connection accepted: {p!r}"
            assert not p.session_present, f"refused CONNACK with session present [MQTT-3.2.2-4]: {p!r}"
    return seen


# -- PUBLISH ----------------------------------------------------------------------------------------


@V
def test_dup_flag_not_propagated(broker, version):
    """[MQTT-3.3.1-3] the DUP flag of an incoming PUBLISH is not propagated to subscribers: a first
    delivery has DUP=0 whatever the publisher sent; and QoS 0 deliveries have DUP=0 [MQTT-3.3.1-2]."""
    topic = uid("dup")
    sub = raw(broker, version)
    sub.subscribe((topic, 2))
    pub = raw(broker, version)
    pid = pub.publish(topic, b"q1", qos=1, dup=True)
    pub.expect(4, pid=pid)
    pub.publish_acked(topic, b"q2", qos=2)
    pub.publish(topic, b"q0", qos=0)
    msgs = sub.messages(3)
    assert [m.payload for m in msgs] == [b"q1", b"q2", b"q0"]
    assert [m.dup for m in msgs] == [False, False, False], msgs


@V
def test_server_packet_ids_unique_while_in_flight(broker, version):
    """[MQTT-2.3.1-2] / v5 [MQTT-2.2.1-4]: each new QoS>0 PUBLISH the server sends has a non-zero packet
    identifier not currently in use; a QoS 2 id stays in use until PUBCOMP, so ids answered only by
    PUBREC are not reused for later messages."""
    topic = uid("pids")
    sub = raw(broker, version)
    sub.auto_pubcomp = False
    sub.subscribe((topic, 2))
    pub = raw(broker, version)
    for i in range(6):
        pub.publish_acked(topic, b"%d" % i, qos=2 if i % 2 else 1)
    first = sub.messages(6, auto_ack=False)
    # Complete only the first step of each QoS 2 flow: those ids remain in use.
    for m in first:
        if m.qos == 2:
            sub.ack(m)
    rels = [sub.expect(6) for m in first if m.qos == 2]
    assert sorted(r.pid for r in rels) == sorted(m.pid for m in first if m.qos == 2)
    for i in range(6):
        pub.publish_acked(topic, b"n%d" % i, qos=1)
    later = sub.messages(6, auto_ack=False)
    ids = [m.pid for m in first + later]
    assert all(ids), ids
    assert len(set(ids)) == len(ids), f"packet id reused while in flight: {ids}"


@V
def test_no_topic_normalization(broker, version):
    """[MQTT-4.7.3-4] the server does not normalize topic names or filters: NFC and NFD forms of the same
    text are different topics, and a leading U+FEFF is part of the topic [MQTT-1.5.3-3]."""
    base = uid("norm")
    nfc, nfd, bom = f"{base}/caf\u00e9", f"{base}/cafe\u0301", f"\ufeff{base}/x"
    sub = raw(broker, version)
    sub.subscribe((nfc, 1), (bom, 1))
    pub = raw(broker, version)
    pub.publish_acked(nfd, b"decomposed", qos=1)
    pub.publish_acked(f"{base}/x", b"no-bom", qos=1)
    pub.publish_acked(bom, b"bom", qos=1)
    pub.publish_acked(nfc, b"composed", qos=1)
    got = sub.messages(2)
    got += sub.drain()
    assert sorted((m.topic, m.payload) for m in got) == sorted([(bom, b"bom"), (nfc, b"composed")]), got


# -- CONNECT ----------------------------------------------------------------------------------------


@V
def test_data_after_rejected_connect_not_processed(make_broker, version):
    """[MQTT-3.1.4-5] / v5 [MQTT-3.1.4-6]: when the server rejects a CONNECT it does not process the
    packets the client sent after it. The rejected CONNECT carries a will at a QoS above the server's
    maximum (v5 [MQTT-3.2.2-12]; 3.1.1: CONNACK 0x02 for an empty client id with CleanSession=0
    [MQTT-3.1.3-8]); a retained PUBLISH follows in the same write and must not be stored."""
    b = make_broker(max_qos=1)
    topic = uid("after-reject")
    if version == MQTT311:
        conn = connect_packet("", version=version, clean=False)
    else:
        conn = connect_packet(
            uid("rej"),
            version=version,
            will={"topic": uid("w"), "payload": b"w", "qos": 2},
        )
    c = RawClient(b.host, b.port, version)
    c.send(conn + publish_packet(topic, b"must-not-be-stored", qos=0, retain=True, version=version))
    _refused(c)
    probe = raw(b, version)
    probe.subscribe((topic, 1))
    assert probe.drain() == [], "a PUBLISH sent after a rejected CONNECT was processed"


def test_client_id_of_23_alphanumerics_accepted(broker):
    """[MQTT-3.1.3-5] the server accepts client ids of 1 to 23 characters from [0-9a-zA-Z]."""
    for cid in ("0123456789abcdefghijKLM", "Z"):
        c = RawClient(broker.host, broker.port)
        assert c.connect(cid).rc == 0
        c.disconnect()


@V
def test_will_retain_without_will_flag_refused(broker, version):
    """[MQTT-3.1.2-15] / v5 [MQTT-3.1.2-13]: Will Retain must be 0 when the Will Flag is 0; a CONNECT
    with it set is malformed and the connection is closed without being accepted."""
    body = s("MQTT") + bytes([version, 0x02 | 0x20]) + struct.pack("!H", 60)
    if version == MQTT5:
        body += b"\x00"
    body += s(uid("wr"))
    c = RawClient(broker.host, broker.port, version)
    c.send(packet(1, 0, body))
    _refused(c)


@V
def test_user_name_flag_without_user_name_refused(broker, version):
    """[MQTT-3.1.2-19] / v5 [MQTT-3.1.2-17]: with the User Name Flag set a user name must be present; a
    CONNECT that ends before it is malformed."""
    body = s("MQTT") + bytes([version, 0x02 | 0x80]) + struct.pack("!H", 60)
    if version == MQTT5:
        body += b"\x00"
    body += s(uid("un"))
    c = RawClient(broker.host, broker.port, version)
    c.send(packet(1, 0, body))
    _refused(c)


@V
@pytest.mark.parametrize("will_topic", ["w/#", "w/+/x", ""], ids=["hash", "plus", "empty"])
def test_will_topic_must_be_a_valid_topic_name(broker, version, will_topic):
    """[MQTT-3.1.3-10] / v5 [MQTT-3.1.3-11]: the Will Topic is a topic name, so no wildcards
    [MQTT-3.3.2-2] and at least one character [MQTT-4.7.3-1]; such a CONNECT is refused (v5: CONNACK
    0x90 Topic Name invalid, or 0x81/0x82), and no will can ever be published on it."""
    c = RawClient(broker.host, broker.port, version)
    c.send(connect_packet(uid("wt"), version=version, will={"topic": will_topic, "payload": b"x"}))
    _refused(c)


@pytest.mark.parametrize(
    "version,will_delay",
    [
        (MQTT311, None),
        (MQTT5, 0),
        pytest.param(
            MQTT5,
            30,
            marks=pytest.mark.xfail_mosquitto(
                reason="2.0.11 does not publish a delayed will when a Clean Start=1 takeover ends its session"
            ),
        ),
    ],
    ids=["3.1.1", "5.0", "5.0-delayed-will-session-ends"],
)
def test_will_published_when_taken_over(broker, version, will_delay):
    """[MQTT-3.1.4-3] a CONNECT with the client id of a connected client closes the existing connection;
    that close is not a DISCONNECT from the client, so its will is published [MQTT-3.1.2-8]. v5: the new
    connection has Clean Start=1, which ends the old session [MQTT-3.1.2-4], so even a delayed will is
    due at once (3.1.2.5: 'until the Will Delay Interval has passed or the Session ends, whichever
    happens first')."""
    topic = uid("takeover-will")
    watcher = raw(broker, version)
    watcher.subscribe((topic, 1))
    cid = uid("tw")
    will = {"topic": topic, "payload": b"taken-over", "qos": 1}
    kw = {}
    if version == MQTT5:
        will["props"] = {0x18: will_delay}
        kw["properties"] = {0x11: 60}
    old = raw(broker, version, cid, will=will, **kw)
    new = raw(broker, version, cid)
    old.expect_closed()
    (m,) = watcher.messages(1)
    assert (m.topic, m.payload) == (topic, b"taken-over")
    assert new.is_open()


# -- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version,opts",
    [(MQTT311, 0x03), (MQTT311, 0x04 | 0x01), (MQTT5, 0x03)],
    ids=["3.1.1-qos3", "3.1.1-reserved-bit2", "5.0-qos3"],
)
def test_subscribe_bad_requested_qos_closes(broker, version, opts):
    """3.1.1 [MQTT-3.8.3-4]: non-zero reserved bits in the Requested QoS byte, or QoS 3, is malformed:
    close without granting. 5.0: QoS 3 is a Malformed Packet (3.8.3.1; bit 2 is No Local there, and
    the reserved bits 6-7 [MQTT-3.8.3-5] are tested in test_mqtt_subscribe.py)."""
    c = raw(broker, version)
    c.send(subscribe_packet(1, [(uid("q"), opts)], version))
    seen = c.expect_closed()
    assert not any(p.type == SUBACK and p.codes and p.codes[0] < 0x80 for p in seen), seen


def test_v5_retain_handling_3_is_protocol_error(broker):
    """v5 3.8.3.1: Retain Handling 3 is a Protocol Error: DISCONNECT (0x82, or 0x81) and close."""
    c = raw(broker, MQTT5)
    c.send(subscribe_packet(1, [(uid("rh"), 0x30 | 1)], MQTT5))
    seen = c.expect_closed()
    final = [p for p in seen if p.type == DISCONNECT]
    assert not any(p.type == SUBACK and p.codes and p.codes[0] < 0x80 for p in seen), seen
    if final:
        assert final[-1].rc in (0x81, 0x82), final


@V
def test_unsubscribe_compares_filters_character_by_character(broker, version):
    """[MQTT-3.10.4-1] UNSUBSCRIBE filters are compared literally with the session's filters: `base/#`
    removes neither `base/a` nor `base/+`, and removing `base/+` leaves `base/a` delivering. v5: a filter
    that matched none answers 0x11 [MQTT-3.11.3-?]."""
    base = uid("unsub-lit")
    c = raw(broker, version)
    c.subscribe((f"{base}/a", 1), (f"{base}/+", 1))
    ack = c.unsubscribe(f"{base}/#")
    if version == MQTT5:
        assert ack.codes == [0x11], ack
    pub = raw(broker, version)
    pub.publish_acked(f"{base}/a", b"one", qos=1)
    assert [m.payload for m in c.messages(1)] == [b"one"]
    c.drain()  # a second copy (one per matching subscription) is allowed [MQTT-3.3.4-2]
    ack = c.unsubscribe(f"{base}/+")
    if version == MQTT5:
        assert ack.codes == [0x00], ack
    pub.publish_acked(f"{base}/a", b"two", qos=1)
    pub.publish_acked(f"{base}/b", b"not-for-me", qos=1)
    pub.publish_acked(f"{base}/a", b"three", qos=1)
    got = c.messages(2)
    got += c.drain()
    assert [m.payload for m in got] == [b"two", b"three"], got


@V
def test_unsubscribe_many_filters_one_unsuback(broker, version):
    """[MQTT-3.10.4-6] an UNSUBSCRIBE with several filters is handled as a sequence but answered with a
    single UNSUBACK (v5: one reason code per filter, in order [MQTT-3.11.3-1])."""
    base = uid("unsub-many")
    c = raw(broker, version)
    c.subscribe((f"{base}/1", 0), (f"{base}/2", 0), (f"{base}/3", 0))
    c.send(unsubscribe_packet(7, [f"{base}/1", f"{base}/nope", f"{base}/3"], version))
    c.send(packet(PINGREQ, 0, b""))
    first = c.recv()
    assert first.type == UNSUBACK and first.pid == 7, first
    if version == MQTT5:
        assert first.codes == [0x00, 0x11, 0x00], first
    assert c.recv().type == PINGRESP, "more than one UNSUBACK"
    pub = raw(broker, version)
    for n in (1, 2, 3):
        pub.publish_acked(f"{base}/{n}", b"%d" % n, qos=1)
    got = c.messages(1)
    got += c.drain()
    assert [m.topic for m in got] == [f"{base}/2"], got


@V
@pytest.mark.parametrize(
    "name",
    ["MQTX", "mqtt", "MQIsdp"],
    ids=["other", "lowercase", "v31-name-wrong-level"],
)
def test_wrong_protocol_name_refused(broker, version, name):
    """[MQTT-3.1.2-1]: a CONNECT whose Protocol Name is not the one of its level ("MQTT" for 3.1.1 and
    5.0) is not processed as MQTT: the server closes (v5: CONNACK 0x84/0x81/0x82 first allowed) and
    never accepts it."""
    c = RawClient(broker.host, broker.port, version)
    c.send(connect_packet(uid("pn"), version=version, protocol_name=name))
    _refused(c)
