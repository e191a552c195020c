"""In-process subscriptions take the MQTT 5 subscription options as keyword arguments."""

from __future__ import annotations

import time

import pytest

uringmq = pytest.importorskip("uringmq")
import mqtt_helpers  # noqa: E402
from mqtt_helpers import MQTT5  # noqa: E402

WAIT = 5.0


@pytest.fixture
def broker():
    b = uringmq.Broker(port=0, cores=2, pin_cores=False).start()
    yield b
    mqtt_helpers.close_all()
    b.stop()


def test_retain_handling_2_skips_what_was_retained(broker):
    broker.publish("lamp/state", b"on", retain=True)
    with broker.subscribe("lamp/#", retain_handling=2) as quiet, broker.subscribe("lamp/#") as usual:
        assert usual.get(WAIT).retain
        broker.publish("lamp/state", b"off")
        assert quiet.get(WAIT).payload == b"off"
        assert quiet.poll() is None


def test_retain_handling_1_sends_for_a_new_subscription(broker):
    broker.publish("r1/a", b"x", retain=True)
    with broker.subscribe("r1/#", retain_handling=1) as sub:
        assert sub.get(WAIT).payload == b"x"


def test_retain_as_published_keeps_the_flag_of_live_messages(broker):
    with broker.subscribe("rap/#", retain_as_published=True) as kept, broker.subscribe("rap/#") as cleared:
        broker.publish("rap/1", b"v", retain=True)
        assert kept.get(WAIT).retain is True
        assert cleared.get(WAIT).retain is False


def test_no_local_skips_own_publications(broker):
    with broker.subscribe("chat/#", no_local=True) as me, broker.subscribe("chat/#") as other:
        me.publish("chat/1", b"mine")
        assert other.get(WAIT).payload == b"mine"
        broker.publish("chat/2", b"theirs")
        assert me.get(WAIT).payload == b"theirs"
        assert other.get(WAIT).payload == b"theirs"
        assert me.poll() is None


def test_subscription_identifier_comes_with_each_message(broker):
    with broker.subscribe("id/#", subscription_identifier=42) as sub:
        client = mqtt_helpers.raw(broker, MQTT5)
        client.publish("id/1", b"x", qos=0)
        assert sub.get(WAIT).properties["subscription_identifiers"] == [42]


@pytest.mark.parametrize("bad", [0, 268_435_456])
def test_subscription_identifier_out_of_range_is_refused(broker, bad):
    with pytest.raises(ValueError, match="subscription_identifier"):
        broker.subscribe("id/#", subscription_identifier=bad)


def test_retain_handling_out_of_range_is_refused(broker):
    with pytest.raises(ValueError, match="retain_handling"):
        broker.subscribe("x", retain_handling=3)


def test_shared_group_members_split_the_messages(broker):
    with broker.subscribe("$share/g/jobs/#") as a, broker.subscribe("$share/g/jobs/#") as b:
        for i in range(10):
            broker.publish(f"jobs/{i}", b"j")
        got = {"a": [], "b": []}
        deadline = time.monotonic() + WAIT
        while len(got["a"]) + len(got["b"]) < 10:
            assert time.monotonic() < deadline, got
            for name, sub in (("a", a), ("b", b)):
                m = sub.poll()
                if m is not None:
                    got[name].append(m.topic)
        # Round robin: each member gets its share, and no message goes to both.
        assert got["a"] and got["b"]
        assert sorted(got["a"] + got["b"]) == sorted(f"jobs/{i}" for i in range(10))
        assert a.poll() is None and b.poll() is None
