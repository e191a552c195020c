"""Malformed packets and protocol violations, written byte by byte.

Each case: the offending connection is closed [MQTT-4.8.0-1] / v5 [MQTT-4.13.1-1]; a v5 client gets a
DISCONNECT (CONNACK for an error in CONNECT) with the right reason code first when the server sends one
(the spec says SHOULD; Mosquitto does for v5, and the cases below record which codes are right); and
another client connected to the same broker is unaffected.
"""

import struct

import pytest

from mqtt_helpers import (
    CONNACK,
    DISCONNECT,
    MQTT5,
    MQTT311,
    P_CONTENT_TYPE,
    P_SESSION_EXPIRY,
    RawClient,
    connect_packet,
    packet,
    props,
    publish_packet,
    raw,
    s,
    uid,
)

MALFORMED, PROTOCOL = 0x81, 0x82


def _check_closed(c: RawClient, allowed: tuple):
    seen = c.expect_closed()
    final = [p for p in seen if p.type in (DISCONNECT, CONNACK)]
    if final:
        assert final[-1].rc in allowed, f"reason code {final[-1].rc:#x}, expected one of {[hex(a) for a in allowed]}"
    return final


def _after_connect(broker, version, data: bytes, allowed=(MALFORMED, PROTOCOL)):
    """Connects, sends ``data``, and checks the connection is closed while another client lives on."""
    other = raw(broker, version)
    topic = uid("alive")
    other.subscribe((topic, 1))
    c = raw(broker, version)
    c.send(data)
    final = _check_closed(c, allowed)
    # The other client still works end to end.
    raw(broker, version).publish_acked(topic, b"ok", qos=1)
    assert [m.payload for m in other.messages(1)] == [b"ok"]
    return final


V = pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])


@V
def test_remaining_length_over_four_bytes(broker, version):
    """[MQTT-1.5.5-?] a Variable Byte Integer uses at most 4 bytes; a fifth is malformed."""
    _after_connect(broker, version, b"\x30\xff\xff\xff\xff\x7f")


@V
def test_remaining_length_beyond_contents(broker, version):
    """A topic length that runs past the end of the packet: malformed."""
    _after_connect(broker, version, b"\x30\x04\x00\x10ab")


@V
@pytest.mark.parametrize(
    "data",
    [
        packet(8, 0x00, struct.pack("!H", 1) + s("a") + b"\x00"),  # SUBSCRIBE flags must be 0010 [MQTT-3.8.1-1]
        packet(10, 0x00, struct.pack("!H", 1) + s("a")),  # UNSUBSCRIBE flags 0010 [MQTT-3.10.1-1]
        packet(6, 0x00, struct.pack("!H", 1)),  # PUBREL flags 0010 [MQTT-3.6.1-1]
        pytest.param(
            packet(12, 0x01, b""),  # PINGREQ flags 0000
            marks=pytest.mark.xfail_mosquitto(reason="2.0.11 answers a PINGREQ with reserved flags set"),
        ),
        packet(14, 0x02, b""),  # DISCONNECT flags 0000 [MQTT-3.14.1-1]
    ],
    ids=["subscribe", "unsubscribe", "pubrel", "pingreq", "disconnect"],
)
def test_reserved_flags(broker, version, data):
    """[MQTT-2.2.2-1/2] reserved fixed-header flags must have their listed values; else malformed."""
    if version == MQTT5 and data[0] >> 4 == 8:
        data = packet(8, 0x00, struct.pack("!H", 1) + b"\x00" + s("a") + b"\x00")
    _after_connect(broker, version, data)


@V
@pytest.mark.parametrize(
    "topic",
    [b"a/\xff\xfe", b"a/\xed\xa0\x80", b"a/\x00b", b"a/\xc0\xaf"],
    ids=["invalid-bytes", "surrogate", "nul", "overlong"],
)
def test_invalid_utf8_topic(broker, version, topic):
    """[MQTT-1.5.3-1/2] topic names are well-formed UTF-8 without surrogates or U+0000."""
    _after_connect(broker, version, publish_packet(topic, b"x", 0, version=version))


@V
def test_qos_3(broker, version):
    """[MQTT-3.3.1-4] a PUBLISH must not have both QoS bits set."""
    body = s("a/b") + struct.pack("!H", 1) + (b"\x00" if version == MQTT5 else b"") + b"x"
    _after_connect(broker, version, packet(3, 0x06, body))


@V
def test_publish_packet_id_zero(broker, version):
    """[MQTT-2.3.1-1] a QoS 1/2 PUBLISH needs a non-zero packet identifier."""
    _after_connect(broker, version, publish_packet("a/b", b"x", 1, pid=0, version=version))


@V
def test_subscribe_packet_id_zero(broker, version):
    body = struct.pack("!H", 0) + (b"\x00" if version == MQTT5 else b"") + s("a") + b"\x00"
    _after_connect(broker, version, packet(8, 0x02, body))


@V
def test_subscribe_without_filters(broker, version):
    """[MQTT-3.8.3-3] a SUBSCRIBE must contain at least one filter."""
    body = struct.pack("!H", 1) + (b"\x00" if version == MQTT5 else b"")
    _after_connect(broker, version, packet(8, 0x02, body))


@V
def test_unsubscribe_without_filters(broker, version):
    """[MQTT-3.10.3-2] an UNSUBSCRIBE must contain at least one filter."""
    body = struct.pack("!H", 1) + (b"\x00" if version == MQTT5 else b"")
    _after_connect(broker, version, packet(10, 0x02, body))


@V
def test_server_to_client_packet_from_client(broker, version):
    """A CONNACK sent by a client is a protocol violation."""
    _after_connect(broker, version, packet(2, 0, b"\x00\x00" + (b"\x00" if version == MQTT5 else b"")))


def test_packet_type_zero(broker):
    """Packet type 0 is reserved (forbidden)."""
    _after_connect(broker, MQTT311, b"\x00\x00")


def test_auth_packet_in_v311(broker):
    """AUTH (type 15) does not exist in 3.1.1."""
    _after_connect(broker, MQTT311, b"\xf0\x00")


def test_v5_property_not_allowed_in_packet(broker):
    """v5 2.2.2.2: a property not valid for the packet type (Session Expiry in PUBLISH) is malformed: 0x81."""
    body = s("a/b") + props({P_SESSION_EXPIRY: 10}) + b"x"
    final = _after_connect(broker, MQTT5, packet(3, 0, body), allowed=(MALFORMED,))
    assert final, "no DISCONNECT 0x81 before close"


def test_v5_duplicate_property_is_protocol_error(broker):
    """v5 [MQTT-3.3.2-?]: Content Type included twice is a Protocol Error (0x82; 0x81 tolerated)."""
    body = s("a/b") + props([(P_CONTENT_TYPE, "a"), (P_CONTENT_TYPE, "b")]) + b"x"
    _after_connect(broker, MQTT5, packet(3, 0, body))


def test_v5_unknown_property_id(broker):
    body = s("a/b") + b"\x02\x7f\x00" + b"x"  # property id 0x7f does not exist
    _after_connect(broker, MQTT5, packet(3, 0, body))


# -- errors inside CONNECT: answered by CONNACK (v5 reason code) or a plain close ----------------


def _bad_connect(broker, data, allowed):
    other = raw(broker, MQTT311)
    c = RawClient(broker.host, broker.port, MQTT311)
    c.send(data)
    seen = c.expect_closed()
    acks = [p for p in seen if p.type == CONNACK]
    if acks:
        assert acks[0].rc in allowed, acks[0]
    assert other.is_open()


def _patch_flags(pkt: bytes, flags: int) -> bytes:
    # fixed header (2 bytes for these small packets) + "MQTT"(6) + level(1) -> flags at offset 9
    return pkt[:9] + bytes([flags]) + pkt[10:]


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_connect_reserved_flag_set(broker, version):
    """[MQTT-3.1.2-3] the reserved bit of the Connect Flags must be 0."""
    pkt = connect_packet(uid("rf"), version=version)
    _bad_connect(broker, _patch_flags(pkt, pkt[9] | 0x01), (0x81, 0x82, 0x01))


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_connect_will_qos_without_will_flag(broker, version):
    """[MQTT-3.1.2-11/13] Will QoS must be 0 when the Will Flag is 0."""
    pkt = connect_packet(uid("wq"), version=version)
    _bad_connect(broker, _patch_flags(pkt, pkt[9] | 0x08), (0x81, 0x82))


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_connect_will_qos_3(broker, version):
    """[MQTT-3.1.2-14] Will QoS 3 is not allowed."""
    pkt = connect_packet(uid("w3"), version=version, will={"topic": "w", "payload": b"x"})
    _bad_connect(broker, _patch_flags(pkt, pkt[9] | 0x18), (0x81, 0x82))


def test_connect_password_without_username_v311(broker):
    """[MQTT-3.1.2-22] 3.1.1: the password flag requires the user name flag."""
    _bad_connect(broker, connect_packet(uid("pw"), password=b"secret"), (0x04, 0x05, 0x81, 0x82))


def test_connect_invalid_utf8_client_id(broker):
    """[MQTT-1.5.3-1] the client id is a UTF-8 string: malformed bytes close the connection."""
    body = s("MQTT") + bytes([4, 0x02]) + b"\x00\x3c" + s(b"\xff\xfe")
    _bad_connect(broker, packet(1, 0, body), (0x02, 0x81, 0x85))
