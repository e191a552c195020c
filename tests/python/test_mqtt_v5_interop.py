"""MQTT 5.0 normative statements (server side) exercised by the Paho interoperability suite
(client_test5.py) and spec-driven checkers that the other files of this suite did not cover: problem and
response information, topic aliases across connections, negative acknowledgements, flow control,
CONNACK refusals, enhanced authentication without a method, and properties a client must not send.
"""

import pytest
from mqtt_helpers import (
    AUTH,
    CONNACK,
    DISCONNECT,
    MQTT5,
    P_CONTENT_TYPE,
    P_MAXIMUM_PACKET_SIZE,
    P_REASON_STRING,
    P_RECEIVE_MAXIMUM,
    P_RESPONSE_TOPIC,
    P_SESSION_EXPIRY,
    P_SUBSCRIPTION_ID,
    P_TOPIC_ALIAS,
    P_USER_PROPERTY,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    Closed,
    RawClient,
    ack_packet,
    connect_packet,
    expect_disconnect,
    packet,
    props,
    raw,
    sub_options,
    subscribe_packet,
    uid,
)

P_AUTH_METHOD = 0x15
P_REQUEST_PROBLEM_INFO = 0x17
P_REQUEST_RESPONSE_INFO = 0x19
P_RESPONSE_INFORMATION = 0x1A

PROTOCOL_ERROR = 0x82


def v5(broker, cid=None, **kw) -> RawClient:
    return raw(broker, MQTT5, cid, **kw)


def persistent(broker, cid, clean=True) -> RawClient:
    """A v5 client whose session outlives the connection by 60 s."""
    return raw(broker, MQTT5, cid, clean=clean, properties={P_SESSION_EXPIRY: 60})


def _refused_with_connack(c: RawClient, *allowed_rc) -> None:
    """The connection is refused before it is accepted: closed, with at most a CONNACK >= 0x80 (one of
    ``allowed_rc`` if given) and never a DISCONNECT before a successful CONNACK [MQTT-3.14.0-1]."""
    seen = c.expect_closed()
    assert not any(p.type == DISCONNECT for p in seen), f"DISCONNECT before CONNACK [MQTT-3.14.0-1]: {seen!r}"
    acks = [p for p in seen if p.type == CONNACK]
    assert len(acks) <= 1, f"more than one CONNACK [MQTT-3.2.0-2]: {seen!r}"
    if acks:
        assert acks[0].rc >= 0x80, acks[0]
        assert not acks[0].session_present, f"refusal with Session Present [MQTT-3.2.2-6]: {acks[0]!r}"
        if allowed_rc:
            assert acks[0].rc in allowed_rc, f"CONNACK {acks[0].rc:#x}, expected one of {[hex(r) for r in allowed_rc]}"


# -- CONNECT / CONNACK ------------------------------------------------------------------------------


def test_no_response_information_unless_requested(broker):
    """[MQTT-3.1.2-28]: with Request Response Information absent or 0 the server does not send Response
    Information in CONNACK."""
    for p in (None, {P_REQUEST_RESPONSE_INFO: 0}):
        c = RawClient(broker.host, broker.port, MQTT5)
        ack = c.connect(uid("rri"), properties=p)
        assert ack.rc == 0
        assert P_RESPONSE_INFORMATION not in ack.props, ack
        c.disconnect()


def test_request_problem_information_0_suppresses_reason_strings(broker):
    """[MQTT-3.1.2-29]: with Request Problem Information 0 the server sends no Reason String or User
    Property on packets other than PUBLISH, CONNACK and DISCONNECT. The acknowledgements below are the
    ones that carry a non-success code (UNSUBACK 0x11, PUBCOMP 0x92, PUBACK/PUBREC 0x10), where a
    server is most tempted to explain itself."""
    c = v5(broker, properties={P_REQUEST_PROBLEM_INFO: 0})
    acks = [c.unsubscribe(uid("never-subscribed"))]
    c.send(ack_packet(PUBREL, 4242, MQTT5))
    acks.append(c.expect(PUBCOMP, pid=4242))
    pid = c.publish(uid("nobody-listens"), b"x", qos=1)
    acks.append(c.expect(PUBACK, pid=pid))
    pid = c.publish(uid("nobody-listens"), b"x", qos=2)
    acks.append(c.expect(PUBREC, pid=pid))
    c.send(ack_packet(PUBREL, pid, MQTT5))
    acks.append(c.expect(PUBCOMP, pid=pid))
    acks.append(c.subscribe((uid("ok"), 1)))
    for a in acks:
        assert P_REASON_STRING not in a.props and P_USER_PROPERTY not in a.props, a
    assert c.is_open()


@pytest.mark.parametrize(
    "bad_props",
    [
        {P_RECEIVE_MAXIMUM: 0},
        {P_MAXIMUM_PACKET_SIZE: 0},
        [(P_SESSION_EXPIRY, 10), (P_SESSION_EXPIRY, 10)],
        {P_REQUEST_PROBLEM_INFO: 2},
        {P_REQUEST_RESPONSE_INFO: 2},
    ],
    ids=[
        "receive-maximum-0",
        "maximum-packet-size-0",
        "session-expiry-twice",
        "rpi-2",
        "rri-2",
    ],
)
def test_connect_property_protocol_errors_refused_with_connack(broker, bad_props):
    """3.1.2.11: Receive Maximum 0, Maximum Packet Size 0, a property included twice, and Request
    Problem/Response Information other than 0 or 1 are Protocol Errors in CONNECT. The server refuses
    the connection with a CONNACK >= 0x80 (or closes), and never with a DISCONNECT: a DISCONNECT may
    only follow a successful CONNACK [MQTT-3.14.0-1]."""
    c = RawClient(broker.host, broker.port, MQTT5)
    c.send(connect_packet(uid("bad-prop"), version=MQTT5, properties=bad_props))
    _refused_with_connack(c, 0x81, 0x82)


def test_will_qos_above_maximum_qos_refused(make_broker):
    """[MQTT-3.2.2-12]: a CONNECT whose Will QoS exceeds the server's Maximum QoS is refused, CONNACK
    0x9B (QoS not supported) SHOULD be used."""
    b = make_broker(max_qos=1)
    c = RawClient(b.host, b.port, MQTT5)
    c.send(
        connect_packet(
            uid("wq"),
            version=MQTT5,
            will={"topic": uid("w"), "payload": b"x", "qos": 2},
        )
    )
    _refused_with_connack(c, 0x9B)


def test_will_retain_when_retain_unavailable_refused(make_broker):
    """[MQTT-3.2.2-13]: a CONNECT with Will Retain=1 to a server without retained messages is refused,
    CONNACK 0x9A (Retain not supported) SHOULD be used."""
    b = make_broker(retain_available=False)
    c = RawClient(b.host, b.port, MQTT5)
    c.send(
        connect_packet(
            uid("wr"),
            version=MQTT5,
            will={"topic": uid("w"), "payload": b"x", "retain": True},
        )
    )
    _refused_with_connack(c, 0x9A)


def test_unsupported_authentication_method_refused(broker):
    """[MQTT-4.12.0-1]: a server that does not support the client's Authentication Method may answer
    CONNACK 0x8C (Bad authentication method) or 0x87 (Not authorized) and MUST close the connection."""
    c = RawClient(broker.host, broker.port, MQTT5)
    c.send(connect_packet(uid("am"), version=MQTT5, properties={P_AUTH_METHOD: "X-UNSUPPORTED-1"}))
    _refused_with_connack(c, 0x8C, 0x87)


def test_auth_packet_without_authentication_method_is_protocol_error(broker):
    """[MQTT-4.12.0-?] / 3.15: a client that did not send an Authentication Method in CONNECT must not
    send AUTH; if it does, the server treats it as a Protocol Error: DISCONNECT 0x82 and close."""
    c = v5(broker)
    c.send(packet(AUTH, 0, bytes([0x18]) + props(None)))
    expect_disconnect(c, PROTOCOL_ERROR)


# -- PUBLISH ----------------------------------------------------------------------------------------


def test_topic_alias_not_carried_across_connections(broker):
    """[MQTT-3.3.2-7]: topic alias mappings do not survive the network connection, even when the
    session does: on the resumed connection a PUBLISH with an empty topic and the old alias is a
    Protocol Error (DISCONNECT 0x82)."""
    cid, topic = uid("ta"), uid("alias")
    watcher = v5(broker)
    watcher.subscribe((topic, 1))
    c = persistent(broker, cid)
    c.publish(topic, b"set", qos=1, properties={P_TOPIC_ALIAS: 1})
    c.expect(PUBACK)
    assert [m.payload for m in watcher.messages(1)] == [b"set"]
    c.disconnect()
    again = persistent(broker, cid, clean=False)
    assert again.connack.session_present
    again.publish("", b"stale-alias", qos=1, properties={P_TOPIC_ALIAS: 1})
    expect_disconnect(again, PROTOCOL_ERROR)
    assert [m for m in watcher.drain() if m.type == PUBLISH] == []


def test_client_topic_alias_resolved_for_retained_and_subscribers(broker):
    """Paho client_test5 test_client_topic_alias: a message sent by alias (empty topic) reaches
    subscribers under the full topic name [MQTT-3.3.2-3], and a retained one is stored under it, so a
    later subscriber receives the real topic."""
    topic = uid("ta-ret")
    live = v5(broker)
    live.subscribe((topic, 1))
    c = v5(broker)
    c.publish(topic, b"first", qos=1, properties={P_TOPIC_ALIAS: 2})
    c.expect(PUBACK)
    c.publish("", b"by-alias", qos=1, retain=True, properties={P_TOPIC_ALIAS: 2})
    c.expect(PUBACK)
    got = live.messages(2)
    assert [(m.topic, m.payload) for m in got] == [
        (topic, b"first"),
        (topic, b"by-alias"),
    ]
    late = v5(broker)
    late.subscribe((topic, 1))
    (r,) = late.messages(1)
    assert (r.topic, r.payload, r.retain) == (topic, b"by-alias", True)
    assert P_TOPIC_ALIAS not in r.props


@pytest.mark.xfail_mosquitto(reason="2.0.11 accepts and acknowledges it (PUBACK 0x00)")
def test_subscription_identifier_in_client_publish_is_protocol_error(broker):
    """[MQTT-3.3.4-6]: a PUBLISH from a client must not carry a Subscription Identifier; the server treats
    it as a Protocol Error (DISCONNECT 0x82, 0x81 tolerated) and does not forward it."""
    topic = uid("subid-in-pub")
    watcher = v5(broker)
    watcher.subscribe((topic, 1))
    c = v5(broker)
    c.publish(topic, b"x", qos=1, properties={P_SUBSCRIPTION_ID: 5})
    expect_disconnect(c, PROTOCOL_ERROR, 0x81)
    assert [m for m in watcher.drain() if m.type == PUBLISH] == []


@pytest.mark.xfail_mosquitto(reason="2.0.11 forwards a PUBLISH whose Response Topic contains wildcards")
def test_response_topic_with_wildcard_is_rejected(broker):
    """[MQTT-3.3.2-14]: the Response Topic is a topic name and must not contain wildcards; the server
    treats a PUBLISH with one as malformed / a protocol error (DISCONNECT 0x82 or 0x81, or PUBACK >=
    0x80) and does not forward it."""
    topic = uid("rt-wild")
    watcher = v5(broker)
    watcher.subscribe((topic, 1))
    c = v5(broker)
    pid = c.publish(topic, b"x", qos=1, properties={P_RESPONSE_TOPIC: "reply/#"})
    c.send(packet(PINGREQ, 0, b""))
    try:
        first = c.recv()
    except Closed:
        first = None  # closed without a reason code
    if first is not None and first.type == PUBACK:
        assert first.pid == pid and first.rc >= 0x80, first
    elif first is not None:
        assert first.type == DISCONNECT and first.rc in (PROTOCOL_ERROR, 0x81, 0x90), first
    assert [m for m in watcher.drain() if m.type == PUBLISH] == []


def test_retained_message_keeps_properties_and_gets_subscription_id(broker):
    """A retained message is delivered on SUBSCRIBE with the properties it was published with
    [MQTT-3.3.2-4/17/20 via 3.3.1.3] and the identifier of the subscription that caused it
    [MQTT-3.3.4-3]."""
    topic = uid("ret-props")
    sent = [
        (P_CONTENT_TYPE, "application/json"),
        (P_USER_PROPERTY, ("k", "v1")),
        (P_USER_PROPERTY, ("k", "v2")),
    ]
    v5(broker).publish_acked(topic, b"{}", qos=1, retain=True, properties=sent)
    c = v5(broker)
    c.subscribe((topic, sub_options(1)), properties={P_SUBSCRIPTION_ID: 77})
    (m,) = c.messages(1)
    assert m.retain and m.payload == b"{}"
    assert m.props.get(P_CONTENT_TYPE) == "application/json", m
    assert m.props.get(P_USER_PROPERTY) == [("k", "v1"), ("k", "v2")], m
    assert m.props.get(P_SUBSCRIPTION_ID) == [77], m


# -- negative acknowledgements and flow control -------------------------------------------------------


@pytest.mark.parametrize("qos", [1, 2])
def test_negative_ack_is_final_no_redelivery(broker, qos):
    """[MQTT-4.4.0-2]: a PUBACK or PUBREC with a Reason Code >= 0x80 acknowledges the PUBLISH: the
    server does not retransmit it, not even when the session resumes, and sends no PUBREL for it
    (4.3.3)."""
    topic, cid = uid("nack"), uid("nack")
    sub = persistent(broker, cid)
    sub.auto_pubcomp = False
    sub.subscribe((topic, qos))
    pub = v5(broker)
    pub.publish_acked(topic, b"refused", qos=qos)
    (m,) = sub.messages(1, auto_ack=False)
    sub.send(ack_packet(PUBACK if qos == 1 else PUBREC, m.pid, MQTT5, rc=0x80))
    assert sub.is_open()  # PINGRESP came back with no PUBREL before it
    sub.disconnect()
    again = persistent(broker, cid, clean=False)
    again.auto_pubcomp = False
    assert again.connack.session_present
    pub.publish_acked(topic, b"after", qos=qos)
    got = again.messages(1)
    assert [(p.payload, p.dup) for p in got] == [(b"after", False)], got
    # Only the accepted message's own QoS 2 flow may continue (its PUBREL).
    late = [p for p in again.drain() if p.type == PUBLISH or (p.type == PUBREL and p.pid != got[0].pid)]
    assert late == [], late


def test_negative_pubrec_releases_receive_maximum_quota(broker):
    """4.9 flow control: the send quota is restored by a PUBREC with a Reason Code >= 0x80 [MQTT-4.9.0-?]
    as by PUBCOMP. With Receive Maximum 1, the next QoS 2 message is sent after the negative PUBREC,
    and no PUBREL is sent for the refused one."""
    topic = uid("nack-quota")
    sub = v5(broker, properties={P_RECEIVE_MAXIMUM: 1})
    sub.auto_pubcomp = False
    sub.subscribe((topic, 2))
    pub = v5(broker)
    pub.publish_acked(topic, b"one", qos=2)
    pub.publish_acked(topic, b"two", qos=2)
    (first,) = sub.messages(1, auto_ack=False)
    assert first.payload == b"one"
    sub.send(ack_packet(PUBREC, first.pid, MQTT5, rc=0x80))
    nxt = sub.expect(PUBLISH)
    assert nxt.payload == b"two", nxt
    sub.ack(nxt)
    rel = sub.expect(PUBREL)
    assert rel.pid == nxt.pid, f"PUBREL for a refused message: {rel!r}"


# -- SUBSCRIBE ------------------------------------------------------------------------------------------


@pytest.mark.xfail_mosquitto(reason="2.0.11 grants it (SUBACK 0x01)")
def test_no_local_on_shared_subscription_is_protocol_error(broker):
    """[MQTT-3.8.3-4]: No Local set on a shared subscription is a Protocol Error: DISCONNECT 0x82 and
    close, without granting it."""
    c = v5(broker)
    c.send(subscribe_packet(1, [(f"$share/g/{uid('nl')}", sub_options(1, no_local=True))], MQTT5))
    seen = expect_disconnect(c, PROTOCOL_ERROR)
    assert seen is None or seen.type == DISCONNECT


@pytest.mark.parametrize(
    "flt",
    [
        "$share/g+x/t",
        "$share/g#/t",
        pytest.param(
            "$share//t",
            marks=pytest.mark.xfail_mosquitto(reason="2.0.11 grants it (SUBACK 0x01)"),
        ),
        pytest.param(
            "$share/g",
            marks=pytest.mark.xfail_mosquitto(reason="2.0.11 grants it (SUBACK 0x01)"),
        ),
    ],
    ids=["plus", "hash", "empty-name", "no-filter"],
)
def test_invalid_shared_subscription_rejected(broker, flt):
    """[MQTT-4.8.2-1]: a ShareName is at least one character and has no `/`, `+` or `#`;
    [MQTT-4.8.2-2]: it is followed by `/` and a topic filter. An invalid one is refused: SUBACK 0x8F /
    0x80 / 0x9E for that filter or DISCONNECT 0x82/0x81/0x8F; it is never granted."""
    c = v5(broker)
    c.send(subscribe_packet(3, [(flt, 1)], MQTT5))
    try:
        p = c.recv()
    except Closed:
        return  # closed without a reason code
    if p.type == SUBACK:
        assert p.codes and p.codes[0] in (0x80, 0x8F, 0x9E), p
    else:
        assert p.type == DISCONNECT and p.rc in (0x81, 0x82, 0x8F), p


@pytest.mark.parametrize("qos", [1, 2])
def test_shared_member_negative_ack_not_redistributed(broker, qos):
    """[MQTT-4.8.2-6]: when the member that got a shared-subscription message answers PUBACK/PUBREC
    >= 0x80, the server discards the message and does not try another member."""
    flt = f"$share/{uid('g')}/{uid('nack')}"
    topic = flt.split("/", 2)[2]
    members = [v5(broker), v5(broker)]
    for m in members:
        m.auto_pubcomp = False
        m.subscribe((flt, qos))
    v5(broker).publish_acked(topic, b"refused", qos=qos)
    got = None
    for m in members:
        try:
            got = (m, m.expect(PUBLISH, timeout=1.0))
            break
        except TimeoutError:
            continue
    assert got is not None, "no member received the message"
    owner, p = got
    owner.send(ack_packet(PUBACK if qos == 1 else PUBREC, p.pid, MQTT5, rc=0x80))
    other = members[1] if owner is members[0] else members[0]
    assert [x for x in other.drain() + owner.drain() if x.type in (PUBLISH, PUBREL)] == []


# -- limits the client announced / the server announced --------------------------------------------


def test_oversize_message_dropped_and_not_redelivered(broker):
    """[MQTT-3.1.2-25]: a message larger than the client's Maximum Packet Size is discarded as if it
    had been sent: later messages flow, and on session resume it is not redelivered."""
    topic, cid = uid("max-ps"), uid("max-ps")
    p = {P_SESSION_EXPIRY: 60, P_MAXIMUM_PACKET_SIZE: 256}
    sub = raw(broker, MQTT5, cid, properties=p)
    sub.subscribe((topic, 1))
    pub = v5(broker)
    pub.publish_acked(topic, b"x" * 1000, qos=1)
    pub.publish_acked(topic, b"small", qos=1)
    assert [m.payload for m in sub.messages(1)] == [b"small"]
    sub.disconnect()
    again = raw(broker, MQTT5, cid, clean=False, properties=p)
    assert again.connack.session_present
    pub.publish_acked(topic, b"after", qos=1)
    got = again.messages(1)
    assert [(m.payload, m.dup) for m in got] == [(b"after", False)], got


@pytest.mark.skip_mosquitto(reason="2.0.11 refuses max_keepalive below 10, too slow to wait for here")
def test_server_keep_alive_is_enforced(make_broker):
    """[MQTT-3.2.2-21/22] and [MQTT-3.1.2-22]: with Server Keep Alive 1 in CONNACK (the client asked
    for 60) the server applies its own value: a silent client is disconnected after 1.5 s, not 90 s."""
    b = make_broker(max_keepalive=1)
    c = RawClient(b.host, b.port, MQTT5)
    ack = c.connect(uid("ska"), keepalive=60)
    assert ack.rc == 0 and ack.props.get(0x13) == 1, ack
    expect_disconnect(c, 0x8D, timeout=5.0)
