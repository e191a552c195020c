"""The ``mqtt_cluster`` / ``mqtt_cluster_factory`` fixtures: a real etcd on free ports and
in-process uringmq nodes that find each other through it (``Broker.cluster_status()`` and
``uringmq cluster status``), and messages that cross from one node to another."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

uringmq = pytest.importorskip("uringmq")

from mqtt_helpers import Paho  # noqa: E402


def test_two_nodes_register_and_link(mqtt_cluster):
    assert mqtt_cluster.names == ["node0", "node1"]
    for node, name in zip(mqtt_cluster.nodes, mqtt_cluster.names):
        s = node.cluster_status()
        assert s["name"] == name and s["registered"]
        assert sorted(n["name"] for n in s["nodes"]) == ["node0", "node1"]
        peer = "node1" if name == "node0" else "node0"
        assert s["links"][peer]["outbound"]["up"] and s["links"][peer]["inbound"]["up"]
        assert s["link_auth_failures"] == 0
        # Each node is an MQTT broker of its own.
        assert node.is_running and node.port > 0


@pytest.mark.mqtt_cluster(nodes=3, max_qos=1)
def test_the_marker_sets_size_and_settings_and_the_cli_sees_every_node(mqtt_cluster):
    assert len(mqtt_cluster.nodes) == 3
    assert all(n.settings["max_qos"] == 1 for n in mqtt_cluster.nodes)
    out = subprocess.run(
        [sys.executable, "-m", "uringmq", "cluster", "status",
         "--etcd", mqtt_cluster.etcd.url, "--prefix", mqtt_cluster.prefix],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for name in mqtt_cluster.names:
        assert name in out.stdout


def test_a_stopped_node_leaves_and_the_factory_makes_separate_clusters(mqtt_cluster_factory):
    first = mqtt_cluster_factory(nodes=3)
    second = mqtt_cluster_factory(nodes=1)
    first.wait_formed()
    second.wait_formed()
    # Same etcd, own prefixes: the clusters do not see each other.
    assert first.etcd is second.etcd and first.prefix != second.prefix
    assert [n["name"] for n in second.nodes[0].cluster_status()["nodes"]] == ["node0"]
    first.nodes[2].stop()
    # A stopping node revokes its lease: the others see it gone at once (bounded wait).
    first.wait_formed(nodes=first.nodes[:2])
    assert first.nodes[2].cluster_status() is None


def test_a_broker_without_cluster_settings_has_no_cluster_status(mqtt_broker):
    assert mqtt_broker.cluster_status() is None


def test_a_message_published_on_one_node_reaches_a_subscriber_on_another(mqtt_cluster):
    sub = mqtt_cluster.nodes[1].subscribe("cross/#", qos=1)
    publisher = mqtt_cluster.nodes[0]
    # The subscriber's interest reaches node0 over its link a moment after the subscribe:
    # publish until a message crosses (bounded), then every later one does, in order.
    deadline = time.monotonic() + 10
    first = None
    while first is None:
        assert time.monotonic() < deadline, "no message crossed from node0 to node1"
        publisher.publish("cross/probe", b"probe", qos=1)
        try:
            first = sub.get(timeout=0.2)
        except TimeoutError:
            pass
    assert first.topic == "cross/probe"
    for i in range(20):
        publisher.publish("cross/n", str(i).encode(), qos=1)
    got = []
    while len(got) < 20:
        m = sub.get(timeout=5)
        if m.topic == "cross/n":
            got.append(m.payload)
    assert got == [str(i).encode() for i in range(20)]
    sub.close()


def _client_ids(cluster) -> int:
    return sum(node.cluster_status()["client_ids"] for node in cluster.nodes)


def _wait_client_ids(cluster, want: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _client_ids(cluster) != want:
        assert time.monotonic() < deadline, f"client ids {_client_ids(cluster)}, want {want}"
        time.sleep(0.05)


def test_client_ids_are_owned_while_connected_and_forgotten_when_their_sessions_end(mqtt_cluster):
    # Each id has one owner among the nodes, which keeps it in its directory while the
    # id's session lives: clean sessions end at DISCONNECT, so the owners forget them.
    clients = [Paho(mqtt_cluster.nodes[0], client_id=f"owned-{i}") for i in range(20)]
    _wait_client_ids(mqtt_cluster, 20)
    for c in clients:
        c.disconnect()
    _wait_client_ids(mqtt_cluster, 0)
