"""The ``uringmq`` command installed by ``pip install uringmq``: runs a standalone broker.

Same options as the Rust binary's core ones: ``--config FILE``, ``--bind ADDR``, ``--port N``,
``--cores N``, ``--log-level FILTER`` (command-line values override the file). Runs until SIGINT
or SIGTERM, then stops cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Dict, List, Optional

__all__ = ["main", "parse_args"]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parses the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(prog="uringmq", description="uringmq MQTT 3.1.1 / 5.0 broker")
    p.add_argument("-c", "--config", help="TOML config file (keys as in the broker's config)")
    p.add_argument("--bind", help="address of the default listener (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, help="port of the default listener (default 1883, 0 = any)")
    p.add_argument("--cores", type=int, help="number of cores (threads); 0 = one per CPU")
    p.add_argument("--log-level", help="log filter, e.g. info, debug, uringmq=debug")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the broker until SIGINT/SIGTERM. Returns the exit status."""
    args = parse_args(argv)
    from . import _uringmq
    from .broker import Broker

    settings: Dict[str, Any] = {
        key: value
        for key, value in (
            ("bind", args.bind),
            ("port", args.port),
            ("cores", args.cores),
            ("log_level", args.log_level),
        )
        if value is not None
    }
    try:
        broker = Broker(args.config, **settings)
        _uringmq.init_logging(broker.settings["log_level"])
        broker.start()
    except (ValueError, OSError, RuntimeError) as e:
        print(f"uringmq: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for name, host, port in broker.listeners:
        print(f"uringmq: listening on {host}:{port} ({name})", file=sys.stderr, flush=True)
    try:
        # wait() with a timeout so the main thread runs the Python signal handlers promptly.
        while not stop.wait(0.5):
            if not broker.is_running:
                print("uringmq: the broker stopped on its own", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
