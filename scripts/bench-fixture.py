#!/usr/bin/env python3
"""Times test-fixture broker start+stop cycles: in-process ``uringmq.Broker(port=0)`` against a
``mosquitto -p PORT`` subprocess that the fixture waits on until the port accepts.

Each cycle: start, connect once (the port accepts), stop (uringmq: threads joined and port
free; mosquitto: SIGKILL and wait for exit). Prints min / median / p95 / mean per cycle in ms.

    python scripts/bench-fixture.py [-n 200] [--cores 1] [--mosquitto /usr/sbin/mosquitto]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import time
from typing import Callable, List


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_accepting(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not accept on port {port}")
            time.sleep(0.001)


def uringmq_cycle(cores: int) -> Callable[[], None]:
    import uringmq

    def cycle() -> None:
        b = uringmq.Broker(port=0, cores=cores, pin_cores=False).start()
        socket.create_connection((b.host, b.port), timeout=1).close()
        b.stop()

    return cycle


def mosquitto_cycle(binary: str) -> Callable[[], None]:
    def cycle() -> None:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_accepting(port, proc)
        finally:
            # SIGKILL: mosquitto sometimes misses a SIGTERM sent while it starts up, and a
            # fixture would not wait on its clean shutdown anyway (its best case here).
            proc.kill()
            proc.wait()

    return cycle


def measure(cycle: Callable[[], None], n: int) -> List[float]:
    cycle()  # warm-up (imports, page cache)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        cycle()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def report(name: str, ms: List[float]) -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(
        f"{name:<28} n={len(ms):<5} min {ms[0]:7.2f}  median {statistics.median(ms):7.2f}  "
        f"p95 {p95:7.2f}  mean {statistics.fmean(ms):7.2f}  (ms per start+connect+stop)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="cycles per broker")
    ap.add_argument("--cores", type=int, nargs="*", default=[1, 2], help="uringmq core counts to time")
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    args = ap.parse_args()
    for cores in args.cores:
        report(f"uringmq.Broker cores={cores}", measure(uringmq_cycle(cores), args.n))
    if shutil.which(args.mosquitto):
        report("mosquitto subprocess", measure(mosquitto_cycle(args.mosquitto), args.n))
    else:
        print(f"{args.mosquitto} not found: mosquitto not timed")


if __name__ == "__main__":
    main()
