"""In-process publish and subscribe against real MQTT clients (paho-mqtt) over sockets."""

from __future__ import annotations

import threading
import time

import pytest

uringmq = pytest.importorskip("uringmq")
import mqtt_helpers  # noqa: E402  (tests/python, put on sys.path by the conftest)
from mqtt_helpers import MQTT5, Paho  # noqa: E402

WAIT = 5.0


@pytest.fixture
def broker():
    with uringmq.Broker(port=0, cores=2, pin_cores=False) as b:
        yield b
        mqtt_helpers.close_all()


def test_in_process_publish_reaches_socket_subscriber(broker):
    client = Paho(broker)
    client.subscribe("sensors/#", qos=1)
    broker.publish("sensors/1/temp", b"21.5", qos=1)
    m = client.get(WAIT)
    assert (m.topic, m.payload, m.qos) == ("sensors/1/temp", b"21.5", 1)


def test_socket_publish_reaches_in_process_subscriber(broker):
    with broker.subscribe("sensors/+/temp", qos=1) as sub:
        client = Paho(broker)
        client.publish("sensors/2/temp", b"19", qos=2)
        client.publish("sensors/2/humidity", b"40", qos=0)
        client.publish("sensors/3/temp", b"20", qos=0)
        first, second = sub.get(WAIT), sub.get(WAIT)
        assert (first.topic, first.payload, first.qos, first.retain) == ("sensors/2/temp", b"19", 1, False)
        assert (second.topic, second.payload, second.qos) == ("sensors/3/temp", b"20", 0)


def test_retained_message_reaches_later_subscribers(broker):
    broker.publish("state/door", "open", qos=1, retain=True)
    # A socket client's subscription made after the in-process publish gets it, flagged retained.
    client = Paho(broker)
    client.subscribe("state/#", qos=1)
    m = client.get(WAIT)
    assert (m.topic, m.payload, m.retain) == ("state/door", b"open", True)
    with broker.subscribe("state/#") as sub:
        r = sub.get(WAIT)
        assert (r.payload, r.retain) == (b"open", True)
    assert broker.stats().retained == 1


def test_properties_round_trip_between_v5_client_and_in_process(broker):
    client = Paho(broker, version=MQTT5)
    client.subscribe("rpc/#", qos=1)
    with broker.subscribe("rpc/#") as sub:
        broker.publish(
            "rpc/req",
            b"{}",
            qos=1,
            properties={
                "content_type": "application/json",
                "response_topic": "rpc/resp",
                "correlation_data": b"\x01\x02",
                "user_properties": [("a", "1"), ("a", "2")],
                "message_expiry_interval": 60,
                "payload_format_indicator": 1,
            },
        )
        m = client.get(WAIT)
        assert m.properties.ContentType == "application/json"
        assert m.properties.ResponseTopic == "rpc/resp"
        assert m.properties.CorrelationData == b"\x01\x02"
        assert m.properties.UserProperty == [("a", "1"), ("a", "2")]
        mine = sub.get(WAIT).properties
        assert mine["content_type"] == "application/json"
        assert mine["user_properties"] == [("a", "1"), ("a", "2")]
        # And back: a v5 client's properties reach the in-process subscriber.
        client.publish("rpc/resp", b"ok", qos=1, props={"ContentType": "text/plain", "UserProperty": [("k", "v")]})
        back = sub.get(WAIT)
        assert back.topic == "rpc/resp"
        assert back.properties["content_type"] == "text/plain"
        assert back.properties["user_properties"] == [("k", "v")]


def test_subscription_qos_caps_delivery_qos(broker):
    with broker.subscribe("q", qos=0) as sub:
        broker.publish("q", b"", qos=2)
        assert sub.get(WAIT).qos == 0


def test_payload_types(broker):
    with broker.subscribe("p") as sub:
        for payload, expected in [(b"b", b"b"), ("é", "é".encode()), (bytearray(b"ba"), b"ba"), (7, b"7"), (None, b"")]:
            broker.publish("p", payload)
            assert sub.get(WAIT).payload == expected
    with pytest.raises(TypeError):
        broker.publish("p", object())


@pytest.mark.parametrize("topic", ["a/+", "a/#", "", "a\x00b"])
def test_invalid_publish_topic_is_a_value_error(broker, topic):
    with pytest.raises(ValueError):
        broker.publish(topic, b"")


@pytest.mark.parametrize("topic_filter", ["a/#/b", "a+", ""])
def test_invalid_filter_is_a_value_error(broker, topic_filter):
    with pytest.raises(ValueError):
        broker.subscribe(topic_filter)


@pytest.mark.parametrize(
    "properties, match",
    [({"bogus": 1}, "bogus"), ({"subscription_identifiers": [1]}, "subscription_identifiers"),
     ({"response_topic": "a/#"}, "MQTT-3.3.2-14")],
)
def test_bad_properties_are_value_errors(broker, properties, match):
    with pytest.raises(ValueError, match=match):
        broker.publish("t", b"", properties=properties)


def test_get_times_out_and_poll_does_not_block(broker):
    with broker.subscribe("nothing") as sub:
        assert sub.poll() is None
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.05)


def test_blocking_get_releases_the_gil(broker):
    # While the main thread waits in get(), another Python thread runs and publishes.
    with broker.subscribe("gil") as sub:
        t = threading.Thread(target=lambda: (time.sleep(0.05), broker.publish("gil", b"from-thread")))
        t.start()
        assert sub.get(WAIT).payload == b"from-thread"
        t.join()


def test_blocking_iteration_ends_when_closed(broker):
    sub = broker.subscribe("it/#")
    for i in range(3):
        broker.publish(f"it/{i}", b"")
    seen = []
    for m in sub:
        seen.append(m.topic)
        if len(seen) == 3:
            sub.close()
    assert sorted(seen) == ["it/0", "it/1", "it/2"]
    with pytest.raises(uringmq.SubscriptionClosed):
        sub.get(WAIT)


def test_in_process_publishes_to_one_topic_keep_their_order(broker):
    # Every topic is an Ordered Topic by default [MQTT-4.6.0-6].
    with broker.subscribe("order") as sub:
        for i in range(5):
            broker.publish("order", str(i))
        assert [sub.get(WAIT).payload for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]


def test_stats_count_connections_and_messages(broker):
    client = Paho(broker)
    client.subscribe("s", qos=1)
    with broker.subscribe("s") as sub:
        before = broker.stats()
        client.publish("s", b"x", qos=1)
        client.get(WAIT)
        sub.get(WAIT)
        # One PUBLISH in, two out (the socket client and the in-process subscriber); counters
        # are summed from the cores, so wait until they have caught up.
        deadline = time.monotonic() + WAIT
        while True:
            after = broker.stats()
            if after.messages_out >= before.messages_out + 2 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    assert after.connections >= 1
    assert after.messages_in == before.messages_in + 1
    assert after.messages_out >= before.messages_out + 2
    assert set(after.as_dict()) >= {"connections", "subscriptions", "messages_in", "messages_out", "dropped_qos0"}


def test_idle_paho_clients_hibernate_and_still_talk():
    """Quiet connections park without a task (stats().hibernating) and behave as before."""
    with uringmq.Broker(port=0, cores=2, pin_cores=False, hibernate_after_ms=100) as b:
        try:
            sub, pub = Paho(b, version=MQTT5), Paho(b)
            sub.subscribe("quiet/#", qos=1)
            deadline = time.monotonic() + WAIT
            while b.stats().hibernating < 2:
                assert time.monotonic() < deadline, b.stats().as_dict()
                time.sleep(0.02)
            pub.publish("quiet/1", b"still here", qos=1)
            m = sub.get(WAIT)
            assert (m.topic, m.payload) == ("quiet/1", b"still here")
        finally:
            mqtt_helpers.close_all()


def test_stats_and_metrics_text_agree_with_metrics_endpoint():
    """``stats()`` has the ``$SYS``/Prometheus figures; ``metrics_text()`` is what ``/metrics``
    on ``metrics_listen`` serves (port 0 resolved in ``metrics_addr``)."""
    import urllib.request

    with uringmq.Broker(port=0, cores=2, pin_cores=False, metrics_listen="127.0.0.1:0", log_format="json") as b:
        try:
            sub, pub = Paho(b), Paho(b)
            sub.subscribe("m/#", qos=1)
            for _ in range(3):
                pub.publish("m/1", b"1234", qos=1)
            sub.get_n(3, WAIT)
            s = b.stats()
            assert (s.messages_in, s.publish_bytes_in, s.connects, s.sockets) == (3, 12, 2, 2)
            assert s.packets_in >= 2 + 1 + 3 and s.packets_out >= 2 + 1 + 3
            assert {"queued_messages", "inflight_messages", "shared_subscriptions", "retained_bytes"} <= set(s.as_dict())
            host, port = b.metrics_addr
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=WAIT) as r:
                served = r.read().decode()
            for text in (served, b.metrics_text()):
                assert 'uringmq_publish_received_total{core="0"}' in text
                total = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("uringmq_publish_received_bytes_total{")
                )
                assert total == 12
        finally:
            mqtt_helpers.close_all()
    assert b.metrics_addr is None and b.metrics_text() == ""
