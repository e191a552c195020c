"""The ``uringmq`` command installed by ``pip install uringmq``: runs a standalone broker.

The same command line as the Rust binary (``core/broker/src/main.rs``): ``--config FILE`` (or
``$URINGMQ_CONFIG``), ``--bind``, ``--port``, ``--cores``, ``--log-level`` (``$RUST_LOG`` wins,
as in the binary), ``--driver``, ``--print-config``, implemented over the embedding API, and the
``passwd`` subcommand, which runs the binary's own definition (``uringmq::cli``) through the
native module. ``tests/python/test_lifecycle_cli.py`` compares both commands' ``--help``.
Command-line values override the file. Runs until SIGINT or SIGTERM, then stops cleanly (no
wills sent) and exits 0; a bad setting exits 2, a start failure (port in use) exits 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, Dict, List, Optional

__all__ = ["main", "parse_args"]

_DRIVERS = {"auto": "auto", "io_uring": "io_uring", "iouring": "io_uring", "uring": "io_uring",
            "epoll": "epoll", "legacy": "epoll"}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parses the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("uringmq")
    except PackageNotFoundError:
        ver = "unknown"
    p = argparse.ArgumentParser(prog="uringmq", description="A thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker.")
    p.add_argument("-V", "--version", action="version", version=f"uringmq {ver}")
    p.add_argument("-c", "--config", default=os.environ.get("URINGMQ_CONFIG"), help="TOML config file")
    p.add_argument("--bind", help="address of the default listener (overrides `bind`); localhost is 127.0.0.1")
    p.add_argument("-p", "--port", type=int, help="port of the default listener; 0 picks a free one")
    p.add_argument("--cores", type=int, help="number of cores; 0 = one per CPU")
    p.add_argument("--log-level", help="tracing filter, e.g. info or uringmq=debug")
    p.add_argument("--driver", choices=sorted(_DRIVERS), help="io driver (overrides `driver`)")
    p.add_argument("--print-config", action="store_true", help="print the effective config as TOML and exit")
    commands = p.add_subparsers(dest="command", metavar="COMMAND")
    # Parsed by the native module (see `main`); listed here for --help.
    commands.add_parser(
        "passwd", add_help=False, help="create or update a Mosquitto-compatible password file (like mosquitto_passwd)"
    )
    commands.add_parser("cluster", add_help=False, help="the cluster's nodes and links (uringmq cluster status)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the broker until SIGINT/SIGTERM (or ``passwd``). Returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["passwd"]:
        from . import _uringmq

        return _uringmq.passwd(argv[1:])
    if argv[:1] == ["cluster"]:
        from . import _uringmq

        return _uringmq.cluster(argv[1:])
    args = parse_args(argv)
    from . import _uringmq
    from .broker import Broker

    overrides = {
        "bind": args.bind,
        "port": args.port,
        "cores": args.cores,
        "log_level": args.log_level,
        "driver": _DRIVERS[args.driver] if args.driver else None,
    }
    settings: Dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        broker = Broker(args.config, **settings)
    except (ValueError, OSError) as e:
        print(f"uringmq: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(broker.config_toml, end="")
        return 0
    _uringmq.init_logging(
        os.environ.get("RUST_LOG") or broker.settings["log_level"], broker.settings["log_format"]
    )

    # SIGINT and SIGTERM are blocked before the broker's threads start (they inherit the mask)
    # and taken by this thread with sigtimedwait, as the binary does with sigwait. A Python
    # handler that set a threading.Event hung the process now and then: run while this thread
    # held that Event's lock (inside its wait), it waited for the lock for ever.
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        broker.start()
    except (ValueError, OSError, RuntimeError) as e:
        print(f"uringmq: {e}", file=sys.stderr)
        return 1
    for name, host, port in broker.listeners:
        print(f"uringmq: listening on {host}:{port} ({name})", file=sys.stderr, flush=True)
    try:
        # Short waits, so that a broker that stopped on its own is noticed.
        while signal.sigtimedwait(signals, 0.2) is None:
            if not broker.is_running:
                print("uringmq: the broker stopped on its own", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
