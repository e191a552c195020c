"""uringmq: an MQTT 3.1.1 and 5.0 broker you can run inside a Python process.

The broker itself is Rust (thread-per-core, io_uring with an epoll fallback); this package embeds
it::

    import uringmq

    with uringmq.Broker(port=0) as broker:               # ephemeral port, background threads
        print(broker.url)                                # mqtt://127.0.0.1:PORT
        with broker.subscribe("sensors/#") as sub:       # in-process subscriber
            broker.publish("sensors/1/temp", b"21.5", qos=1)
            msg = sub.get(timeout=1.0)

It also ships a pytest plugin (fixtures ``mqtt_broker``, ``mqtt_broker_fresh``,
``mqtt_broker_factory``, ``mqtt_capture``) and the ``uringmq`` command.

Names are imported lazily, so ``import uringmq`` (and the pytest plugin, which lives in this
package) never fails because the native extension cannot load; using a name does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._uringmq import Client, ClientInfo, Message, Stats, SubscriptionClosed, init_logging
    from .broker import Broker
    from .settings import BridgeSettings, BridgeTopicSettings, ListenerSettings, Settings
    from .subscription import Subscription

__all__ = [
    "Broker",
    "BridgeSettings",
    "BridgeTopicSettings",
    "Client",
    "ClientInfo",
    "ListenerSettings",
    "Message",
    "Settings",
    "Stats",
    "Subscription",
    "SubscriptionClosed",
    "init_logging",
]

# Public name -> module that defines it.
_LAZY = {
    "Broker": ".broker",
    "Subscription": ".subscription",
    "Client": "._uringmq",
    "ClientInfo": "._uringmq",
    "ListenerSettings": ".settings",
    "BridgeSettings": ".settings",
    "BridgeTopicSettings": ".settings",
    "Settings": ".settings",
    "Message": "._uringmq",
    "Stats": "._uringmq",
    "SubscriptionClosed": "._uringmq",
    "init_logging": "._uringmq",
    "__version__": "._uringmq",
}


def __getattr__(name: str) -> Any:
    """Imports a public name on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'uringmq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
