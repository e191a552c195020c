"""An asyncio service that embeds the broker: devices connect to it over MQTT, and the service
consumes their readings in-process (no client library, no polling, the GIL is not held while it
waits) and publishes an alert when a sensor runs hot.

Run: ``python asyncio_service.py [--port 1883] [--seconds 0]`` (0: until Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Dict, Optional

import uringmq

HOT = 30.0


async def consume(broker: uringmq.Broker, latest: Dict[str, float]) -> None:
    """Keeps the latest reading per sensor; publishes ``alerts/<id>`` for a hot one."""
    async with await broker.subscribe_async("sensors/+/temp", qos=1) as readings:
        async for msg in readings:
            sensor = msg.topic.split("/")[1]
            latest[sensor] = float(msg.payload)
            if latest[sensor] > HOT:
                broker.publish(f"alerts/{sensor}", f"{latest[sensor]:.1f} C", qos=1)


async def serve(port: int, stop: asyncio.Event, ready: Optional["asyncio.Future[int]"] = None) -> Dict[str, float]:
    """Runs the broker and the consumer until ``stop`` is set; returns the latest readings."""
    latest: Dict[str, float] = {}
    async with uringmq.Broker(port=port, cores=1, pin_cores=False) as broker:
        consumer = asyncio.ensure_future(consume(broker, latest))
        print(f"listening on {broker.url}", flush=True)
        if ready is not None:
            ready.set_result(broker.port)
        try:
            await stop.wait()
        finally:
            consumer.cancel()
    return latest


async def run_for(port: int, seconds: float) -> Dict[str, float]:
    """``serve`` for ``seconds`` (0: until cancelled, e.g. by Ctrl-C)."""
    stop = asyncio.Event()
    if seconds:
        asyncio.get_running_loop().call_later(seconds, stop.set)
    return await serve(port, stop)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--seconds", type=float, default=0)
    args = p.parse_args()
    try:
        print(asyncio.run(run_for(args.port, args.seconds)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
