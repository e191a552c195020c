"""CONNECT / CONNACK: protocol levels, client identifiers, takeover, keep-alive, connect timeout."""

import time

import pytest

from mqtt_helpers import (
    CONNACK,
    DISCONNECT,
    MQTT5,
    MQTT31,
    MQTT311,
    P_ASSIGNED_CLIENT_ID,
    P_SERVER_KEEP_ALIVE,
    PINGREQ,
    Paho,
    RawClient,
    connect_packet,
    expect_disconnect,
    packet,
    raw,
    subscribe_packet,
    uid,
)


@pytest.mark.parametrize("version", [MQTT31, MQTT311, MQTT5], ids=["3.1", "3.1.1", "5.0"])
def test_connect_each_protocol_level_accepted(broker, version):
    """3.1 (MQIsdp, level 3), 3.1.1 (MQTT, 4) and 5.0 (MQTT, 5) are all accepted with CONNACK 0."""
    c = RawClient(broker.host, broker.port, version)
    ack = c.connect(uid("v"))
    assert ack.type == CONNACK and ack.rc == 0
    assert not ack.session_present
    assert c.is_open()


@pytest.mark.parametrize("version", [MQTT31, MQTT311, MQTT5], ids=["3.1", "3.1.1", "5.0"])
def test_paho_roundtrip_each_version(broker, version):
    """A real client of each version subscribes and receives its own publish."""
    topic = uid("paho/rt")
    c = Paho(broker, version=version)
    assert c.subscribe(topic, 1) == [1]
    c.publish(topic, b"hello", qos=1)
    m = c.get()
    assert (m.topic, m.payload, m.qos) == (topic, b"hello", 1)


def test_unsupported_protocol_level_v311_connack_0x01(broker):
    """[MQTT-3.1.2-2] unknown level: CONNACK 0x01 (unacceptable protocol version), then close."""
    c = RawClient(broker.host, broker.port, MQTT311)
    c.send(_level_packet(6, v5_layout=False))
    seen = c.expect_closed()
    acks = [p for p in seen if p.type == CONNACK]
    assert acks and acks[0].rc == 0x01, seen


def test_unsupported_protocol_level_v5_layout_connack(broker):
    """v5 [MQTT-3.1.2-2]: a level the server does not support gets CONNACK 0x84 (or 0x01 in the
    3.1.1 format, since the server cannot know which format the client reads), then close."""
    c = RawClient(broker.host, broker.port, MQTT311)
    c.send(_level_packet(7, v5_layout=True))
    seen = c.expect_closed()
    acks = [p for p in seen if p.type == CONNACK]
    assert acks and acks[0].rc in (0x01, 0x84), seen


def _level_packet(level: int, v5_layout: bool) -> bytes:
    from mqtt_helpers import s

    body = s("MQTT") + bytes([level, 0x02]) + b"\x00\x3c"
    if v5_layout:
        body += b"\x00"
    body += s(uid("lvl"))
    return packet(1, 0, body)


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_first_packet_not_connect_closes(broker, version):
    """[MQTT-3.1.0-1] the first packet from the client must be CONNECT; anything else: close."""
    c = RawClient(broker.host, broker.port, version)
    c.send(subscribe_packet(1, [("a/b", 0)], version))
    seen = c.expect_closed()
    assert not [p for p in seen if p.type not in (DISCONNECT, CONNACK)], seen


def test_pingreq_before_connect_closes(broker):
    c = RawClient(broker.host, broker.port, MQTT311)
    c.send(packet(PINGREQ, 0, b""))
    assert c.expect_closed() == []


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_second_connect_is_protocol_violation(broker, version):
    """[MQTT-3.1.0-2] a second CONNECT is a protocol violation: close (v5: DISCONNECT 0x82 allowed first)."""
    c = raw(broker, version)
    c.send(connect_packet(uid("again"), version=version))
    expect_disconnect(c, 0x82)


def test_empty_client_id_clean_session_accepted_v311(broker):
    """[MQTT-3.1.3-6] zero-length client id with CleanSession=1: the server assigns one and accepts."""
    c = RawClient(broker.host, broker.port, MQTT311)
    ack = c.connect("", clean=True)
    assert ack.rc == 0
    assert c.is_open()


def test_empty_client_id_persistent_rejected_v311(broker):
    """[MQTT-3.1.3-8] zero-length client id with CleanSession=0: CONNACK 0x02, then close."""
    c = RawClient(broker.host, broker.port, MQTT311)
    ack = c.connect("", clean=False)
    assert ack.rc == 0x02
    c.expect_closed()


def test_empty_client_id_rejected_v31(broker):
    """MQTT 3.1 requires a 1-23 character client id: an empty one gets 0x02 (identifier rejected)."""
    c = RawClient(broker.host, broker.port, MQTT31)
    ack = c.connect("", clean=True)
    assert ack.rc == 0x02
    c.expect_closed()


def test_v5_empty_client_id_gets_assigned_identifier(broker):
    """v5 [MQTT-3.2.2-16]: an empty client id is answered with an Assigned Client Identifier, unique."""
    ids = []
    for _ in range(2):
        c = RawClient(broker.host, broker.port, MQTT5)
        ack = c.connect("")
        assert ack.rc == 0
        assigned = ack.props.get(P_ASSIGNED_CLIENT_ID)
        assert assigned, ack
        ids.append(assigned)
    assert ids[0] != ids[1]


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_session_takeover_closes_old_connection(broker, version):
    """[MQTT-3.1.4-3] a CONNECT with an id already connected closes the existing connection."""
    cid = uid("take")
    old = raw(broker, version, cid)
    new = raw(broker, version, cid)
    old.expect_closed()
    assert new.is_open()
    # The new connection works: it can subscribe and receive.
    topic = uid("take/t")
    new.subscribe((topic, 1))
    new.publish(topic, b"x", qos=1)
    assert [p.topic for p in new.messages(1)] == [topic]


@pytest.mark.xfail_mosquitto(reason="2.0.11 closes the old v5 connection without DISCONNECT 0x8E")
def test_v5_session_takeover_sends_disconnect_0x8e(broker):
    """v5 [MQTT-3.1.4-3] and 4.13: the existing client is sent DISCONNECT 0x8E (Session taken over)."""
    cid = uid("take")
    old = raw(broker, MQTT5, cid)
    raw(broker, MQTT5, cid)
    seen = old.expect_closed()
    disc = [p for p in seen if p.type == DISCONNECT]
    assert disc and disc[0].rc == 0x8E, seen


def test_keepalive_expiry_closes_and_publishes_will(broker):
    """[MQTT-3.1.2-24] a client silent for 1.5x its keep-alive is disconnected and its will published.
    A 3.1.1 and a 5.0 client go silent together (one wait for both)."""
    watcher = Paho(broker)
    silent = {}
    for version in (MQTT311, MQTT5):
        topic = uid(f"will/ka{version}")
        watcher.subscribe(topic, 1)
        c = RawClient(broker.host, broker.port, version)
        ack = c.connect(uid("ka"), keepalive=1, will={"topic": topic, "payload": b"gone", "qos": 1})
        assert ack.rc == 0
        silent[topic] = c
    start = time.monotonic()
    for c in silent.values():
        # Mosquitto 2.0 checks keep-alives only every few seconds, hence the generous bound.
        c.expect_closed(timeout=10)
    assert time.monotonic() - start >= 1.0, "closed before the keep-alive itself elapsed"
    got = {m.topic: m.payload for m in watcher.get_n(2, timeout=5)}
    assert got == {t: b"gone" for t in silent}


def test_keepalive_pings_keep_connection_alive(broker):
    """PINGREQ within the keep-alive resets the timer [MQTT-3.1.2-23]; a client pinging every 0.5 s
    with keep-alive 1 s stays connected for 2.5 s."""
    c = raw(broker, MQTT311, keepalive=1)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert c.is_open()
        time.sleep(0.5)


def test_v5_server_keep_alive_when_client_asks_more_than_max(make_broker):
    """v5 [MQTT-3.2.2-21]: when the server's limit is lower than the client's keep-alive, CONNACK carries
    Server Keep Alive and the client must use it."""
    b = make_broker(max_keepalive=10)
    c = RawClient(b.host, b.port, MQTT5)
    ack = c.connect(uid("ska"), keepalive=60)
    assert ack.rc == 0
    assert ack.props.get(P_SERVER_KEEP_ALIVE) == 10, ack


def test_v5_no_server_keep_alive_within_limit(make_broker):
    b = make_broker(max_keepalive=100)
    c = RawClient(b.host, b.port, MQTT5)
    ack = c.connect(uid("ska"), keepalive=60)
    assert ack.rc == 0
    assert ack.props.get(P_SERVER_KEEP_ALIVE, 60) == 60


def test_connect_timeout_closes_silent_socket(make_broker):
    """A socket that never sends CONNECT is closed after `connect_timeout_secs` (spec 3.1.4: the server
    SHOULD close a connection that does not send CONNECT within a reasonable time)."""
    b = make_broker(connect_timeout_secs=1)
    c = RawClient(b.host, b.port, MQTT311)
    assert c.expect_closed(timeout=6) == []


def test_anonymous_refused_when_not_allowed(make_broker):
    """allow_anonymous=false: v3 CONNACK 0x05 (not authorised), v5 0x87 (or 0x86), then close."""
    b = make_broker(allow_anonymous=False)
    c = RawClient(b.host, b.port, MQTT311)
    assert c.connect(uid("anon")).rc == 0x05
    c.expect_closed()
    c5 = RawClient(b.host, b.port, MQTT5)
    assert c5.connect(uid("anon")).rc in (0x86, 0x87)
    c5.expect_closed()
