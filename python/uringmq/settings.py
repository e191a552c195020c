"""The broker's settings as typed dicts, so a type checker catches a misspelt or mistyped
keyword of ``Broker(...)`` as it catches any other misuse.

The broker validates every setting at run time anyway (``ValueError`` naming the key); these
types only describe the keys of the TOML config file (``uringmq.example.toml``) for mypy and
pyright. ``tests/python/test_embed_typing.py`` checks that they list every key the broker has.
"""

from __future__ import annotations

import os
from typing import List, Literal, Optional, TypedDict, Union

__all__ = [
    "BridgeSettings",
    "BridgeTopicSettings",
    "ClusterSettings",
    "ListenerSettings",
    "PathSetting",
    "Settings",
]

#: A file path: a string or an ``os.PathLike`` such as ``pathlib.Path``.
PathSetting = Union[str, "os.PathLike[str]"]


class ListenerSettings(TypedDict, total=False):
    """One ``[[listener]]`` table (``Broker(listener=[{...}])``)."""

    name: Optional[str]
    bind: str
    port: int
    transport: Literal["tcp", "tls", "ws", "wss"]
    max_connections: int
    ws_path: str
    cert_file: Optional[PathSetting]
    key_file: Optional[PathSetting]
    ca_file: Optional[PathSetting]
    require_certificate: bool
    use_identity_as_username: bool
    allow_anonymous: Optional[bool]
    password_file: Optional[PathSetting]
    acl_file: Optional[PathSetting]
    scram_sha256: Optional[bool]
    max_publish_rate: Optional[int]
    max_publish_bytes_rate: Optional[int]
    max_connection_rate: Optional[int]
    max_connection_rate_per_source: Optional[int]
    jwt_secret_file: Optional[PathSetting]
    jwt_public_key_file: Optional[PathSetting]
    jwt_jwks_file: Optional[PathSetting]
    jwt_username_claim: Optional[str]
    jwt_acl_claim: Optional[str]


class BridgeTopicSettings(TypedDict, total=False):
    """One ``[[bridge.topic]]`` entry: Mosquitto's ``topic PATTERN DIRECTION QOS LOCAL_PREFIX
    REMOTE_PREFIX``."""

    pattern: str
    direction: Literal["out", "in", "both"]
    qos: int
    local_prefix: str
    remote_prefix: str


class BridgeSettings(TypedDict, total=False):
    """One ``[[bridge]]`` table (``Broker(bridge=[{...}])``, ``Broker.add_bridge({...})``)."""

    name: str
    address: Union[str, List[str]]
    protocol: Literal["mqttv311", "mqttv5"]
    client_id: Optional[str]
    username: Optional[str]
    password: Optional[str]
    keepalive_secs: int
    clean_start: bool
    try_private: bool
    ca_file: Optional[PathSetting]
    cert_file: Optional[PathSetting]
    key_file: Optional[PathSetting]
    server_name: Optional[str]
    max_queued_messages: int
    max_queued_bytes: int
    max_inflight: int
    reconnect_min_ms: int
    reconnect_max_ms: int
    topic: List[BridgeTopicSettings]


class ClusterSettings(TypedDict, total=False):
    """The ``[cluster]`` table (``Broker(cluster={...})``); ``name`` and a secret are needed."""

    name: str
    etcd: List[str]
    prefix: str
    bind: str
    port: int
    advertise: Optional[str]
    lease_ttl_secs: int
    secret: Optional[str]
    secret_file: Optional[PathSetting]
    #: ``redis://host:port/db``: persistent sessions resumable on other nodes (needs
    #: ``persistence_dir``).
    session_store: Optional[str]


class Settings(TypedDict, total=False):
    """Every key of the config file, as ``Broker(**settings)`` keyword arguments. ``None``
    means "the default"."""

    bind: Optional[str]
    port: Optional[int]
    cores: Optional[int]
    pin_cores: Optional[bool]
    driver: Optional[Literal["auto", "io_uring", "epoll"]]
    log_level: Optional[str]
    listener: Optional[List[ListenerSettings]]
    bridge: Optional[List[BridgeSettings]]
    max_connections: Optional[int]
    max_connection_rate: Optional[int]
    max_connection_rate_per_source: Optional[int]
    max_publish_rate: Optional[int]
    max_publish_bytes_rate: Optional[int]
    max_packet_size: Optional[int]
    jwt_secret_file: Optional[PathSetting]
    jwt_public_key_file: Optional[PathSetting]
    jwt_jwks_file: Optional[PathSetting]
    jwt_username_claim: Optional[str]
    jwt_acl_claim: Optional[str]
    hook_threads: Optional[int]
    hook_timeout_ms: Optional[int]
    max_pending_auth: Optional[int]
    max_pending_auth_per_address: Optional[int]
    sys_interval_secs: Optional[int]
    metrics_listen: Optional[str]
    log_format: Optional[Literal["text", "json"]]
    persistence_dir: Optional[PathSetting]
    persistence_sync: Optional[Literal["always", "interval", "never"]]
    persistence_sync_interval_ms: Optional[int]
    max_inflight: Optional[int]
    max_queued_messages: Optional[int]
    max_queued_bytes: Optional[int]
    queue_qos0_messages: Optional[bool]
    max_outbound_bytes: Optional[int]
    max_topic_levels: Optional[int]
    max_topic_length: Optional[int]
    max_subscriptions_per_client: Optional[int]
    max_subscription_bytes_per_client: Optional[int]
    connect_timeout_secs: Optional[int]
    hibernate_after_ms: Optional[int]
    max_keepalive: Optional[int]
    max_session_expiry_secs: Optional[int]
    topic_alias_maximum: Optional[int]
    outbound_topic_aliases: Optional[bool]
    max_qos: Optional[Literal[0, 1, 2]]
    retain_available: Optional[bool]
    max_retained_messages: Optional[int]
    shared_subscription_strategy: Optional[Literal["round_robin", "random", "local"]]
    allow_anonymous: Optional[bool]
    password_file: Optional[PathSetting]
    acl_file: Optional[PathSetting]
    scram_sha256: Optional[bool]
    auth_failure_delay_ms: Optional[int]
    cluster: Optional[ClusterSettings]
