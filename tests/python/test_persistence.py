"""``Broker(persistence_dir=...)``: a broker restarted on the same directory in the same process
gets its sessions, subscriptions, queued messages and retained messages back (issue #15)."""

from __future__ import annotations

import pytest

from mqtt_helpers import CONNACK, MQTT311, MQTT5, PUBLISH, RawClient

uringmq = pytest.importorskip("uringmq")


def persistent(broker, client_id: str, version: int) -> tuple[RawClient, bool]:
    c = RawClient(broker.host, broker.port, version)
    kw = {"properties": {0x11: 3600}} if version == MQTT5 else {}
    ack = c.connect(client_id, version=version, clean=False, **kw)
    assert ack.type == CONNACK and ack.rc == 0
    return c, ack.session_present


@pytest.mark.parametrize("version", [MQTT311, MQTT5])
@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_restart_on_the_same_directory_keeps_the_state(tmp_path, version, sync):
    settings = dict(port=0, cores=2, pin_cores=False, persistence_dir=tmp_path / "store",
                    persistence_sync=sync)
    with uringmq.Broker(**settings) as broker:
        assert broker.settings["persistence_sync"] == sync
        sub, present = persistent(broker, "keeper", version)
        assert not present
        sub.subscribe(("keep/#", 1))
        sub.disconnect()
        pub = RawClient(broker.host, broker.port, version)
        pub.connect("pub", version=version)
        for i in range(10):
            pub.publish_acked("keep/q", b"m%d" % i, qos=1)
        pub.publish_acked("keep/r", b"retained", qos=1, retain=True)
        pub.close()
    with uringmq.Broker(**settings) as broker:
        sub, present = persistent(broker, "keeper", version)
        assert present, "session present after the restart"
        got = [m.payload for m in sub.messages(11)]
        assert got == [b"m%d" % i for i in range(10)] + [b"retained"]
        fresh = RawClient(broker.host, broker.port, version)
        fresh.connect("fresh", version=version)
        fresh.subscribe(("keep/r", 1))
        m = fresh.expect(PUBLISH)
        assert m.payload == b"retained" and m.retain


def test_persistence_keys_are_checked():
    with pytest.raises(ValueError, match="persistence_sync"):
        uringmq.Broker(persistence_sync="sometimes")
