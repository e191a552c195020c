"""``mqtt_capture`` records the broker the test uses, starts empty, takes a filter; and the
fixtures run against an external broker (a real Mosquitto) with ``--mqtt-broker-url``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

pytest_plugins = ["pytester"]

uringmq = pytest.importorskip("uringmq")

MOSQUITTO = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

CAPTURE_TESTS = '''
import pytest
import paho.mqtt.client as paho


def publish(broker, topic, payload, retain=False):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_a_leaves_a_retained_message(mqtt_broker):
    publish(mqtt_broker, "state/lamp", b"on", retain=True)


def test_b_capture_starts_empty_on_the_shared_broker(mqtt_broker, mqtt_capture):
    publish(mqtt_broker, "state/door", b"open")
    got = mqtt_capture.wait_for("state/#", n=1, timeout=5)
    assert [m.topic for m in got] == ["state/door"]
    assert "state/lamp" not in mqtt_capture.topics


def test_capture_watches_the_fresh_broker(mqtt_broker_fresh, mqtt_capture):
    assert mqtt_capture.broker is mqtt_broker_fresh
    publish(mqtt_broker_fresh, "fresh/1", b"x")
    assert [m.payload for m in mqtt_capture.wait_for("fresh/1", timeout=5)] == [b"x"]


@pytest.mark.mqtt_broker(max_qos=1)
def test_capture_watches_the_settings_broker(mqtt_broker, mqtt_broker_session, mqtt_capture):
    assert mqtt_broker is not mqtt_broker_session
    mqtt_broker.publish("own/1", b"y", qos=1)
    assert [m.payload for m in mqtt_capture.wait_for("own/1", timeout=5)] == [b"y"]


@pytest.mark.mqtt_capture(filter="wanted/#")
def test_capture_takes_a_filter(mqtt_broker, mqtt_capture):
    publish(mqtt_broker, "unwanted/1", b"no")
    publish(mqtt_broker, "wanted/1", b"yes")
    mqtt_capture.wait_for("wanted/1", timeout=5)
    assert mqtt_capture.topics == ["wanted/1"]


def test_retain_flag_of_live_messages_is_kept(mqtt_broker, mqtt_capture):
    publish(mqtt_broker, "kept/1", b"r", retain=True)
    (m,) = mqtt_capture.wait_for("kept/1", timeout=5)
    assert m.retain


def test_capture_factory(mqtt_broker_factory, mqtt_capture_factory):
    other = mqtt_broker_factory()
    capture = mqtt_capture_factory("x/+", broker=other)
    other.publish("x/1", b"1")
    other.publish("y/1", b"2")
    capture.wait_for("x/1", timeout=5)
    assert capture.topics == ["x/1"]
'''


def test_capture_follows_the_test_broker_and_starts_empty(pytester: pytest.Pytester):
    pytester.makepyfile(test_capture=CAPTURE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mosquitto_with_password(tmp_path):
    """A Mosquitto on a free port that only lets user `tester` (password `s3cret`) in."""
    if not os.path.exists(MOSQUITTO) or not os.path.exists(MOSQUITTO_PASSWD):
        pytest.skip("mosquitto is not installed (scripts/test.sh installs it)")
    pw = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(pw), "tester", "s3cret"], check=True)
    os.chmod(pw, 0o600)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    # Started as root, Mosquitto would drop to user `mosquitto`, who cannot read pytest's tmp_path.
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\npersistence false\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"mosquitto did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


EXTERNAL_TESTS = '''
import pytest
import paho.mqtt.client as paho
from uringmq.pytest_plugin import ExternalBroker


def test_fixtures_point_at_the_external_broker(mqtt_broker, mqtt_capture):
    assert isinstance(mqtt_broker, ExternalBroker)
    assert (mqtt_broker.username, mqtt_broker.password) == ("tester", "s3cret")
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.username_pw_set(mqtt_broker.username, mqtt_broker.password)
    c.connect(mqtt_broker.host, mqtt_broker.port)
    c.loop_start()
    c.publish("ext/1", b"hello", qos=1).wait_for_publish(5)
    mqtt_broker.publish("ext/2", b"again")
    got = mqtt_capture.wait_for("ext/+", n=2, timeout=5)
    assert sorted(m.payload for m in got) == [b"again", b"hello"]
    c.disconnect()
    c.loop_stop()


def test_capture_starts_empty_there_too(mqtt_broker, mqtt_capture_factory):
    mqtt_broker.publish("ext/state", b"old", retain=True)
    capture = mqtt_capture_factory("ext/#", broker=mqtt_broker)
    mqtt_broker.publish("ext/new", b"new")
    capture.wait_for("ext/new", timeout=5)
    assert capture.topics == ["ext/new"]


@pytest.mark.mqtt_broker(max_qos=1)
def test_settings_need_the_in_process_broker(mqtt_broker):
    raise AssertionError("not reached: skipped")
'''


def test_fixtures_run_against_an_external_mosquitto(pytester: pytest.Pytester, mosquitto_with_password):
    pytester.makepyfile(test_external=EXTERNAL_TESTS)
    url = f"mqtt://tester:s3cret@127.0.0.1:{mosquitto_with_password}"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--mqtt-broker-url={url}")
    result.assert_outcomes(passed=2, skipped=1)


def test_external_broker_from_the_ini_file(pytester: pytest.Pytester, mosquitto_with_password):
    pytester.makeini(
        f"[pytest]\nmqtt_broker_url = mqtt://tester:s3cret@127.0.0.1:{mosquitto_with_password}\n"
    )
    pytester.makepyfile(
        test_ini='''
def test_it(mqtt_broker):
    assert mqtt_broker.port == %d and not hasattr(mqtt_broker, "stats")
'''
        % mosquitto_with_password
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.fixture
def guarded(tmp_path):
    """An in-process uringmq whose ACL lets everyone read and write ``open/#`` only, reached as
    an external broker."""
    pytest.importorskip("paho.mqtt.client")
    from uringmq.pytest_plugin import ExternalBroker

    acl = tmp_path / "acl"
    acl.write_text("topic readwrite open/#\n")
    with uringmq.Broker(port=0, cores=1, pin_cores=False, acl_file=str(acl)) as b:
        yield b, ExternalBroker(b.host, b.port)


def test_external_publish_keeps_qos_0(guarded):
    broker, external = guarded
    with broker.subscribe("open/#", qos=2) as sub:
        external.publish("open/q0", b"x")  # returns once the broker routed it
        assert sub.get(5).qos == 0
        external.publish("open/q1", b"y", qos=1)
        assert sub.get(5).qos == 1


def test_external_subscription_refused_by_the_broker_raises(guarded):
    _, external = guarded
    with pytest.raises(PermissionError, match="secret/#"):
        external.subscribe("secret/#")
    external.subscribe("open/#").close()
