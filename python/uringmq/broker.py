"""The embeddable broker: settings, start/stop, in-process publish and subscribe."""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _uringmq
from .subscription import Subscription

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .settings import BridgeSettings, Settings

__all__ = [
    "Broker",
    "Payload",
    "AuthenticateHook",
    "AuthorizeHook",
    "ConnectHook",
    "DisconnectHook",
    "TopicHook",
]

#: What ``publish`` accepts as a payload: bytes-like, or str (UTF-8), int or float (their text,
#: as paho-mqtt does).
Payload = Union[bytes, bytearray, memoryview, str, int, float, None]

#: ``authenticate(client, password) -> bool | str``: True lets the client in, False refuses it
#: with "bad user name or password", a string names the reason (``"not_authorized"``,
#: ``"banned"``, ``"bad_credentials"``, ``"bad_authentication_method"``,
#: ``"server_unavailable"``). A hook that raises refuses the client and logs on ``uringmq``.
#: It sees every CONNECT, anonymous ones with ``client.username`` None, before the
#: ``password_file`` and ``allow_anonymous`` (as a Mosquitto auth plugin does), and its answer is
#: final. A call that outlives ``hook_timeout_ms`` (default 5000) refuses the client with
#: "server unavailable" and logs a warning; ``stop()`` never waits for a hook that is stuck.
AuthenticateHook = Callable[[_uringmq.ClientInfo, Optional[bytes]], Union[bool, str]]

#: ``authorize(client, access, topic) -> bool`` with access ``"publish"`` or ``"subscribe"``
#: (topic is then a filter). Deliveries are not asked (a Python call per message would stall the
#: cores); only an ``acl_file`` filters them. A hook that raises, or outlives ``hook_timeout_ms``,
#: denies and logs on ``uringmq``.
AuthorizeHook = Callable[[_uringmq.ClientInfo, str, str], bool]

#: ``on_connect(client_id, username, password) -> bool | str``: ``authenticate`` with the
#: client's identity spread out; same return values.
ConnectHook = Callable[[str, Optional[str], Optional[bytes]], Union[bool, str]]

#: ``on_disconnect(client, reason)``: a client's connection ended (after CONNACK). ``client`` is a
#: ``Client`` (as ``Broker.clients()`` lists them); ``reason`` a stable name:
#: ``"client_disconnected"``, ``"client_disconnected_with_will"``, ``"connection_lost"``,
#: ``"socket_error"``, ``"protocol_error"``, ``"keep_alive_timeout"``, ``"session_taken_over"``,
#: ``"administrative_action"`` (``Broker.disconnect``) or ``"server_shutting_down"``. Called on a
#: helper thread after the fact; nobody waits for it. With several hook threads, two calls for one
#: client may run concurrently or out of order. If it raises, the traceback is logged on
#: ``uringmq``.
DisconnectHook = Callable[[_uringmq.Client, str], None]

#: ``on_publish(client, topic) -> bool`` / ``on_subscribe(client, topic_filter) -> bool``: the two
#: halves of ``authorize``.
TopicHook = Callable[[_uringmq.ClientInfo, str], bool]

# Running brokers, stopped at interpreter exit so no broker thread outlives Python. Weak: a broker
# nobody references is stopped by its own finaliser instead.
_running: "weakref.WeakSet[Broker]" = weakref.WeakSet()
_running_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    # First: from now on, daemon threads woken by the stops below (blocked in Subscription.get)
    # park instead of taking the GIL while the interpreter finalises (that would abort).
    _uringmq.interpreter_exiting()
    with _running_lock:
        brokers = list(_running)
    for broker in brokers:
        broker.stop()
    # A hook thread still inside a Python callback when the interpreter finalises would abort
    # the process; stop() leaves hooks stuck past hook_timeout_ms running, so give them a
    # bounded chance to return.
    _uringmq.wait_for_hooks(2.0)


def _hooks(
    authenticate: Optional[AuthenticateHook],
    authorize: Optional[AuthorizeHook],
    on_connect: Optional[ConnectHook],
    on_publish: Optional[TopicHook],
    on_subscribe: Optional[TopicHook],
) -> Tuple[Optional[AuthenticateHook], Optional[AuthorizeHook]]:
    """Folds the ``on_*`` hooks into the two the native broker calls."""
    if on_connect is not None:
        if authenticate is not None:
            raise TypeError("pass authenticate or on_connect, not both")
        connect_hook = on_connect

        def authenticate(client: _uringmq.ClientInfo, password: Optional[bytes]) -> Union[bool, str]:
            return connect_hook(client.client_id, client.username, password)

    if on_publish is not None or on_subscribe is not None:
        if authorize is not None:
            raise TypeError("pass authorize or on_publish/on_subscribe, not both")
        checks = {"publish": on_publish, "subscribe": on_subscribe}

        def authorize(client: _uringmq.ClientInfo, access: str, topic: str) -> bool:
            check = checks.get(access)
            return True if check is None else check(client, topic)

    return authenticate, authorize


def _payload_bytes(payload: Payload) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, (int, float)) and not isinstance(payload, bool):
        return str(payload).encode("ascii")
    raise TypeError(f"payload must be bytes, str, int, float or None, not {type(payload).__name__}")


class Broker:
    """An MQTT broker running on background threads of this process.

    Every key of the broker's TOML config file is a keyword argument (``port``, ``bind``,
    ``cores``, ``max_packet_size``, ``allow_anonymous``, ``listener=[{...}]``...); ``config`` is a
    path to such a file, whose keys the keyword arguments override. A bad setting raises
    ``ValueError`` naming the key, here, before anything starts. ``None`` means "the default".

    ``start()`` binds and starts (``OSError`` with ``errno.EADDRINUSE`` if the port is taken);
    ``stop()`` stops and joins every thread and frees the port; both are idempotent and a stopped
    broker can be started again. ``with Broker(port=0) as b:`` does both. Any number of brokers
    may run in one process; running brokers are stopped at interpreter exit.

    ``authenticate`` and ``authorize`` are optional Python hooks (see ``AuthenticateHook`` and
    ``AuthorizeHook``), or in finer grain ``on_connect``, ``on_publish`` and ``on_subscribe``
    (``ConnectHook``, ``TopicHook``); ``on_disconnect`` (``DisconnectHook``) is told when a
    client leaves. The broker calls them on a helper thread, never on a core.

    The keyword settings are typed (``uringmq.settings.Settings``): mypy and pyright flag an
    unknown or mistyped setting.
    """

    def __init__(
        self,
        config: Union[str, "os.PathLike[str]", None] = None,
        *,
        authenticate: Optional[AuthenticateHook] = None,
        authorize: Optional[AuthorizeHook] = None,
        on_connect: Optional[ConnectHook] = None,
        on_publish: Optional[TopicHook] = None,
        on_subscribe: Optional[TopicHook] = None,
        on_disconnect: Optional[DisconnectHook] = None,
        **settings: "Unpack[Settings]",
    ) -> None:
        authenticate, authorize = _hooks(authenticate, authorize, on_connect, on_publish, on_subscribe)
        self._native = _uringmq.NativeBroker(
            dict(settings),
            os.fspath(config) if config is not None else None,
            authenticate,
            authorize,
            on_disconnect,
        )
        self._subscriptions: "weakref.WeakSet[Subscription]" = weakref.WeakSet()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "Broker":
        """Binds the listeners and starts the cores; returns self. No-op while running."""
        self._native.start()
        with _running_lock:
            _running.add(self)
        return self

    def stop(self) -> None:
        """Stops the broker: closes every connection (no wills), joins every thread, frees the
        port. In-process subscriptions end (``SubscriptionClosed`` once drained). Idempotent.
        Bounded in time: a hook thread stuck in a callback past ``hook_timeout_ms`` is left to
        finish, never waited for."""
        self._native.stop()
        with _running_lock:
            _running.discard(self)
        for sub in list(self._subscriptions):
            sub._wake()

    def restart(self) -> "Broker":
        """Stops (if running) and starts again on the ports of the last start (a ``port=0``
        broker keeps the port it got, also after ``stop()``; ``OSError`` if another process
        took it meanwhile), so clients can reconnect to the address they had: for tests of
        client reconnection.
        Everything in memory is gone (sessions, retained messages) and in-process subscriptions
        end, as with ``stop()``. Returns self."""
        self._native.restart()
        with _running_lock:
            _running.add(self)
        for sub in list(self._subscriptions):
            sub._wake()
        return self

    @property
    def is_running(self) -> bool:
        """Whether the broker runs."""
        return self._native.is_running

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> "Broker":
        await asyncio.get_running_loop().run_in_executor(None, self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Joining the cores takes a moment: not on the event loop's thread.
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    # -- where it listens ------------------------------------------------------------------------

    @property
    def address(self) -> Tuple[str, int]:
        """``(host, port)`` of the default listener: the bound port while running (port 0
        resolved), the configured one otherwise."""
        addr = self._native.local_addr
        return addr if addr is not None else self._native.configured_addr

    @property
    def host(self) -> str:
        """Host of the default listener (``127.0.0.1`` unless ``bind`` says otherwise)."""
        return self.address[0]

    @property
    def port(self) -> int:
        """Port of the default listener; the real one once started with ``port=0``."""
        return self.address[1]

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the default listener (IPv6 hosts in brackets)."""
        host, port = self.address
        return f"mqtt://[{host}]:{port}" if ":" in host else f"mqtt://{host}:{port}"

    @property
    def listeners(self) -> Sequence[Tuple[str, str, int]]:
        """``(name, host, port)`` of every listener while running, else empty."""
        return self._native.listener_addrs

    @property
    def settings(self) -> Mapping[str, Any]:
        """The effective settings, defaults included (unset optional keys are absent)."""
        return self._native.settings

    @property
    def config_toml(self) -> str:
        """The effective settings as a TOML document (a config file for the ``uringmq`` binary)."""
        return self._native.config_toml

    # -- in-process messaging --------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: Payload = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Optional[Mapping[str, Any]] = None,
        *,
        username: Optional[str] = None,
    ) -> None:
        """Publishes a message as if a client had, without a socket.

        ``properties`` are MQTT 5 publish properties: ``payload_format_indicator``,
        ``message_expiry_interval``, ``content_type``, ``response_topic``,
        ``correlation_data`` (bytes) and ``user_properties`` (list of pairs or dict).

        It is authorised like a client's PUBLISH: ``$SYS/`` topics are refused, and the
        ``acl_file`` and the ``authorize`` hook decide for the client id ``"$inprocess"`` on
        the listener ``"default"`` with user name ``username`` (``None``: the ACL file's
        anonymous and ``pattern`` rules apply). The hook is called on the calling thread; it
        must not call this broker's methods from there. With no ACL file and no hook every
        topic but ``$SYS/`` is allowed.
        Raises ``PermissionError`` when denied, ``ValueError`` for a bad topic or property,
        ``RuntimeError`` if not running.
        """
        props = dict(properties) if properties is not None else None
        self._native.publish(topic, _payload_bytes(payload), qos, retain, props, username)

    def subscribe(
        self,
        topic_filter: str,
        qos: int = 2,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        subscription_identifier: Optional[int] = None,
    ) -> Subscription:
        """Subscribes in-process and returns once the subscription is effective (messages
        published afterwards, by anyone, reach it; retained ones arrive first).

        Messages arrive at the minimum of their QoS and ``qos``. The MQTT 5 subscription
        options work as for a client: ``no_local`` (skip what ``Subscription.publish`` sends),
        ``retain_as_published`` (keep the RETAIN flag of live messages), ``retain_handling``
        (0: send retained messages now, 1: the same for a new subscription, which this always
        is, 2: do not send them), ``subscription_identifier`` (1..268435455, listed in each
        message's ``properties["subscription_identifiers"]``). ``$share/group/filter`` joins a
        shared group. Use the result as a context manager, iterate it (blocking or
        ``async for``), or call ``get``/``get_async``.
        """
        options = {
            "no_local": no_local,
            "retain_as_published": retain_as_published,
            "retain_handling": retain_handling,
            "subscription_identifier": subscription_identifier,
        }
        sub = Subscription(self._native.subscribe(topic_filter, qos, options))
        self._subscriptions.add(sub)
        return sub

    async def subscribe_async(
        self,
        topic_filter: str,
        qos: int = 2,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        subscription_identifier: Optional[int] = None,
    ) -> Subscription:
        """``subscribe`` without blocking the event loop while the cores register the filter."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None,
            lambda: self.subscribe(
                topic_filter,
                qos,
                no_local=no_local,
                retain_as_published=retain_as_published,
                retain_handling=retain_handling,
                subscription_identifier=subscription_identifier,
            ),
        )

    def clients(self) -> List[_uringmq.Client]:
        """The connected clients (``client_id``, ``username``, ``listener``, ``peer``,
        ``protocol`` 3/4/5, ``connected_since`` in ``time.time()`` seconds); empty while
        stopped."""
        return self._native.clients()

    def disconnect(self, client_id: str, *, with_will: bool = False) -> bool:
        """Closes the connection of client ``client_id`` (an MQTT 5 client gets DISCONNECT with
        reason 0x98, administrative action). Its will is published only ``with_will=True``,
        else discarded, as Mosquitto's ``mosquitto_kick_client_by_clientid(id, with_will)``
        (its dynamic-security plugin kicks without the will). A persistent session stays.
        Returns whether the client was connected."""
        return self._native.disconnect(client_id, with_will)

    def add_bridge(self, bridge: Optional[BridgeSettings] = None, **keys: Any) -> None:
        """Starts a bridge to another broker on the running broker, from the keys of a
        ``[[bridge]]`` table (``name``, ``address``, ``protocol``, ``client_id``, TLS files,
        ``topic=[{"pattern": ..., "direction": "out"|"in"|"both", "qos": ..., "local_prefix":
        ..., "remote_prefix": ...}]``...), as a dict and/or keywords. Returns once its local
        subscriptions are in place, without waiting for the remote (see ``bridges()``).
        ValueError names a bad key or a name in use."""
        table: dict = dict(bridge or {})
        table.update(keys)
        self._native.add_bridge(table)

    def remove_bridge(self, name: str) -> bool:
        """Stops bridge ``name`` (configured or added); its queued messages are dropped.
        Returns whether it existed."""
        return self._native.remove_bridge(name)

    def bridges(self) -> List[dict]:
        """Every bridge's state: ``name``, ``connected`` (and subscribed on the remote),
        ``queued`` (waiting or in flight), ``sent`` (acknowledged by the remote), ``received``
        (published here) and ``dropped``; empty while stopped."""
        return self._native.bridges()

    def stats(self) -> _uringmq.Stats:
        """Counters summed over cores: ``connections``, ``sessions``, ``subscriptions``
        (``shared_subscriptions`` of them shared), ``retained``/``retained_bytes``,
        ``messages_in``/``messages_out`` (PUBLISH) with ``publish_bytes_in``/``_out``,
        ``packets_in``/``packets_out`` (every packet type), ``bytes_in``/``bytes_out``,
        ``connects``, ``sockets``, ``dropped_qos0``, ``dropped_queue_full``, ``expired``,
        ``sessions_expired``, ``queued_messages``/``queued_bytes``, ``inflight_messages``,
        ``protocol_errors``, ``auth_failures``, ``auth_busy`` (CONNECTs refused because too
        many authentications were in progress), ``hook_timeouts`` (checks that outlived
        ``hook_timeout_ms``), ``hibernating`` (idle connections parked without a task),
        ``wills_denied`` (wills their client may not publish), ``publish_rate_limited``,
        ``connections_rate_limited``, ``accept_failures`` and ``detach_failures`` (at the
        process's descriptor limit). The same figures as ``$SYS`` and ``metrics_text()``; all
        zero while stopped. ``.as_dict()`` gives a dict."""
        return self._native.stats()

    def metrics_text(self) -> str:
        """The metrics in the Prometheus text format, as ``GET /metrics`` on
        ``metrics_listen`` serves them, for an embedder who serves its own endpoint."""
        return self._native.metrics_text()

    def cluster_status(self) -> Optional[Dict[str, Any]]:
        """This node's view of its cluster (``cluster`` settings), None while stopped or
        without them: ``name``, ``registered`` (its key is in etcd now), ``nodes`` (every
        registered node: ``name``, ``addr`` of its links, ``started``), ``links`` (per peer
        name, ``outbound`` (dialed here) and ``inbound``, each with ``up``, ``connects``,
        ``since``, ``frames_out``, ``frames_in``), ``link_auth_failures`` and ``client_ids``
        (how many client ids this node owns and keeps while their sessions live)."""
        return self._native.cluster_status()

    @property
    def metrics_addr(self) -> Optional[Tuple[str, int]]:
        """``(host, port)`` of the ``metrics_listen`` endpoint while running (port 0
        resolved), else None."""
        return self._native.metrics_addr

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<uringmq.Broker {self.url} {state}>"
