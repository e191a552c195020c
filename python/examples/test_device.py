"""The device's tests, on the uringmq pytest plugin's fixtures: a real broker per test session,
no docker, no fixed port."""

from __future__ import annotations

import pytest

from device import Device


@pytest.fixture
def device(mqtt_broker):
    d = Device("dev-1", mqtt_broker.host, mqtt_broker.port)
    assert d.connected.wait(5)
    yield d
    d.close()


@pytest.mark.mqtt_capture(filter="sensors/#")
def test_reports_its_temperature(device, mqtt_capture):
    device.report(21.54)
    [msg] = mqtt_capture.wait_for("sensors/dev-1/temp", timeout=5)
    assert msg.payload == b"21.5" and msg.qos == 1


def test_obeys_a_retained_command(mqtt_broker_fresh):
    # Commanded before it came online: the retained command waits for it.
    mqtt_broker_fresh.publish("commands/dev-2/relay", b"on", qos=1, retain=True)
    d = Device("dev-2", mqtt_broker_fresh.host, mqtt_broker_fresh.port)
    try:
        assert d.wait_relay("on")
    finally:
        d.close()


def test_announces_itself_and_reconnects_after_a_broker_restart(mqtt_broker_fresh, mqtt_capture):
    d = Device("dev-3", mqtt_broker_fresh.host, mqtt_broker_fresh.port)
    try:
        assert mqtt_capture.wait_for("devices/dev-3/status", timeout=5)[0].payload == b"online"
        mqtt_broker_fresh.restart()          # same port; the capture ended with the old broker
        with mqtt_broker_fresh.subscribe("devices/#") as sub:
            assert sub.get(timeout=10).payload == b"online"   # it came back by itself
        assert [c.client_id for c in mqtt_broker_fresh.clients()] == ["dev-3"]
    finally:
        d.close()


def test_its_will_tells_when_it_drops_off(mqtt_broker_fresh):
    with mqtt_broker_fresh.subscribe("devices/dev-4/status") as sub:
        d = Device("dev-4", mqtt_broker_fresh.host, mqtt_broker_fresh.port)
        assert sub.get(timeout=5).payload == b"online"
        # As if the network dropped it: the will goes out (a plain kick sends none).
        assert mqtt_broker_fresh.disconnect("dev-4", with_will=True)
        assert sub.get(timeout=5).payload == b"offline"
    d.close()
