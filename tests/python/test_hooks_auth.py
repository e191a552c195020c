"""Python hooks (authentication, authorisation, disconnect: allow, deny, raise) and the
embedder's view of clients: ``clients()``, ``disconnect()``."""

from __future__ import annotations

import logging
import queue
import threading
import time

import pytest

uringmq = pytest.importorskip("uringmq")
import mqtt_helpers  # noqa: E402
from mqtt_helpers import DISCONNECT, MQTT311, MQTT5, Paho, RawClient, uid  # noqa: E402

WAIT = 5.0


@pytest.fixture
def make():
    brokers = []

    def start(**kw):
        b = uringmq.Broker(port=0, cores=2, pin_cores=False, **kw).start()
        brokers.append(b)
        return b

    yield start
    mqtt_helpers.close_all()
    for b in brokers:
        b.stop()


def connack(broker, version=MQTT311, **kw) -> int:
    c = RawClient(broker.host, broker.port, version)
    try:
        return c.connect(uid("hook"), **kw).rc
    finally:
        c.close()


def test_authenticate_sees_the_client_and_decides(make):
    calls = []

    def authenticate(client, password):
        calls.append((client.username, password, threading.current_thread() is threading.main_thread()))
        return client.username == "alice" and password == b"secret"

    b = make(authenticate=authenticate)
    assert connack(b, username="alice", password=b"secret") == 0
    assert connack(b, username="alice", password=b"wrong") == 4  # v3.1.1: bad user name or password
    assert connack(b, MQTT5, username="mallory", password=b"x") == 0x86
    assert ("alice", b"secret", False) in calls  # called, and not on the main thread
    assert b.stats().auth_failures >= 2


def test_authenticate_can_name_the_reason(make):
    b = make(authenticate=lambda client, password: "banned")
    assert connack(b, MQTT5, username="u", password=b"p") == 0x8A


def test_raising_authenticate_denies_and_logs(make, caplog):
    def authenticate(client, password):
        raise RuntimeError("database down")

    b = make(authenticate=authenticate)
    with caplog.at_level(logging.ERROR, logger="uringmq"):
        assert connack(b, MQTT5, username="u", password=b"p") == 0x87
    assert any("authenticate" in r.getMessage() and "database down" in r.exc_text for r in caplog.records)


def test_authorize_filters_publish_and_subscribe(make):
    def authorize(client, access, topic):
        if access == "subscribe":
            return not topic.startswith("secret")
        if access == "publish":
            return topic != "forbidden"
        return True

    b = make(authorize=authorize)
    with b.subscribe("#") as spy:
        c = mqtt_helpers.raw(b, MQTT5)
        suback = c.subscribe(("secret/#", 1), ("open/#", 1))
        assert suback.codes[0] >= 0x80 and suback.codes[1] == 1
        c.publish("forbidden", b"no", qos=0)
        c.publish("open/1", b"yes", qos=0)
        # The allowed publish arrives; the forbidden one (sent first) never did.
        m = spy.get(WAIT)
        assert (m.topic, m.payload) == ("open/1", b"yes")
        assert spy.poll() is None


def test_raising_authorize_denies_and_logs(make, caplog):
    def authorize(client, access, topic):
        raise ValueError(f"bad rule for {topic}")

    b = make(authorize=authorize)
    with caplog.at_level(logging.ERROR, logger="uringmq"):
        c = mqtt_helpers.raw(b, MQTT5)
        suback = c.subscribe(("t/#", 1))
    assert suback.codes[0] >= 0x80
    assert any("authorize" in r.getMessage() and "bad rule for t/#" in r.exc_text for r in caplog.records)


def test_on_connect_gets_the_client_id_user_and_password(make):
    calls = []

    def on_connect(client_id, username, password):
        calls.append((client_id, username, password))
        return password == b"secret"

    b = make(on_connect=on_connect)
    assert connack(b, MQTT5, username="alice", password=b"secret") == 0
    assert connack(b, MQTT5, username="alice", password=b"wrong") == 0x86
    assert [(u, p) for _, u, p in calls] == [("alice", b"secret"), ("alice", b"wrong")]
    assert all(cid.startswith("hook") for cid, _, _ in calls)


def test_readme_only_alice_hook_refuses_an_anonymous_paho_client(make):
    seen = []

    def on_connect(client_id, username, password):  # the README's hook
        seen.append(username)
        return username == "alice" and password == b"secret"

    # Loopback only: without the hook, anonymous clients would be let in.
    b = make(on_connect=on_connect)
    for version in (MQTT311, MQTT5):
        # paho reports the v3.1.1 return code 4 as reason 0x86 too.
        Paho(b, version=version, connect=False).connect(expect_rc=0x86)
    alice = Paho(b, version=MQTT5, connect=False)
    alice.c.username_pw_set("alice", "secret")
    alice.connect()
    assert seen == [None, None, "alice"]


def test_on_publish_and_on_subscribe_each_check_their_access(make):
    published, subscribed = [], []

    def on_publish(client, topic):
        published.append(topic)
        return topic != "forbidden"

    def on_subscribe(client, topic_filter):
        subscribed.append(topic_filter)
        return topic_filter != "secret/#"

    b = make(on_publish=on_publish, on_subscribe=on_subscribe)
    with b.subscribe("#") as spy:
        c = mqtt_helpers.raw(b, MQTT5)
        suback = c.subscribe(("secret/#", 1), ("open/#", 1))
        assert suback.codes[0] >= 0x80 and suback.codes[1] == 1
        c.publish("forbidden", b"no", qos=0)
        c.publish("open/1", b"yes", qos=0)
        m = spy.get(WAIT)
        assert (m.topic, m.payload) == ("open/1", b"yes")
        assert spy.poll() is None
    assert subscribed == ["secret/#", "open/#"]
    assert published == ["forbidden", "open/1"]


def test_on_subscribe_alone_leaves_publishes_open(make):
    b = make(on_subscribe=lambda client, topic_filter: False)
    with b.subscribe("t") as spy:
        c = mqtt_helpers.raw(b, MQTT5)
        assert c.subscribe(("t", 0)).codes[0] >= 0x80
        c.publish("t", b"allowed", qos=0)
        assert spy.get(WAIT).payload == b"allowed"


def test_raising_on_publish_denies_and_logs(make, caplog):
    def on_publish(client, topic):
        raise KeyError("no such device")

    b = make(on_publish=on_publish)
    with caplog.at_level(logging.ERROR, logger="uringmq"), b.subscribe("#") as spy:
        c = mqtt_helpers.raw(b, MQTT5)
        c.publish("t/1", b"x", qos=0)
        assert c.publish_acked("t/2", b"y", qos=1).rc == 0x87  # not authorised
        assert spy.poll() is None
    assert any("no such device" in (r.exc_text or "") for r in caplog.records)


@pytest.mark.parametrize(
    "hooks",
    [
        {"authenticate": lambda c, p: True, "on_connect": lambda i, u, p: True},
        {"authorize": lambda c, a, t: True, "on_publish": lambda c, t: True},
        {"authorize": lambda c, a, t: True, "on_subscribe": lambda c, t: True},
    ],
)
def test_a_hook_and_its_fine_grained_form_are_exclusive(hooks):
    with pytest.raises(TypeError, match="not both"):
        uringmq.Broker(port=0, **hooks)


def test_clients_lists_who_is_connected(make):
    b = make()
    before = time.time()
    alice = mqtt_helpers.raw(b, MQTT5, client_id="alice", username="alice", password=b"x")
    bob = mqtt_helpers.raw(b, MQTT311, client_id="bob")
    clients = {c.client_id: c for c in b.clients()}
    assert set(clients) == {"alice", "bob"}
    a = clients["alice"]
    assert (a.username, a.listener, a.protocol) == ("alice", "default", 5)
    assert a.peer == alice.sock.getsockname()[:2]
    assert before - 1 <= a.connected_since <= time.time() + 1
    assert clients["bob"].protocol == 4 and clients["bob"].username is None
    bob.disconnect()
    deadline = time.monotonic() + WAIT
    while [c.client_id for c in b.clients()] != ["alice"]:
        assert time.monotonic() < deadline, b.clients()
        time.sleep(0.01)


def test_disconnect_kicks_a_client_with_administrative_action(make):
    b = make()
    c = mqtt_helpers.raw(b, MQTT5, client_id="victim")
    assert b.disconnect("victim") is True
    d = mqtt_helpers.expect_disconnect(c, 0x98)
    assert d is not None and d.type == DISCONNECT
    assert b.disconnect("victim") is False
    assert b.disconnect("nobody") is False


def test_kicked_client_will_is_published_only_with_will(make):
    """Mosquitto's kick takes ``with_will``; its dynamic-security plugin passes false."""
    b = make()
    with b.subscribe("wills/#") as sub:
        quiet = mqtt_helpers.raw(b, MQTT311, client_id="quiet", will={"topic": "wills/quiet", "payload": b"q"})
        assert b.disconnect("quiet")
        mqtt_helpers.expect_disconnect(quiet)
        mqtt_helpers.raw(b, MQTT311, client_id="loud", will={"topic": "wills/loud", "payload": b"gone"})
        assert b.disconnect("loud", with_will=True)
        # Wills of both kicks would be routed in kick order; only the one asked for comes.
        assert sub.get(WAIT).topic == "wills/loud"
        assert sub.poll() is None


@pytest.fixture
def acl(tmp_path):
    """Anonymous clients may write ``open/#``; alice may write ``alice/#``; all may read."""
    path = tmp_path / "acl"
    path.write_text("topic read #\ntopic write open/#\n\nuser alice\ntopic read #\ntopic write alice/#\n")
    return str(path)


def test_in_process_publish_is_authorised_by_the_acl_file(make, acl):
    b = make(acl_file=acl)
    reader = Paho(b)
    reader.subscribe("#", 0)
    with pytest.raises(PermissionError, match="alice/x"):
        b.publish("alice/x", b"anonymous")  # anonymous rules: open/# only
    b.publish("open/x", b"anonymous")
    b.publish("alice/y", b"as alice", username="alice")
    with pytest.raises(PermissionError):
        b.publish("open/y", b"as alice", username="alice")
    with b.subscribe("x") as sub, pytest.raises(PermissionError):
        sub.publish("alice/z", b"from a subscription")
    assert [m.topic for m in reader.get_n(2)] == ["open/x", "alice/y"]


def test_in_process_publish_to_sys_is_refused(make):
    b = make(sys_interval_secs=0)  # the broker's own $SYS topics would reach the subscription
    with b.subscribe("$SYS/#") as sub:
        with pytest.raises(PermissionError, match=r"\$SYS"):
            b.publish("$SYS/broker/uptime", b"forged")
        b.publish("$app/x", b"allowed")  # only $SYS/ is the broker's
        assert sub.poll() is None


def test_in_process_publish_asks_the_hook_on_the_calling_thread(make):
    calls = []

    def authorize(client, access, topic):
        if access == "publish":
            calls.append((client.client_id, client.username, client.listener, threading.current_thread()))
        return not topic.startswith("secret/")

    b = make(authorize=authorize)
    b.publish("t/1", b"x")
    b.publish("t/2", b"x", username="bob")
    with pytest.raises(PermissionError):
        b.publish("secret/1", b"x")
    me = threading.current_thread()
    assert calls == [
        ("$inprocess", None, "default", me),
        ("$inprocess", "bob", "default", me),
        ("$inprocess", None, "default", me),
    ]


def test_on_disconnect_tells_who_left_and_why(make):
    events: "queue.Queue" = queue.Queue()
    b = make(on_disconnect=lambda client, reason: events.put((client.client_id, client.username, reason)))
    c = mqtt_helpers.raw(b, MQTT5, client_id="polite", username="u", password=b"p")
    c.disconnect()
    assert events.get(timeout=WAIT) == ("polite", "u", "client_disconnected")
    c = mqtt_helpers.raw(b, MQTT311, client_id="rude")
    c.close()
    assert events.get(timeout=WAIT) == ("rude", None, "connection_lost")
    mqtt_helpers.raw(b, MQTT5, client_id="kicked")
    b.disconnect("kicked")
    assert events.get(timeout=WAIT) == ("kicked", None, "administrative_action")
    mqtt_helpers.raw(b, MQTT5, client_id="twice")
    mqtt_helpers.raw(b, MQTT5, client_id="twice")
    assert events.get(timeout=WAIT) == ("twice", None, "session_taken_over")


def test_raising_hook_logs_its_traceback(make, caplog):
    def on_disconnect(client, reason):
        raise RuntimeError("audit log down")

    b = make(on_disconnect=on_disconnect)
    with caplog.at_level(logging.ERROR, logger="uringmq"):
        mqtt_helpers.raw(b, MQTT311, client_id=uid("t")).disconnect()
        deadline = time.monotonic() + WAIT
        while not any(r.exc_text or r.exc_info for r in caplog.records):
            assert time.monotonic() < deadline, "nothing logged"
            time.sleep(0.01)
    (record,) = [r for r in caplog.records if "on_disconnect" in r.getMessage()]
    text = logging.Formatter().formatException(record.exc_info)
    # The traceback, not only the message: it names the hook's own frame (before Python 3.12
    # only "RuntimeError: audit log down" was logged).
    assert "Traceback" in text and "in on_disconnect" in text and "audit log down" in text


def test_raising_authenticate_logs_its_traceback_on_every_python(make, caplog):
    def authenticate(client, password):
        raise RuntimeError("database down")

    b = make(authenticate=authenticate)
    with caplog.at_level(logging.ERROR, logger="uringmq"):
        c = mqtt_helpers.RawClient(b.host, b.port, MQTT5)
        assert c.connect(uid("t"), username="u", password=b"p").rc == 0x87
        c.close()
    (record,) = [r for r in caplog.records if "authenticate" in r.getMessage()]
    text = logging.Formatter().formatException(record.exc_info)
    assert "Traceback" in text and "in authenticate" in text and "database down" in text, text


def test_a_sleeping_hook_times_out_and_stop_returns(make):
    release, returned = threading.Event(), threading.Semaphore(0)

    def authenticate(client, password):
        while not release.is_set():  # a hook stuck on a backend that never answers
            time.sleep(0.05)
        returned.release()
        return True

    b = make(authenticate=authenticate, hook_timeout_ms=300)
    try:
        started = time.monotonic()
        assert connack(b, MQTT5) == 0x88  # server unavailable, after the timeout
        assert connack(b, MQTT311) == 3
        assert time.monotonic() - started >= 0.5
        assert b.stats().hook_timeouts == 2
        # One more client is waiting on a stuck hook when the broker stops.
        waiting = RawClient(b.host, b.port, MQTT5)
        waiting.send(mqtt_helpers.connect_packet(uid("waiting"), version=MQTT5))
        started = time.monotonic()
        b.stop()
        assert time.monotonic() - started < 3.0, "stop() waited for the hook"
        waiting.close()
    finally:
        release.set()
        # The three stuck calls return before the test ends: a hook thread still inside Python
        # when the interpreter finalises would abort the process.
        for _ in range(3):
            returned.acquire(timeout=WAIT)


def _hs256(claims: dict, secret: bytes) -> bytes:
    """A compact HS256 JWT, made with the standard library."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, head + b"." + body, hashlib.sha256).digest()
    return head + b"." + body + b"." + b64(sig)


def test_jwt_settings_are_keyword_arguments(make, tmp_path):
    secret = tmp_path / "jwt.secret"
    secret.write_bytes(b"py-secret\n")
    b = make(jwt_secret_file=secret, jwt_acl_claim="acl", auth_failure_delay_ms=0)
    assert b.settings["jwt_username_claim"] == "sub"
    acl = {"pub": ["py/%u/#"], "sub": []}
    good = _hs256({"sub": "py", "exp": int(time.time()) + 600, "acl": acl}, b"py-secret")
    expired = _hs256({"sub": "py", "exp": int(time.time()) - 600}, b"py-secret")
    assert connack(b, MQTT5, password=good) == 0  # v5: no user name needed
    assert connack(b, MQTT311, username="py", password=good) == 0
    assert connack(b, MQTT5, password=expired) == 0x86
    assert connack(b, MQTT311, username="py", password=expired) == 4
    with b.subscribe("#") as spy:
        c = mqtt_helpers.raw(b, MQTT5, password=good)
        assert c.publish_acked("py/py/1", b"ok", qos=1).rc == 0
        assert c.publish_acked("other/1", b"no", qos=1).rc == 0x87
        assert spy.get(WAIT).topic == "py/py/1"
        assert spy.poll() is None
