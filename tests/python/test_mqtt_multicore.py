"""Many clients at once, so that uringmq's cores (cores=2; the kernel spreads connections with
SO_REUSEPORT) all carry sessions: exactly-once delivery, ordering, takeover, retained and shared
subscriptions must not depend on which core a client landed on."""

import threading
from collections import Counter

from mqtt_helpers import MQTT5, MQTT311, P_SESSION_EXPIRY, PUBLISH, QUIET, RawClient, disconnect_packet, raw, uid

N_PUB, N_SUB, PER_PUB = 24, 24, 20


def _run_all(fns):
    """Runs the callables in threads; re-raises the first failure."""
    errors = []

    def wrap(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]


def test_many_publishers_and_subscribers_exactly_once(broker):
    """24 publishers x 20 QoS 1 messages to 24 wildcard subscribers, all concurrent: every subscriber
    gets all 480 exactly once, and each publisher's messages in order [MQTT-4.6.0-5]."""
    base = uid("mc")
    subs = [raw(broker, MQTT311 if i % 2 else MQTT5) for i in range(N_SUB)]
    for s in subs:
        s.subscribe((f"{base}/#", 1))
    pubs = [raw(broker, MQTT311 if i % 2 else MQTT5) for i in range(N_PUB)]
    received = {i: [] for i in range(N_SUB)}

    def publisher(i):
        def run():
            for n in range(PER_PUB):
                pubs[i].publish_acked(f"{base}/{i}", f"{i}:{n}".encode(), qos=1)

        return run

    def subscriber(i):
        def run():
            received[i] = [m.payload.decode() for m in subs[i].messages(N_PUB * PER_PUB, timeout=30)]

        return run

    _run_all([publisher(i) for i in range(N_PUB)] + [subscriber(i) for i in range(N_SUB)])
    expected = sorted(f"{i}:{n}" for i in range(N_PUB) for n in range(PER_PUB))
    for i, got in received.items():
        dupes = [k for k, v in Counter(got).items() if v > 1]
        assert not dupes, f"subscriber {i} got duplicates {dupes[:5]}"
        assert sorted(got) == expected, f"subscriber {i}: {len(got)} of {len(expected)}"
        for p in range(N_PUB):
            seq = [int(x.split(":")[1]) for x in got if x.startswith(f"{p}:")]
            assert seq == list(range(PER_PUB)), f"subscriber {i} saw publisher {p} out of order"
    for s in subs:
        assert [p for p in s.drain(0.05) if p.type == PUBLISH] == []


def test_subscribe_then_publish_from_other_connection(broker):
    """Causality across cores: once SUBACK is received, a message published on any other connection is
    delivered. 16 fresh subscriber/publisher pairs, so pairs straddle cores."""
    for _ in range(16):
        topic = uid("cause")
        sub = raw(broker, MQTT311)
        pub = raw(broker, MQTT311)
        sub.subscribe((topic, 1))
        pub.publish_acked(topic, b"x", qos=1)
        assert [m.payload for m in sub.messages(1)] == [b"x"]
        sub.close()
        pub.close()


def test_takeover_across_cores(broker):
    """Takeover of a client id whose first connection may be on the other core: 12 persistent sessions,
    each taken over by a second connection; the old one is closed, the new one has the session (session
    present, its subscription, and a message queued while the takeover happened)."""
    ids = [uid("mt") for _ in range(12)]
    topic = uid("mt/t")
    firsts = []
    for cid in ids:
        c = RawClient(broker.host, broker.port, MQTT5)
        assert c.connect(cid, clean=True, properties={P_SESSION_EXPIRY: 300}).rc == 0
        c.subscribe((f"{topic}/{cid}", 1))
        firsts.append(c)
    pub = raw(broker, MQTT5)
    for cid, old in zip(ids, firsts):
        new = RawClient(broker.host, broker.port, MQTT5)
        ack = new.connect(cid, clean=False, properties={P_SESSION_EXPIRY: 300})
        assert ack.rc == 0 and ack.session_present, f"{cid}: {ack!r}"
        old.expect_closed()
        pub.publish_acked(f"{topic}/{cid}", cid.encode(), qos=1)
        assert [m.payload for m in new.messages(1)] == [cid.encode()]
        new.send(disconnect_packet(MQTT5, 0, {P_SESSION_EXPIRY: 0}))
        new.expect_closed()


def test_retained_visible_from_every_connection(broker):
    """A retained message set on one connection is delivered to subscribers on every core."""
    topic = uid("mr")
    raw(broker, MQTT311).publish_acked(topic, b"everywhere", qos=1, retain=True)
    for _ in range(12):
        s = raw(broker, MQTT311)
        s.subscribe((topic, 1))
        (m,) = s.messages(1)
        assert (m.payload, m.retain) == (b"everywhere", True)
        s.close()


def test_shared_group_across_cores_exactly_once(broker):
    """$share members spread over both cores: each of 200 messages reaches exactly one member."""
    topic = uid("ms")
    members = [raw(broker, MQTT5) for _ in range(8)]
    for m in members:
        m.subscribe((f"$share/g/{topic}", 1))
    pub = raw(broker, MQTT5)
    n = 200
    for i in range(n):
        pub.publish(topic, str(i).encode(), qos=1)
    got = []
    idle = 0
    while len(got) < n:
        moved = False
        for m in members:
            for p in m.drain(0.02):
                if p.type == PUBLISH:
                    m.ack(p)
                    got.append(int(p.payload))
                    moved = True
        idle = 0 if moved else idle + 1
        assert idle < 100, f"stalled at {len(got)}/{n}"
    for m in members:
        got += [int(p.payload) for p in m.drain(QUIET) if p.type == PUBLISH]
    assert sorted(got) == list(range(n))
