"""A small web app that publishes, on FastAPI: ``POST /lights/{id}`` with ``{"state": "on"}``
publishes a retained command on ``commands/{id}/relay`` through the broker it embeds, and
``GET /clients`` lists the connected MQTT clients. The broker starts and stops with the app
(FastAPI's lifespan), so devices and the web app share one process and no broker to deploy.

Run: ``pip install fastapi uvicorn`` then ``uvicorn web_app:app`` (MQTT on port 1883, or
``URINGMQ_PORT``).
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel

import uringmq


class Light(BaseModel):
    """The body of ``POST /lights/{id}``."""

    state: Literal["on", "off"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with uringmq.Broker(port=int(os.environ.get("URINGMQ_PORT", "1883"))) as broker:
        app.state.broker = broker
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/lights/{light_id}", status_code=204)
def switch(light_id: str, light: Light, request: Request) -> None:
    """Publishes the command, retained: a light that is offline gets it when it connects."""
    broker: uringmq.Broker = request.app.state.broker
    broker.publish(f"commands/{light_id}/relay", light.state, qos=1, retain=True)


@app.get("/clients")
def clients(request: Request) -> List[Dict[str, Any]]:
    """The connected MQTT clients."""
    broker: uringmq.Broker = request.app.state.broker
    return [{"client_id": c.client_id, "peer": c.peer, "protocol": c.protocol} for c in broker.clients()]
