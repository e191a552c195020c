"""The asyncio service and the web app, end to end with a real MQTT client (paho-mqtt)."""

from __future__ import annotations

import asyncio
import threading

import paho.mqtt.client as paho
import pytest

import asyncio_service
from device import Device


def test_asyncio_service_consumes_and_alerts():
    alerted = threading.Event()
    subscribed = threading.Event()

    async def scenario():
        loop = asyncio.get_running_loop()
        stop, ready = asyncio.Event(), loop.create_future()
        service = asyncio.ensure_future(asyncio_service.serve(0, stop, ready))
        port = await ready
        watcher = paho.Client(paho.CallbackAPIVersion.VERSION2)
        watcher.on_subscribe = lambda *args: subscribed.set()
        watcher.on_message = lambda c, u, m: alerted.set() if m.payload == b"35.0 C" else None
        watcher.connect("127.0.0.1", port)
        watcher.loop_start()
        watcher.subscribe("alerts/#", qos=1)
        assert await loop.run_in_executor(None, subscribed.wait, 5)
        device = Device("hot-1", "127.0.0.1", port)
        await loop.run_in_executor(None, device.report, 35.0)
        assert await loop.run_in_executor(None, alerted.wait, 5), "no alert"
        stop.set()
        latest = await service
        device.close()
        watcher.loop_stop()
        return latest

    assert asyncio.run(scenario()) == {"hot-1": 35.0}


def test_web_app_publishes_a_retained_command(monkeypatch):
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    import web_app
    
    monkeypatch.setenv("URINGMQ_PORT", "0")
    with fastapi_testclient.TestClient(web_app.app) as http:   # runs the lifespan: the broker
        broker = web_app.app.state.broker
        assert http.post("/lights/7", json={"state": "on"}).status_code == 204
        assert http.post("/lights/7", json={"state": "dim"}).status_code == 422
        device = Device("7", broker.host, broker.port)   # comes online later, still gets it
        try:
            assert device.wait_relay("on")
            assert [c["client_id"] for c in http.get("/clients").json()] == ["7"]
        finally:
            device.close()
