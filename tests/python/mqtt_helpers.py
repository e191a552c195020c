"""Tiny MQTT 3.1 / 3.1.1 / 5.0 wire helpers for the conformance suite.

Two kinds of client live here:

* ``RawClient``: a blocking socket that writes packets byte by byte and parses what comes back.
  Used wherever a test must see the exact packets (DUP flags, packet ids, topic aliases, reason
  codes) or must send bytes no client library would (malformed packets, protocol violations).
* ``Paho``: a thin wrapper over paho-mqtt 2.x, the real third-party client, that turns its
  callbacks into queues so tests wait on events with timeouts instead of sleeping.

Nothing here asserts anything about the broker; the tests do.
"""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# Default time a test waits for something that must happen.
WAIT = 5.0


def uringmq_binary() -> str:
    """The broker binary: ``$URINGMQ_BIN``, else the first of target/{ci,release,debug}/uringmq;
    skips the test without one."""
    env = os.environ.get("URINGMQ_BIN")
    if env:
        return env
    for profile in ("ci", "release", "debug"):
        p = Path(__file__).resolve().parents[2] / "target" / profile / "uringmq"
        if p.exists():
            return str(p)
    pytest.skip("uringmq binary not built (set URINGMQ_BIN)")


def need_tool(tool: str) -> str:
    """The path of a command-line tool; skips the test without it."""
    path = shutil.which(tool)
    if not path:
        pytest.skip(f"{tool} not installed")
    return path
# Bounded time a negative assertion ("nothing else arrives") waits after a positive sync point.
QUIET = 0.3
# Time allowed for the broker to close a connection it must close (it closes at once when it does).
CLOSE_WAIT = 3.0

MQTT31, MQTT311, MQTT5 = 3, 4, 5

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)
PACKET_NAMES = dict(
    enumerate(
        "- CONNECT CONNACK PUBLISH PUBACK PUBREC PUBREL PUBCOMP SUBSCRIBE SUBACK UNSUBSCRIBE UNSUBACK "
        "PINGREQ PINGRESP DISCONNECT AUTH".split()
    )
)

_counter = itertools.count()

# Every client made by a test, so the conftest can close them all when the test ends.
LIVE: list = []


def close_all() -> None:
    """Closes every client opened by the current test (paho loops stopped, sockets closed)."""
    while LIVE:
        c = LIVE.pop()
        try:
            c.stop() if isinstance(c, Paho) else c.close()
        except Exception:
            pass


def uid(prefix: str = "t") -> str:
    """A client id / topic component unique to this test run."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}-{next(_counter)}"


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

# v5 property identifiers and their data types.
PROP_TYPES = {
    0x01: "byte",  # Payload Format Indicator
    0x02: "u32",  # Message Expiry Interval
    0x03: "str",  # Content Type
    0x08: "str",  # Response Topic
    0x09: "bin",  # Correlation Data
    0x0B: "varint",  # Subscription Identifier
    0x11: "u32",  # Session Expiry Interval
    0x12: "str",  # Assigned Client Identifier
    0x13: "u16",  # Server Keep Alive
    0x15: "str",  # Authentication Method
    0x16: "bin",  # Authentication Data
    0x17: "byte",  # Request Problem Information
    0x18: "u32",  # Will Delay Interval
    0x19: "byte",  # Request Response Information
    0x1A: "str",  # Response Information
    0x1C: "str",  # Server Reference
    0x1F: "str",  # Reason String
    0x21: "u16",  # Receive Maximum
    0x22: "u16",  # Topic Alias Maximum
    0x23: "u16",  # Topic Alias
    0x24: "byte",  # Maximum QoS
    0x25: "byte",  # Retain Available
    0x26: "pair",  # User Property
    0x27: "u32",  # Maximum Packet Size
    0x28: "byte",  # Wildcard Subscription Available
    0x29: "byte",  # Subscription Identifier Available
    0x2A: "byte",  # Shared Subscription Available
}

P_PAYLOAD_FORMAT = 0x01
P_MESSAGE_EXPIRY = 0x02
P_CONTENT_TYPE = 0x03
P_RESPONSE_TOPIC = 0x08
P_CORRELATION_DATA = 0x09
P_SUBSCRIPTION_ID = 0x0B
P_SESSION_EXPIRY = 0x11
P_ASSIGNED_CLIENT_ID = 0x12
P_SERVER_KEEP_ALIVE = 0x13
P_WILL_DELAY = 0x18
P_REASON_STRING = 0x1F
P_RECEIVE_MAXIMUM = 0x21
P_TOPIC_ALIAS_MAXIMUM = 0x22
P_TOPIC_ALIAS = 0x23
P_MAXIMUM_QOS = 0x24
P_RETAIN_AVAILABLE = 0x25
P_USER_PROPERTY = 0x26
P_MAXIMUM_PACKET_SIZE = 0x27


def varint(n: int) -> bytes:
    """Variable Byte Integer [MQTT-1.5.5]."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def s(text: str | bytes) -> bytes:
    """UTF-8 Encoded String (or raw bytes, to send invalid UTF-8 on purpose)."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def props(items: list[tuple[int, object]] | dict | None) -> bytes:
    """Encodes a v5 property list. ``items`` is a list of (id, value) or a dict id -> value."""
    if items is None:
        items = []
    if isinstance(items, dict):
        items = list(items.items())
    body = bytearray()
    for pid, value in items:
        kind = PROP_TYPES[pid]
        body += varint(pid)
        if kind == "byte":
            body += bytes([value])
        elif kind == "u16":
            body += struct.pack("!H", value)
        elif kind == "u32":
            body += struct.pack("!I", value)
        elif kind == "varint":
            body += varint(value)
        elif kind == "str":
            body += s(value)
        elif kind == "bin":
            body += s(value)
        elif kind == "pair":
            body += s(value[0]) + s(value[1])
    return varint(len(body)) + bytes(body)


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    """Fixed header + body."""
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect_packet(
    client_id: str = "",
    version: int = MQTT311,
    clean: bool = True,
    keepalive: int = 60,
    properties=None,
    will: dict | None = None,
    username: str | None = None,
    password: bytes | None = None,
    protocol_name: str | None = None,
) -> bytes:
    """A CONNECT packet. ``will`` = dict(topic, payload, qos=0, retain=False, props=None)."""
    name = protocol_name or ("MQIsdp" if version == MQTT31 else "MQTT")
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = s(name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == MQTT5:
        body += props(properties)
    body += s(client_id)
    if will:
        if version == MQTT5:
            body += props(will.get("props"))
        body += s(will["topic"]) + s(will["payload"])
    if username is not None:
        body += s(username)
    if password is not None:
        body += s(password)
    return packet(CONNECT, 0, body)


def publish_packet(
    topic: str | bytes,
    payload: bytes = b"",
    qos: int = 0,
    retain: bool = False,
    pid: int | None = None,
    dup: bool = False,
    version: int = MQTT311,
    properties=None,
) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = s(topic)
    if qos:
        body += struct.pack("!H", pid if pid is not None else 1)
    if version == MQTT5:
        body += props(properties)
    return packet(PUBLISH, flags, body + payload)


def ack_packet(ptype: int, pid: int, version: int = MQTT311, rc: int = 0, properties=None) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP (PUBREL has the reserved flags 0b0010)."""
    flags = 0x02 if ptype == PUBREL else 0
    body = struct.pack("!H", pid)
    if version == MQTT5 and (rc or properties):
        body += bytes([rc]) + props(properties)
    return packet(ptype, flags, body)


def subscribe_packet(pid: int, filters, version: int = MQTT311, properties=None) -> bytes:
    """``filters``: list of (filter, options byte). For v3 the options byte is the QoS."""
    body = struct.pack("!H", pid)
    if version == MQTT5:
        body += props(properties)
    for f, opts in filters:
        body += s(f) + bytes([opts])
    return packet(SUBSCRIBE, 0x02, body)


def unsubscribe_packet(pid: int, filters, version: int = MQTT311, properties=None) -> bytes:
    body = struct.pack("!H", pid)
    if version == MQTT5:
        body += props(properties)
    for f in filters:
        body += s(f)
    return packet(UNSUBSCRIBE, 0x02, body)


def disconnect_packet(version: int = MQTT311, rc: int = 0, properties=None) -> bytes:
    if version == MQTT5 and (rc or properties):
        return packet(DISCONNECT, 0, bytes([rc]) + props(properties))
    return packet(DISCONNECT, 0, b"")


def sub_options(qos: int = 0, no_local=False, rap=False, rh: int = 0) -> int:
    """v5 Subscription Options byte."""
    return qos | (0x04 if no_local else 0) | (0x08 if rap else 0) | (rh << 4)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


@dataclass
class Packet:
    """One decoded packet. Fields not relevant to a type stay at their defaults."""

    type: int
    flags: int
    raw: bytes
    pid: int | None = None
    rc: int | None = None
    codes: list[int] = field(default_factory=list)
    props: dict = field(default_factory=dict)
    topic: str = ""
    payload: bytes = b""
    session_present: bool = False

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x01)

    def __repr__(self) -> str:  # short, for assertion messages
        return (
            f"<{PACKET_NAMES.get(self.type, self.type)} flags={self.flags:#x} pid={self.pid} rc={self.rc} "
            f"topic={self.topic!r} payload={self.payload[:40]!r} codes={self.codes} props={self.props}>"
        )


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    mult, value = 1, 0
    while True:
        b = buf[i]
        i += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, i
        mult *= 128


def _read_str(buf: bytes, i: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from("!H", buf, i)
    return buf[i + 2 : i + 2 + n], i + 2 + n


def parse_props(buf: bytes, i: int) -> tuple[dict, int]:
    """Decodes a property list; user properties and subscription ids collect into lists."""
    length, i = _read_varint(buf, i)
    end = i + length
    out: dict = {}
    while i < end:
        pid, i = _read_varint(buf, i)
        kind = PROP_TYPES[pid]
        if kind == "byte":
            v, i = buf[i], i + 1
        elif kind == "u16":
            (v,) = struct.unpack_from("!H", buf, i)
            i += 2
        elif kind == "u32":
            (v,) = struct.unpack_from("!I", buf, i)
            i += 4
        elif kind == "varint":
            v, i = _read_varint(buf, i)
        elif kind == "str":
            v, i = _read_str(buf, i)
            v = v.decode()
        elif kind == "bin":
            v, i = _read_str(buf, i)
        else:
            k, i = _read_str(buf, i)
            val, i = _read_str(buf, i)
            v = (k.decode(), val.decode())
        if pid in (P_USER_PROPERTY, P_SUBSCRIPTION_ID):
            out.setdefault(pid, []).append(v)
        else:
            out[pid] = v
    return out, end


def parse_packet(first: int, body: bytes, version: int) -> Packet:
    ptype, flags = first >> 4, first & 0x0F
    p = Packet(ptype, flags, bytes([first]) + varint(len(body)) + body)
    v5 = version == MQTT5
    if ptype == CONNACK:
        p.session_present = bool(body[0] & 1)
        p.rc = body[1]
        if v5 and len(body) > 2:
            p.props, _ = parse_props(body, 2)
    elif ptype == PUBLISH:
        topic, i = _read_str(body, 0)
        p.topic = topic.decode("utf-8", "replace")
        if p.qos:
            (p.pid,) = struct.unpack_from("!H", body, i)
            i += 2
        if v5:
            p.props, i = parse_props(body, i)
        p.payload = body[i:]
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        (p.pid,) = struct.unpack_from("!H", body, 0)
        p.rc = body[2] if len(body) > 2 else 0
        if len(body) > 3:
            p.props, _ = parse_props(body, 3)
    elif ptype in (SUBACK, UNSUBACK):
        (p.pid,) = struct.unpack_from("!H", body, 0)
        i = 2
        if v5:
            p.props, i = parse_props(body, i)
        p.codes = list(body[i:])
    elif ptype == DISCONNECT:
        p.rc = body[0] if body else 0
        if len(body) > 1:
            p.props, _ = parse_props(body, 1)
    return p


class Closed(Exception):
    """The broker closed the connection."""


class RawClient:
    """A blocking MQTT connection over a plain socket that speaks in whole packets."""

    def __init__(self, host: str, port: int, version: int = MQTT311, timeout: float = WAIT):
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False
        self._pid = itertools.count(1)
        # Answer a PUBREL with PUBCOMP inside recv(), so QoS 2 deliveries interleave freely.
        self.auto_pubcomp = True
        LIVE.append(self)

    # -- sending --------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_pid(self) -> int:
        return next(self._pid) % 65535 + 1

    def connect(self, client_id: str = "", **kw) -> Packet:
        """Sends CONNECT and returns the CONNACK."""
        kw.setdefault("version", self.version)
        self.send(connect_packet(client_id, **kw))
        return self.expect(CONNACK)

    def publish(self, topic, payload=b"", qos=0, retain=False, pid=None, dup=False, properties=None) -> int | None:
        if qos and pid is None:
            pid = self.next_pid()
        self.send(publish_packet(topic, payload, qos, retain, pid, dup, self.version, properties))
        return pid

    def publish_acked(self, topic, payload=b"", qos=1, retain=False, properties=None) -> Packet:
        """Publishes QoS 1 or 2 and completes the handshake; returns the PUBACK / PUBCOMP."""
        pid = self.publish(topic, payload, qos, retain, properties=properties)
        if qos == 1:
            return self.expect(PUBACK, pid=pid)
        rec = self.expect(PUBREC, pid=pid)
        if rec.rc and rec.rc >= 0x80:
            return rec
        self.send(ack_packet(PUBREL, pid, self.version))
        return self.expect(PUBCOMP, pid=pid)

    def subscribe(self, *filters, properties=None) -> Packet:
        """``filters``: (filter, qos-or-options) tuples. Returns the SUBACK."""
        pid = self.next_pid()
        self.send(subscribe_packet(pid, list(filters), self.version, properties))
        return self.expect(SUBACK, pid=pid)

    def unsubscribe(self, *filters, properties=None) -> Packet:
        pid = self.next_pid()
        self.send(unsubscribe_packet(pid, list(filters), self.version, properties))
        return self.expect(UNSUBACK, pid=pid)

    def ack(self, p: Packet) -> None:
        """Acknowledges a received PUBLISH: PUBACK, or PUBREC (the PUBREL is completed by recv())."""
        if p.qos == 1:
            self.send(ack_packet(PUBACK, p.pid, self.version))
        elif p.qos == 2:
            self.send(ack_packet(PUBREC, p.pid, self.version))

    def disconnect(self, rc: int = 0, properties=None) -> None:
        try:
            self.send(disconnect_packet(self.version, rc, properties))
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Closes the socket with a RST and no DISCONNECT: an abnormal disconnect."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    # -- receiving ------------------------------------------------------------------------
    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet before the deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no packet before the deadline") from None
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            raise Closed("connection closed by the broker")
        self.buf += data

    def recv(self, timeout: float = WAIT) -> Packet:
        """The next packet; raises TimeoutError or Closed."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                i, mult, length = 1, 1, 0
                complete_header = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        complete_header = True
                        break
                if complete_header and len(self.buf) >= i + length:
                    first, body = self.buf[0], self.buf[i : i + length]
                    self.buf = self.buf[i + length :]
                    p = parse_packet(first, body, self.version)
                    if p.type == PUBREL and self.auto_pubcomp:
                        self.send(ack_packet(PUBCOMP, p.pid, self.version))
                        continue
                    return p
            self._fill(deadline)

    def expect(self, ptype: int, pid: int | None = None, timeout: float = WAIT) -> Packet:
        """The next packet, which must be of ``ptype`` (PINGRESPs are skipped)."""
        while True:
            p = self.recv(timeout)
            if p.type == PINGRESP and ptype != PINGRESP:
                continue
            assert p.type == ptype, f"expected packet type {ptype}, got {p!r}"
            if pid is not None:
                assert p.pid == pid, f"expected packet id {pid}, got {p!r}"
            return p

    def messages(self, n: int, timeout: float = WAIT, auto_ack: bool = True) -> list[Packet]:
        """Receives ``n`` PUBLISH packets (acking QoS 1/2 unless told not to)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            p = self.recv(max(0.01, deadline - time.monotonic()))
            if p.type == PINGRESP:
                continue
            assert p.type == PUBLISH, f"expected PUBLISH, got {p!r}"
            if auto_ack:
                self.ack(p)
            out.append(p)
        return out

    def drain(self, timeout: float = QUIET) -> list[Packet]:
        """Everything that arrives within ``timeout`` (no acks sent)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                out.append(self.recv(max(0.001, deadline - time.monotonic())))
            except TimeoutError:
                return out

    def expect_closed(self, timeout: float = CLOSE_WAIT) -> list[Packet]:
        """Waits until the broker closes the connection; returns the packets received before."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(self.recv(max(0.01, deadline - time.monotonic())))
            except Closed:
                return seen
            except TimeoutError:
                raise AssertionError(f"broker did not close the connection; received {seen!r}") from None

    def is_open(self) -> bool:
        """True if a PINGREQ is answered: the connection is alive and the broker still serves it."""
        try:
            self.send(packet(PINGREQ, 0, b""))
            while True:
                p = self.recv(WAIT)
                if p.type == PINGRESP:
                    return True
        except (Closed, OSError, TimeoutError):
            return False


def expect_disconnect(c: RawClient, *allowed_rc: int, timeout: float = CLOSE_WAIT) -> Packet | None:
    """Waits for the broker to close ``c``. For v5, if a DISCONNECT (or CONNACK) arrived first, its
    reason code must be one of ``allowed_rc``. Returns the DISCONNECT seen, if any."""
    seen = c.expect_closed(timeout)
    final = [p for p in seen if p.type in (DISCONNECT, CONNACK)]
    if final and allowed_rc:
        assert final[-1].rc in allowed_rc, f"reason code {final[-1].rc:#x} not in {[hex(r) for r in allowed_rc]}"
    return final[-1] if final else None


def raw(broker, version: int = MQTT311, client_id: str | None = None, **kw) -> RawClient:
    """A RawClient connected (CONNACK 0 checked) to ``broker``."""
    c = RawClient(broker.host, broker.port, version)
    ack = c.connect(client_id if client_id is not None else uid("raw"), **kw)
    assert ack.rc == 0, f"CONNACK refused: {ack!r}"
    c.connack = ack
    return c


# --------------------------------------------------------------------------------------------
# paho-mqtt
# --------------------------------------------------------------------------------------------


class Paho:
    """paho-mqtt 2.x client with its callbacks turned into queues."""

    def __init__(
        self,
        broker,
        client_id: str | None = None,
        version: int = MQTT311,
        clean: bool = True,
        session_expiry: int | None = None,
        will: dict | None = None,
        connect_props: dict | None = None,
        keepalive: int = 60,
        connect: bool = True,
    ):
        proto = {MQTT31: paho.MQTTv31, MQTT311: paho.MQTTv311, MQTT5: paho.MQTTv5}[version]
        self.version = version
        self.client_id = client_id if client_id is not None else uid("paho")
        kwargs = {}
        if version != MQTT5:
            kwargs["clean_session"] = clean
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=proto, **kwargs)
        self.messages: queue.Queue = queue.Queue()
        self.acks: queue.Queue = queue.Queue()  # (kind, mid, reason codes)
        self.connacks: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_connect = lambda c, u, flags, rc, p: self.connacks.put((flags, rc, p))
        self.c.on_disconnect = lambda c, u, flags, rc, p: self.disconnects.put(rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.acks.put(("sub", mid, rcs))
        self.c.on_unsubscribe = lambda c, u, mid, rcs, p: self.acks.put(("unsub", mid, rcs))
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.put(("pub", mid, rc))
        LIVE.append(self)
        if will:
            wp = None
            if will.get("props"):
                wp = Properties(PacketTypes.WILLMESSAGE)
                for k, v in will["props"].items():
                    setattr(wp, k, v)
            self.c.will_set(will["topic"], will.get("payload", b""), will.get("qos", 0), will.get("retain", False), wp)
        self._connect_args = (broker.host, broker.port, keepalive, clean, session_expiry, connect_props)
        self.broker = broker
        if connect:
            self.connect()

    def connect(self, clean: bool | None = None, session_expiry: int | None = None, expect_rc: int = 0):
        host, port, keepalive, clean0, se0, cprops = self._connect_args
        clean = clean0 if clean is None else clean
        se = se0 if session_expiry is None else session_expiry
        kw = {}
        if self.version == MQTT5:
            p = Properties(PacketTypes.CONNECT)
            if se is not None:
                p.SessionExpiryInterval = se
            for k, v in (cprops or {}).items():
                setattr(p, k, v)
            kw["clean_start"] = clean
            kw["properties"] = p
        self.c.connect(host, port, keepalive, **kw)
        self.c.loop_start()
        flags, rc, p = self.connacks.get(timeout=WAIT)
        assert rc.value == expect_rc, f"CONNACK {rc}"
        self.connack_flags, self.connack_props = flags, p
        return flags, p

    def publish(self, topic, payload=b"", qos=0, retain=False, props: dict | None = None, wait=True):
        p = None
        if props and self.version == MQTT5:
            p = Properties(PacketTypes.PUBLISH)
            for k, v in props.items():
                setattr(p, k, v)
        info = self.c.publish(topic, payload, qos, retain, properties=p)
        if wait:
            info.wait_for_publish(WAIT)
            assert info.is_published(), f"publish to {topic} not acknowledged"
        return info

    def subscribe(self, topic, qos=0, options=None, sub_id: int | None = None):
        """Subscribes and waits for the SUBACK; returns the reason codes (ints)."""
        p = None
        if sub_id is not None:
            p = Properties(PacketTypes.SUBSCRIBE)
            p.SubscriptionIdentifier = sub_id
        if self.version == MQTT5:
            from paho.mqtt.subscribeoptions import SubscribeOptions

            opts = options or SubscribeOptions(qos=qos)
            rc, mid = self.c.subscribe(topic, options=opts, properties=p)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == 0
        return self._wait_ack("sub", mid)

    def unsubscribe(self, topic):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == 0
        return self._wait_ack("unsub", mid)

    def _wait_ack(self, kind, mid):
        deadline = time.monotonic() + WAIT
        while True:
            k, m, rcs = self.acks.get(timeout=max(0.01, deadline - time.monotonic()))
            if k == kind and m == mid:
                return [int(r.value) if hasattr(r, "value") else int(r) for r in rcs]

    def get(self, timeout: float = WAIT):
        """The next message (raises queue.Empty after ``timeout``)."""
        return self.messages.get(timeout=timeout)

    def get_n(self, n: int, timeout: float = WAIT) -> list:
        deadline = time.monotonic() + timeout
        return [self.messages.get(timeout=max(0.01, deadline - time.monotonic())) for _ in range(n)]

    def until(self, topic: str, timeout: float = WAIT) -> list:
        """Messages received up to and including the first one on ``topic`` (the sync marker)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            m = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            out.append(m)
            if m.topic == topic:
                return out

    def disconnect(self, rc: int | None = None):
        kw = {}
        if rc is not None and self.version == MQTT5:
            from paho.mqtt.reasoncodes import ReasonCode

            kw["reasoncode"] = ReasonCode(PacketTypes.DISCONNECT, identifier=rc)
        self.c.disconnect(**kw)
        self.c.loop_stop()

    def stop(self):
        """Teardown: DISCONNECT (which also wakes paho's loop at once) and stop the loop thread."""
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def sync_marker(pub, sub, topic: str):
    """Publishes a marker on ``topic`` (which ``sub`` must be subscribed to) and returns everything ``sub``
    received up to it: a positive sync point after which a negative assertion is meaningful."""
    pub.publish(topic, b"marker", qos=1)
    return sub.until(topic)
