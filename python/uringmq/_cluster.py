"""A small uringmq cluster for tests: a real etcd (Debian's ``etcd-server``: ``etcd`` on the
PATH, or ``$ETCD_BIN``) on free loopback ports with a data directory of its own, and N
in-process ``uringmq.Broker(cluster={...})`` nodes registered in it under a prefix of their
own. Used by the ``mqtt_cluster`` / ``mqtt_cluster_factory`` fixtures (``pytest_plugin``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["Etcd", "MqttCluster", "etcd_binary"]


def etcd_binary() -> Optional[str]:
    """The etcd to run: ``$ETCD_BIN``, else ``etcd`` on the PATH; None if there is none."""
    return os.environ.get("ETCD_BIN") or shutil.which("etcd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Etcd:
    """A running etcd on free loopback ports; ``stop()`` kills it and deletes its data."""

    def __init__(self, binary: str, timeout: float = 20.0) -> None:
        self.dir = tempfile.mkdtemp(prefix="uringmq-etcd-")
        client, peer = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self._log = open(os.path.join(self.dir, "etcd.log"), "ab")
        self._proc = subprocess.Popen(
            [binary, "--name", "default", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"default={peer_url}"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = os.path.join(self.dir, "etcd.log")
                self.stop(keep_dir=True)
                raise RuntimeError(f"etcd did not come up within {timeout} s; see {log}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return b'"health":"true"' in r.read()
        except OSError:
            return False

    def stop(self, keep_dir: bool = False) -> None:
        """Kills etcd and waits for it; deletes its directory unless ``keep_dir``."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._log.close()
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class MqttCluster:
    """``nodes`` in-process brokers (``node0``, ``node1``, ...) of one cluster in ``etcd``.

    Each node has the settings given (over ``FIXTURE_DEFAULTS``) and a ``cluster`` table with
    its name, the etcd URL, this cluster's own prefix, a random shared secret and a short
    lease (2 s, so a stopped node is gone quickly). ``wait_formed()`` waits until every node
    sees every other registered and linked both ways. Connect clients to
    ``cluster.nodes[i].host`` / ``.port``.
    """

    def __init__(self, etcd: Etcd, n: int, start: Callable[..., "Broker"], **settings: Any) -> None:
        self.etcd = etcd
        self.prefix = f"/uringmq-test-{secrets.token_hex(6)}"
        self.secret = secrets.token_hex(16)
        extra: Dict[str, Any] = dict(settings.pop("cluster", None) or {})
        self.nodes: List["Broker"] = []
        for i in range(n):
            cluster = {"name": f"node{i}", "etcd": [etcd.url], "prefix": self.prefix,
                       "secret": self.secret, "lease_ttl_secs": 2, **extra}
            self.nodes.append(start(cluster=cluster, **settings))

    @property
    def names(self) -> List[str]:
        """The nodes' names, in order."""
        return [f"node{i}" for i in range(len(self.nodes))]

    def formed(self, nodes: Optional[List["Broker"]] = None) -> bool:
        """Whether each of ``nodes`` (default: all) sees exactly them registered and is
        linked both ways with each other one."""
        nodes = self.nodes if nodes is None else nodes
        names = sorted(s["name"] for s in (b.cluster_status() for b in nodes) if s)
        for b in nodes:
            s = b.cluster_status()
            if s is None or sorted(n["name"] for n in s["nodes"]) != names:
                return False
            for peer in names:
                link = s["links"].get(peer)
                if peer != s["name"] and not (link and link["outbound"]["up"] and link["inbound"]["up"]):
                    return False
        return len(names) == len(nodes)

    def wait_formed(self, timeout: float = 10.0, nodes: Optional[List["Broker"]] = None) -> float:
        """Waits until ``formed(nodes)``; returns the seconds it took; raises
        ``AssertionError`` with every node's view after ``timeout``."""
        start = time.monotonic()
        while not self.formed(nodes):
            if time.monotonic() - start > timeout:
                views = [b.cluster_status() for b in (self.nodes if nodes is None else nodes)]
                raise AssertionError(f"cluster not formed within {timeout} s: {views}")
            time.sleep(0.02)
        return time.monotonic() - start

    def stop(self) -> None:
        """Stops every node (etcd is the fixture's to stop)."""
        for b in self.nodes:
            b.stop()
