"""Group commit: concurrent requests share one durable append.

An append is durable only after an fsync (embedded log) or acks=all (Kafka), which costs
milliseconds however few events it holds. Requests therefore queue their events; one
writer thread appends everything queued since its last append in one call, then answers
each request. A failed append fails every request in it: none of them is acknowledged.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from shoplake.errors import ShoplakeError, TransportError
from shoplake.transport.base import OutgoingMessage, Transport


@dataclass
class _Pending:
    messages: Sequence[OutgoingMessage]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


class GroupAppender:
    """Appends to ``transport`` on one writer thread, many requests per append."""

    def __init__(self, transport: Transport, max_messages: int = 100_000) -> None:
        self.transport = transport
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        """Starts the writer thread unless it runs: an app whose lifespan ended (close)
        and began again (ASGI test clients do that) appends again."""
        with self._lock:
            self._started()

    def _started(self) -> queue.SimpleQueue[_Pending | None]:
        """The running writer's queue (the lock held)."""
        if self._thread is None or not self._thread.is_alive():
            self._queue = queue.SimpleQueue()  # a stop left behind is not for the new one
            self._thread = threading.Thread(
                target=self._run, args=(self._queue,), name="group-append", daemon=True
            )
            self._thread.start()
        return self._queue

    async def append(self, messages: Sequence[OutgoingMessage]) -> None:
        """Returns once ``messages`` are durable; raises TransportError otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:  # never behind a stop: close() puts it under the same lock
            self._started().put(_Pending(messages, future, loop))
        await future

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)  # the thread answers what is queued, then stops
        if thread is not None:
            thread.join(30)

    def _run(self, inbox: queue.SimpleQueue[_Pending | None]) -> None:
        while True:
            first = inbox.get()
            if first is None:
                return
            group = [first]
            size = len(first.messages)
            while size < self.max_messages:
                try:
                    more = inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    inbox.put(None)  # stop after this group
                    break
                group.append(more)
                size += len(more.messages)
            error: ShoplakeError | None = None
            try:
                self.transport.append([m for p in group for m in p.messages])
            except ShoplakeError as exc:
                error = exc
            except Exception as exc:  # a bug or a library error: still answer everyone
                error = TransportError(f"append failed: {exc!r}")
            for pending in group:
                pending.loop.call_soon_threadsafe(_settle, pending.future, error)


def _settle(future: asyncio.Future[None], error: ShoplakeError | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
