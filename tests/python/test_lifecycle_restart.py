"""``Broker.restart()`` comes back on the same port, so a client's automatic reconnect works."""

from __future__ import annotations

import threading

import pytest

uringmq = pytest.importorskip("uringmq")
paho = pytest.importorskip("paho.mqtt.client")

WAIT = 10.0


def test_restart_keeps_the_port_and_a_paho_client_reconnects():
    with uringmq.Broker(port=0, cores=2, pin_cores=False) as broker:
        port = broker.port
        connects = []
        connected = threading.Condition()

        def on_connect(client, userdata, flags, reason, props):
            with connected:
                connects.append(reason)
                connected.notify_all()

        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="reconnector", protocol=paho.MQTTv5)
        c.on_connect = on_connect
        c.reconnect_delay_set(min_delay=1, max_delay=1)
        c.connect(broker.host, port)
        c.loop_start()
        try:
            with connected:
                assert connected.wait_for(lambda: len(connects) == 1, WAIT)
            assert broker.restart() is broker
            assert broker.is_running and broker.port == port
            with connected:
                assert connected.wait_for(lambda: len(connects) == 2, WAIT), "paho did not reconnect"
            assert [cl.client_id for cl in broker.clients()] == ["reconnector"]
        finally:
            c.disconnect()
            c.loop_stop()


def test_restart_of_a_stopped_broker_starts_it():
    broker = uringmq.Broker(port=0, cores=1, pin_cores=False)
    try:
        broker.restart()
        assert broker.is_running and broker.port != 0
    finally:
        broker.stop()


def test_restart_after_stop_comes_back_on_the_same_port():
    broker = uringmq.Broker(port=0, cores=1, pin_cores=False)
    try:
        port = broker.start().port
        broker.stop()
        broker.restart()
        assert broker.is_running and broker.port == port
    finally:
        broker.stop()
