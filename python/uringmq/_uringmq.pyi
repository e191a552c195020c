"""Type stubs of the native extension ``uringmq._uringmq`` (pyo3 glue over the Rust broker).

Use the wrappers in ``uringmq`` (``Broker``, ``Subscription``); the ``Native*`` classes are their
implementation.
"""

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

__version__: str

class SubscriptionClosed(Exception):
    """A subscription has no more messages and never will: it was closed, or its broker stopped."""

class Message:
    """A message delivered to an in-process subscription."""

    @property
    def topic(self) -> str:
        """Topic name."""
    @property
    def payload(self) -> bytes:
        """Payload."""
    @property
    def qos(self) -> int:
        """QoS as delivered: the minimum of the message's and the subscription's."""
    @property
    def retain(self) -> bool:
        """Retain flag (set on retained messages sent when the subscription was made)."""
    @property
    def properties(self) -> Dict[str, Any]:
        """MQTT 5 properties present on the message: ``payload_format_indicator``,
        ``message_expiry_interval``, ``content_type``, ``response_topic``, ``correlation_data``,
        ``user_properties`` (list of pairs), ``subscription_identifiers``."""

class ClientInfo:
    """Who is connecting or accessing a topic, as passed to the hooks."""

    @property
    def client_id(self) -> str:
        """Client identifier (the assigned one if the client sent none)."""
    @property
    def username(self) -> Optional[str]:
        """User name from CONNECT."""
    @property
    def peer(self) -> Optional[Tuple[str, int]]:
        """``(host, port)`` of the remote end; None for in-process clients."""
    @property
    def listener(self) -> str:
        """Name of the listener the client came through."""
    @property
    def cert_common_name(self) -> Optional[str]:
        """Common Name of a verified TLS client certificate."""

class Client:
    """A connected client, as ``Broker.clients()`` lists it and ``on_disconnect`` gets it."""

    @property
    def client_id(self) -> str:
        """Client identifier (the assigned one if the client sent none)."""
    @property
    def username(self) -> Optional[str]:
        """User name from CONNECT."""
    @property
    def listener(self) -> str:
        """Name of the listener the client came through."""
    @property
    def peer(self) -> Optional[Tuple[str, int]]:
        """``(host, port)`` of the remote end."""
    @property
    def protocol(self) -> int:
        """Protocol level: 3 (MQTT 3.1), 4 (3.1.1) or 5."""
    @property
    def connected_since(self) -> float:
        """When CONNECT was accepted, in seconds since the epoch (like ``time.time()``)."""

class Stats:
    """Broker counters summed over cores, at the moment ``stats()`` was called."""

    connections: int
    sessions: int
    subscriptions: int
    retained: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    dropped_qos0: int
    dropped_queue_full: int
    expired: int
    protocol_errors: int
    auth_failures: int
    auth_busy: int
    hook_timeouts: int
    hibernating: int
    wills_denied: int
    publish_rate_limited: int
    connections_rate_limited: int
    packets_in: int
    packets_out: int
    publish_bytes_in: int
    publish_bytes_out: int
    connects: int
    sockets: int
    sessions_expired: int
    shared_subscriptions: int
    queued_messages: int
    queued_bytes: int
    inflight_messages: int
    retained_bytes: int
    accept_failures: int
    detach_failures: int
    def as_dict(self) -> Dict[str, int]:
        """The counters as a dict."""

class NativeSubscription:
    """Native half of ``uringmq.Subscription``."""

    @property
    def filter(self) -> str:
        """The topic filter."""
    def recv(self, timeout: Optional[float] = None) -> Optional[Message]:
        """Waits (GIL released) up to ``timeout`` s; None on timeout; SubscriptionClosed when done."""
    def poll(self) -> Optional[Message]:
        """A waiting message or None; SubscriptionClosed when closed and drained."""
    def event_fd(self) -> int:
        """The eventfd readable while messages may wait."""
    def clear_ready(self) -> None:
        """Resets the eventfd (poll again afterwards)."""
    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Optional[Dict[str, Any]] = None,
        username: Optional[str] = None,
    ) -> None:
        """Publishes in-process as this subscription's session (for ``no_local``), authorised
        as ``NativeBroker.publish``; PermissionError when denied."""
    def close(self) -> None:
        """Unsubscribes."""

class NativeBroker:
    """Native half of ``uringmq.Broker``."""

    def __init__(
        self,
        settings: Optional[Mapping[str, Any]] = None,
        config: Optional[str] = None,
        authenticate: Optional[Callable[[ClientInfo, Optional[bytes]], Union[bool, str]]] = None,
        authorize: Optional[Callable[[ClientInfo, str, str], bool]] = None,
        on_disconnect: Optional[Callable[[Client, str], None]] = None,
    ) -> None:
        """Parses the settings (ValueError naming a bad key); nothing starts."""
    def start(self) -> None:
        """Binds and starts; OSError(EADDRINUSE) for a port in use. No-op while running."""
    def stop(self) -> None:
        """Stops and joins every thread but hook threads stuck in a callback past
        ``hook_timeout_ms`` (left to finish, never waited for); idempotent."""
    def restart(self) -> None:
        """Stops and starts again on the ports of the last start (also after ``stop()``)."""
    @property
    def is_running(self) -> bool:
        """Whether the broker runs."""
    @property
    def local_addr(self) -> Optional[Tuple[str, int]]:
        """Bound address of the default listener while running."""
    @property
    def listener_addrs(self) -> List[Tuple[str, str, int]]:
        """``(name, host, port)`` of every listener while running."""
    @property
    def settings(self) -> Dict[str, Any]:
        """The effective settings."""
    @property
    def config_toml(self) -> str:
        """The effective settings as a TOML document."""
    @property
    def configured_addr(self) -> Tuple[str, int]:
        """The configured host and port."""
    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Optional[Dict[str, Any]] = None,
        username: Optional[str] = None,
    ) -> None:
        """Publishes in-process, authorised as client ``$inprocess`` with user ``username``
        (``$SYS/``, the ACL file, the authorize hook); PermissionError when denied."""
    def subscribe(
        self, filter: str, qos: int = 2, options: Optional[Dict[str, Any]] = None
    ) -> NativeSubscription:
        """Subscribes in-process with MQTT 5 options (``no_local``, ``retain_as_published``,
        ``retain_handling``, ``subscription_identifier``); returns once effective."""
    def clients(self) -> List[Client]:
        """The connected clients."""
    def disconnect(self, client_id: str, with_will: bool = False) -> bool:
        """Closes a client's connection (its will only ``with_will``); whether it was
        connected."""
    def add_bridge(self, bridge: Dict[str, Any]) -> None:
        """Starts a bridge from a dict of ``[[bridge]]`` keys; ValueError naming a bad key or
        a name in use."""
    def remove_bridge(self, name: str) -> bool:
        """Stops bridge ``name``; whether it existed."""
    def bridges(self) -> List[Dict[str, Any]]:
        """Every bridge's ``name``, ``connected``, ``queued``, ``sent``, ``received``,
        ``dropped``."""
    def stats(self) -> Stats:
        """Counters summed over cores."""
    def metrics_text(self) -> str:
        """The metrics in the Prometheus text format (empty while stopped)."""
    def cluster_status(self) -> Optional[Dict[str, Any]]:
        """This node's view of its cluster; None while stopped or without ``cluster``."""
    @property
    def metrics_addr(self) -> Optional[Tuple[str, int]]:
        """Bound address of ``metrics_listen`` while running."""

def interpreter_exiting() -> None:
    """Called by the package's ``atexit`` handler: other threads returning from a GIL-released
    wait from now on park for good instead of taking the GIL during finalisation."""

def wait_for_hooks(timeout: float) -> bool:
    """Waits (GIL released) at most ``timeout`` seconds until no hook thread is inside a Python
    callback; True if none is. Called by the ``atexit`` handler after stopping the brokers."""

def init_logging(filter: str, format: str = "text") -> None:
    """Sends the broker's log output to stdout with a ``tracing`` filter such as ``"info"``, as
    ``"text"`` lines or ``"json"`` objects (``log_format``)."""

def cluster(args: List[str]) -> int:
    """``uringmq cluster ARGS...`` (the binary's subcommand, same parser); returns the exit status."""

def passwd(args: List[str]) -> int:
    """``uringmq passwd ARGS...`` (the binary's subcommand, same parser); returns the exit status."""
