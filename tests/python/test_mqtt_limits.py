"""Configured limits: packet size, connections, subscriptions per client, topic levels, slow consumers."""

import socket
import time

import pytest

from mqtt_helpers import (
    CONNACK,
    MQTT5,
    MQTT311,
    PUBLISH,
    QUIET,
    Closed,
    RawClient,
    connect_packet,
    expect_disconnect,
    raw,
    sub_options,
    subscribe_packet,
    uid,
)

VERSIONS = pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])


def _fill(limit: int, topic: str) -> int:
    """Payload length that makes a QoS 1 PUBLISH exactly ``limit`` bytes long (3-byte fixed header)."""
    return limit - 3 - (2 + len(topic)) - 2


@pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5.0"])
def test_oversize_packet_closes_connection(make_broker, version):
    """A packet larger than max_packet_size closes the connection (v5: DISCONNECT 0x95 first); one of
    exactly the limit passes. Other clients are unaffected."""
    b = make_broker(max_packet_size=1024)
    topic = uid("big")
    sub = raw(b, version)
    sub.subscribe((topic, sub_options(1) if version == MQTT5 else 1))
    c = raw(b, version)
    fits = _fill(1024, topic) - (1 if version == MQTT5 else 0)  # v5: empty property length byte
    c.publish_acked(topic, b"x" * fits, qos=1)
    assert len(sub.messages(1)[0].payload) == fits
    c.publish(topic, b"x" * 2000, qos=1)
    expect_disconnect(c, 0x95)
    assert sub.is_open()


@pytest.mark.xfail_mosquitto(reason="2.0.11 leaves the remaining-length bytes out of the size: accepts 1026 of 1024")
def test_packet_size_limit_counts_whole_packet(make_broker):
    """v5 3.1.2.11.4 / 3.2.2.3.6: Maximum Packet Size is the total packet size, fixed header included;
    one byte over the limit is too large."""
    b = make_broker(max_packet_size=1024)
    topic = uid("big")
    c = raw(b, MQTT5)
    c.publish(topic, b"x" * (_fill(1024, topic) - 1 + 1), qos=1)
    expect_disconnect(c, 0x95)


def test_max_connections(make_broker):
    """max_connections: the connection beyond the limit is refused (closed, or CONNACK refusal); once
    one leaves, a new one is accepted."""
    b = make_broker(max_connections=3)
    held = [raw(b, MQTT311) for _ in range(3)]
    extra = RawClient(b.host, b.port, MQTT5)
    try:
        extra.send(connect_packet(uid("x"), version=MQTT5))
        seen = extra.expect_closed()
    except (BrokenPipeError, ConnectionResetError):
        seen = []
    acks = [p for p in seen if p.type == CONNACK]
    assert not acks or acks[0].rc >= 0x80, acks
    held[0].disconnect()
    for _attempt in range(50):  # the broker notices the departure asynchronously
        c = RawClient(b.host, b.port, MQTT311)
        try:
            if c.connect(uid("again")).rc == 0 and c.is_open():
                break
        except (Closed, OSError, AssertionError):
            pass
        c.close()
        time.sleep(0.05)
    else:
        pytest.fail("no connection accepted after one of the three left")


@VERSIONS
def test_max_subscriptions_per_client(make_broker, version):
    """Beyond max_subscriptions_per_client new filters fail (v5 0x97 Quota exceeded, v3 0x80); replacing
    an existing subscription does not count as a new one."""
    b = make_broker(max_subscriptions_per_client=3)
    c = raw(b, version)
    base = uid("ms")
    q = (lambda n: sub_options(n)) if version == MQTT5 else (lambda n: n)
    ack = c.subscribe(*[(f"{base}/{i}", q(1)) for i in range(4)])
    assert ack.codes[:3] == [1, 1, 1]
    assert ack.codes[3] == (0x97 if version == MQTT5 else 0x80)
    assert c.subscribe((f"{base}/0", q(2))).codes == [2]
    c.unsubscribe(f"{base}/1")
    assert c.subscribe((f"{base}/9", q(1))).codes == [1]


def test_max_topic_levels(make_broker):
    """max_topic_levels: a filter with more levels is refused (failure code or close); a PUBLISH with more
    levels is not delivered (the connection may be closed with 0x90)."""
    b = make_broker(max_topic_levels=4)
    c = raw(b, MQTT5)
    ack = c.subscribe(("a/b/c/d", sub_options(1)), ("a/b/c/d/e", sub_options(1)))
    assert ack.codes[0] == 1 and ack.codes[1] >= 0x80
    watcher = raw(b, MQTT5)
    watcher.subscribe(("#", sub_options(1)))
    pub = raw(b, MQTT5)
    pub.publish("a/b/c/d/e", b"deep", qos=1)
    try:
        p = pub.recv()
        if p.type == 14:
            assert p.rc in (0x90, 0x82, 0x81, 0x83), p
            pub.expect_closed()
        else:
            assert p.rc is None or p.rc >= 0x80 or p.rc == 0x10, p  # refused, or 0x10 no matching subscribers
    except Closed:
        pass
    probe = raw(b, MQTT5)
    probe.publish_acked("marker", b"m", qos=1)
    assert [m.topic for m in watcher.messages(1)] == ["marker"]


def test_slow_consumer_does_not_stall_others(broker):
    """A subscriber that never reads must not stop a healthy subscriber from receiving. 10 MiB of QoS 0
    go out in windows of 256 KiB; the healthy subscriber must get every message of each window before the
    next is sent (so a broker that blocked on the stuck socket would stall the healthy one)."""
    topic = uid("slow")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((broker.host, broker.port))
    stuck.sendall(connect_packet(uid("stuck")) + subscribe_packet(1, [(topic, 0)]))
    healthy = raw(broker, MQTT311)
    healthy.subscribe((topic, 0))
    # make sure the stuck subscription is in place before flooding: a QoS 1 round trip on it
    pub = raw(broker, MQTT311)
    probe = raw(broker, MQTT311)
    probe.subscribe((topic, 0))
    pub.publish_acked(topic, b"sync", qos=1)
    probe.messages(1)
    healthy.messages(1)
    probe.close()
    payload = b"p" * 16384
    for window in range(40):
        for _i in range(16):
            pub.publish(topic, payload, qos=0)
        got = healthy.messages(16, timeout=10)
        assert all(len(m.payload) == 16384 for m in got), f"window {window}"
    stuck.close()
    assert healthy.is_open()


def test_many_topics_and_filters(broker):
    """Breadth: 200 filters on one client, one message per topic, every message delivered once."""
    base = uid("many")
    c = raw(broker, MQTT311)
    for chunk in range(0, 200, 50):
        c.subscribe(*[(f"{base}/{i}", 1) for i in range(chunk, chunk + 50)])
    pub = raw(broker, MQTT311)
    for i in range(200):
        pub.publish(f"{base}/{i}", str(i).encode(), qos=0)
    pub.publish_acked(f"{base}/0", b"end", qos=1)
    got = c.messages(201)
    assert sorted(m.payload for m in got[:-1]) == sorted(str(i).encode() for i in range(200))
    assert [p for p in c.drain(QUIET) if p.type == PUBLISH] == []
