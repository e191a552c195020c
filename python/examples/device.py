"""A small IoT device: reports its temperature on ``sensors/<id>/temp`` and switches its relay on
``commands/<id>/relay`` (``on``/``off``, retained by whoever commands it). Reconnects by itself.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import paho.mqtt.client as paho


class Device:
    """One device connected to ``host:port``."""

    def __init__(self, device_id: str, host: str, port: int) -> None:
        self.device_id = device_id
        self.relay = "off"
        self.connected = threading.Event()
        self._changed = threading.Condition()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=paho.MQTTv5)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.will_set(f"devices/{device_id}/status", b"offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *args: self.connected.clear()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.publish(f"devices/{self.device_id}/status", b"online", qos=1, retain=True)
        client.subscribe(f"commands/{self.device_id}/relay", qos=1)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._changed:
            self.relay = msg.payload.decode()
            self._changed.notify_all()

    def report(self, celsius: float) -> None:
        """Publishes one reading (QoS 1) and waits until the broker has it."""
        self._client.publish(f"sensors/{self.device_id}/temp", f"{celsius:.1f}", qos=1).wait_for_publish(5)

    def wait_relay(self, state: str, timeout: Optional[float] = 5.0) -> bool:
        """Waits until the relay is in ``state``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.relay == state, timeout)

    def close(self) -> None:
        """Disconnects cleanly (no will)."""
        self._client.disconnect()
        self._client.loop_stop()
