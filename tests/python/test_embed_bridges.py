"""Bridges from Python: an edge broker bridged to a cloud broker, configured with
``Broker(bridge=[...])`` or added and removed while it runs, with real sockets between them."""

from __future__ import annotations

import time

import pytest

uringmq = pytest.importorskip("uringmq")

WAIT = 5.0


def wait_for(what, f, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not f():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def broker(**kw):
    return uringmq.Broker(port=0, cores=2, pin_cores=False, **kw)


def connected(b, name):
    return any(s["name"] == name and s["connected"] for s in b.bridges())


def test_a_configured_bridge_carries_both_ways_with_prefixes():
    with broker() as cloud:
        bridge = {
            "name": "site7",
            "address": f"127.0.0.1:{cloud.port}",
            "protocol": "mqttv5",
            "reconnect_min_ms": 100,
            "topic": [
                {"pattern": "sensors/#", "direction": "out", "qos": 1, "remote_prefix": "fleet/site7/"},
                {"pattern": "cmd/#", "direction": "in", "qos": 1, "remote_prefix": "fleet/site7/"},
            ],
        }
        with broker(bridge=[bridge]) as edge:
            wait_for("the bridge", lambda: connected(edge, "site7"))
            with cloud.subscribe("fleet/#", qos=1) as up, edge.subscribe("cmd/#", qos=1) as down:
                edge.publish("sensors/t", b"21.5", qos=1, properties={"content_type": "text/plain"})
                m = up.get(WAIT)
                assert (m.topic, m.payload, m.qos) == ("fleet/site7/sensors/t", b"21.5", 1)
                assert m.properties["content_type"] == "text/plain"
                cloud.publish("fleet/site7/cmd/open", b"now", qos=1)
                m = down.get(WAIT)
                assert (m.topic, m.payload) == ("cmd/open", b"now")
            [state] = edge.bridges()
            assert (state["sent"], state["received"], state["dropped"]) == (1, 1, 0)


def test_bridges_are_added_and_removed_while_running():
    with broker() as cloud, broker() as edge:
        edge.add_bridge(
            {"name": "live", "address": f"127.0.0.1:{cloud.port}"},
            topic=[{"pattern": "live/#", "direction": "out", "qos": 1}],
            reconnect_min_ms=100,
        )
        with pytest.raises(ValueError, match="exists"):
            edge.add_bridge(name="live", address=f"127.0.0.1:{cloud.port}", topic=[{"pattern": "x"}])
        with pytest.raises(ValueError, match="bridge.topic.qos"):
            edge.add_bridge(name="bad", address="127.0.0.1:1", topic=[{"pattern": "x", "qos": 3}])
        wait_for("the bridge", lambda: connected(edge, "live"))
        with cloud.subscribe("live/#", qos=1) as up:
            edge.publish("live/1", b"a", qos=1)
            assert up.get(WAIT).topic == "live/1"
            assert edge.remove_bridge("live") is True
            assert edge.remove_bridge("live") is False
            assert edge.bridges() == []
            wait_for("the bridge to leave", lambda: all(c.client_id != "live" for c in cloud.clients()))
            edge.publish("live/2", b"b", qos=1)
            with pytest.raises(TimeoutError):
                up.get(0.3)


def test_typed_bridge_settings_list_every_key():
    from uringmq.settings import BridgeSettings, BridgeTopicSettings

    b = broker(bridge=[{"name": "t", "address": "127.0.0.1:1", "topic": [{"pattern": "a"}]}])
    [effective] = b.settings["bridge"]
    assert set(effective) - set(BridgeSettings.__annotations__) == set()
    assert set(effective["topic"][0]) - set(BridgeTopicSettings.__annotations__) == set()
