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
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-append", daemon=True)
        self._thread.start()

    async def append(self, messages: Sequence[OutgoingMessage]) -> None:
        """Returns once ``messages`` are durable; raises TransportError otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(messages, future, loop))
        await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            size = len(first.messages)
            while size < self.max_messages:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
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
