"""An in-process subscription: blocking and asyncio ways to receive what the broker delivers.

Asyncio waits on the subscription's eventfd with ``loop.add_reader``: no polling, no thread per
subscription, and the GIL is never held while waiting. The eventfd protocol is: drain with
``poll()``; when empty, ``clear_ready()`` and poll once more (a message that slipped in between
is seen); only then wait for readability.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Iterator, List, Mapping, Optional

from . import _uringmq
from ._uringmq import Message, SubscriptionClosed

if TYPE_CHECKING:
    from .broker import Payload

__all__ = ["Subscription"]


class Subscription:
    """Messages matching one topic filter, delivered in-process.

    Blocking: ``get(timeout)``, ``for msg in sub``. Asyncio: ``await sub.get_async(timeout)``,
    ``async for msg in sub``. Non-blocking: ``poll()``. Iteration ends, and ``get`` raises
    ``SubscriptionClosed``, once the subscription is closed (``close()``, or its broker stopped)
    and every message already delivered has been read.
    """

    def __init__(self, native: _uringmq.NativeSubscription) -> None:
        self._native = native
        self._fd = native.event_fd()
        self._closed = False
        # The loop our eventfd is registered with, and the futures waiting on it.
        self._reader_loop: Optional[asyncio.AbstractEventLoop] = None
        self._waiters: List["asyncio.Future[None]"] = []

    @property
    def filter(self) -> str:
        """The topic filter."""
        return self._native.filter

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (a stopped broker also ends the subscription)."""
        return self._closed

    # -- blocking ----------------------------------------------------------------------------------

    def poll(self) -> Optional[Message]:
        """A waiting message, or None if there is none right now. Never blocks."""
        msg = self._native.poll()
        if msg is None and self._closed:
            raise SubscriptionClosed(f"subscription to {self.filter!r} is closed")
        return msg

    def get(self, timeout: Optional[float] = None) -> Message:
        """The next message, waiting up to ``timeout`` seconds (None: until one arrives).

        The GIL is released while waiting and Ctrl-C interrupts the wait. Raises ``TimeoutError``
        after ``timeout``, ``SubscriptionClosed`` once closed and drained. A daemon thread still
        waiting here at interpreter exit never returns (the process ends without it).
        """
        msg = self.poll()
        if msg is None:
            msg = self._native.recv(timeout)
        if msg is None:
            raise TimeoutError(f"no message on {self.filter!r} within {timeout} s")
        return msg

    def __iter__(self) -> Iterator[Message]:
        """Blocks for each message; ends when the subscription is closed and drained."""
        while True:
            try:
                yield self.get()
            except SubscriptionClosed:
                return

    # -- asyncio -----------------------------------------------------------------------------------

    async def get_async(self, timeout: Optional[float] = None) -> Message:
        """The next message, awaiting up to ``timeout`` seconds (None: until one arrives).

        Raises ``TimeoutError`` after ``timeout``, ``SubscriptionClosed`` once closed and drained.
        Several tasks of one event loop may await the same subscription.
        """
        if timeout is None:
            return await self._next()
        try:
            return await asyncio.wait_for(self._next(), timeout)
        except asyncio.TimeoutError:
            # Before Python 3.11 asyncio's TimeoutError is not the builtin one.
            raise TimeoutError(f"no message on {self.filter!r} within {timeout} s") from None

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._next()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    async def _next(self) -> Message:
        while True:
            msg = self.poll()
            if msg is None:
                self._native.clear_ready()
                msg = self.poll()
            if msg is not None:
                return msg
            waiter = self._arm()
            try:
                await waiter
            finally:
                self._disarm(waiter)

    def _arm(self) -> "asyncio.Future[None]":
        loop = asyncio.get_running_loop()
        if self._reader_loop is None:
            loop.add_reader(self._fd, self._on_readable)
            self._reader_loop = loop
        elif self._reader_loop is not loop:
            raise RuntimeError("this subscription is already awaited from another event loop")
        waiter: "asyncio.Future[None]" = loop.create_future()
        self._waiters.append(waiter)
        return waiter

    def _disarm(self, waiter: "asyncio.Future[None]") -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        # Nobody waits any more (timeout, cancellation): unregister, so the loop holds no stale
        # fd and another loop may use this subscription later.
        if not self._waiters and self._reader_loop is not None:
            self._reader_loop.remove_reader(self._fd)
            self._reader_loop = None

    def _on_readable(self) -> None:
        """Runs on the loop's thread: wakes every waiter, which then polls."""
        waiters, self._waiters = self._waiters, []
        if self._reader_loop is not None:
            self._reader_loop.remove_reader(self._fd)
            self._reader_loop = None
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _wake(self) -> None:
        """Wakes async waiters from any thread (after close() or the broker's stop())."""
        loop = self._reader_loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._on_readable)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting on it any more

    # -- publishing ------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: "Payload" = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Optional[Mapping[str, Any]] = None,
        *,
        username: Optional[str] = None,
    ) -> None:
        """Publishes in-process as this subscription's session, like ``Broker.publish`` (and
        authorised as it is, ``PermissionError`` when denied): a subscription made with
        ``no_local=True`` does not get it back [MQTT-3.8.3-3]. Raises ``SubscriptionClosed``
        once closed."""
        from .broker import _payload_bytes

        props = dict(properties) if properties is not None else None
        self._native.publish(topic, _payload_bytes(payload), qos, retain, props, username)

    # -- closing -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Unsubscribes. Messages already delivered can still be read; then iteration ends."""
        if not self._closed:
            self._closed = True
            self._native.close()
            self._wake()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<uringmq.Subscription {self.filter!r}{' closed' if self._closed else ''}>"
