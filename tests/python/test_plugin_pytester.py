"""The pytest plugin as a separate project sees it: only the installed package, loaded through
its ``pytest11`` entry point (no conftest, no ``-p``)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

uringmq = pytest.importorskip("uringmq")

PROJECT_TESTS = '''
import socket
import pytest
import paho.mqtt.client as paho


def connect(broker):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def test_session_broker_is_shared(mqtt_broker, mqtt_broker_session):
    assert mqtt_broker is mqtt_broker_session
    assert mqtt_broker.is_running
    socket.create_connection((mqtt_broker.host, mqtt_broker.port), timeout=5).close()


@pytest.mark.mqtt_broker(max_packet_size=1024, max_qos=1)
def test_marker_gives_an_own_broker(mqtt_broker, mqtt_broker_session):
    assert mqtt_broker is not mqtt_broker_session
    assert mqtt_broker.settings["max_packet_size"] == 1024
    assert mqtt_broker.settings["max_qos"] == 1


@pytest.mark.parametrize("mqtt_broker", [{"max_inflight": 5}, {"max_inflight": 7}], indirect=True)
def test_indirect_parametrisation(mqtt_broker):
    assert mqtt_broker.settings["max_inflight"] in (5, 7)


@pytest.mark.mqtt_broker(max_qos=1)
def test_fresh_broker_takes_the_marker_too(mqtt_broker_fresh, mqtt_broker_session):
    assert mqtt_broker_fresh is not mqtt_broker_session
    assert mqtt_broker_fresh.settings["max_qos"] == 1


def test_factory_makes_independent_brokers(mqtt_broker_factory):
    a, b = mqtt_broker_factory(), mqtt_broker_factory(max_qos=0)
    assert a.port != b.port and b.settings["max_qos"] == 0


def test_capture_sees_client_and_in_process_publishes(mqtt_broker, mqtt_capture):
    c = connect(mqtt_broker)
    c.publish("sensors/1", b"a", qos=1).wait_for_publish(5)
    mqtt_broker.publish("sensors/2", b"b")
    got = mqtt_capture.wait_for("sensors/+", n=2, timeout=5)
    assert sorted(m.payload for m in got) == [b"a", b"b"]
    assert "sensors/1" in mqtt_capture.topics
    c.disconnect()
    c.loop_stop()


def test_fresh_broker_holds_nothing_from_the_shared_one(mqtt_broker_session, mqtt_broker_fresh):
    mqtt_broker_session.publish("state/lamp", b"on", retain=True)
    assert mqtt_broker_fresh is not mqtt_broker_session
    with mqtt_broker_fresh.subscribe("state/#") as sub:
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.2)


def test_capture_wait_for_async(mqtt_broker, mqtt_capture):
    import asyncio

    async def scenario():
        waiting = asyncio.ensure_future(mqtt_capture.wait_for_async("async/+", n=2, timeout=5))
        await asyncio.sleep(0)
        mqtt_broker.publish("async/1", b"1")
        mqtt_broker.publish("async/2", b"2")
        return await waiting

    assert sorted(m.payload for m in asyncio.run(scenario())) == [b"1", b"2"]


def test_capture_wait_for_reports_what_came(mqtt_capture, mqtt_broker):
    mqtt_broker.publish("other/topic", b"")
    with pytest.raises(AssertionError, match="other/topic"):
        mqtt_capture.wait_for("wanted/#", n=1, timeout=0.2)
'''


def test_plugin_fixtures_in_a_project_that_only_installed_the_package(pytester: pytest.Pytester):
    pytester.makepyfile(test_project=PROJECT_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=10)


def test_plugin_import_does_not_load_the_native_module(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_lazy='''
import sys

def test_lazy():
    # The plugin is loaded (entry point) but no fixture was used.
    assert "uringmq.pytest_plugin" in sys.modules
    assert "uringmq._uringmq" not in sys.modules
'''
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_marker_is_registered(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*mqtt_broker(**settings)*"])
