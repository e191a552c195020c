"""A small web app that publishes: ``POST /lights/<id>`` with body ``on``/``off`` publishes a
retained command on ``commands/<id>/relay`` through the embedded broker; ``GET /clients`` lists
the connected MQTT clients as JSON. Standard library only (``http.server``).

Run: ``python web_app.py [--http-port 8080] [--mqtt-port 1883]``.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import uringmq


def make_handler(broker: uringmq.Broker) -> Any:
    """The request handler class, bound to ``broker``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = self.path.strip("/").split("/")
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).strip()
            if len(parts) != 2 or parts[0] != "lights" or body not in (b"on", b"off"):
                self.send_error(400, "POST /lights/<id> with body on or off")
                return
            broker.publish(f"commands/{parts[1]}/relay", body, qos=1, retain=True)
            self.send_response(204)
            self.end_headers()

        def do_GET(self) -> None:
            if self.path != "/clients":
                self.send_error(404)
                return
            body = json.dumps([{"client_id": c.client_id, "peer": c.peer} for c in broker.clients()]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def serve(http_port: int, broker: uringmq.Broker) -> ThreadingHTTPServer:
    """An HTTP server for ``broker`` (call ``serve_forever()``)."""
    return ThreadingHTTPServer(("127.0.0.1", http_port), make_handler(broker))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--mqtt-port", type=int, default=1883)
    args = p.parse_args()
    with uringmq.Broker(port=args.mqtt_port) as broker, serve(args.http_port, broker) as server:
        print(f"http://127.0.0.1:{server.server_address[1]}  MQTT {broker.url}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
