"""Where generated events go: a file (NDJSON), the transport or the HTTP gateway; paced
and counted."""

from __future__ import annotations

import http.client
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from http.client import HTTPConnection
from typing import IO, Protocol
from urllib.parse import urlsplit

import orjson

from shoplake.contract.events import key_for, topic_for
from shoplake.errors import ErrorKind, InputError, TransportError
from shoplake.settings import TopicSettings
from shoplake.simulator.shop import Emitted
from shoplake.transport.base import OutgoingMessage, Transport

log = logging.getLogger(__name__)


class Sink(Protocol):
    def send(self, batch: list[Emitted]) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """NDJSON, one event per line, exactly the bytes a shop would send."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def send(self, batch: list[Emitted]) -> None:
        self.out.write(b"".join(e.value + b"\n" for e in batch))

    def close(self) -> None:
        self.out.flush()


class TransportSink:
    """Appends to the transport, routed by event type and keyed as DESIGN.md says."""

    def __init__(self, transport: Transport, topics: TopicSettings) -> None:
        self.transport = transport
        self.topics = topics

    def send(self, batch: list[Emitted]) -> None:
        self.transport.append(
            [
                OutgoingMessage(
                    topic_for(e.event_type, self.topics) or self.topics.dead_letter,
                    key_for(e.event) if e.event is not None else None,
                    e.value,
                )
                for e in batch
            ]
        )

    def close(self) -> None:
        pass


class HttpSink:
    """POSTs each batch as NDJSON to the gateway over one kept-alive connection.

    A 503 (nothing acknowledged) or a dropped connection is retried with backoff, so no
    event is lost or sent twice by the retry; events the gateway rejects are counted."""

    def __init__(self, url: str, api_key: str | None = None, *, attempts: int = 20) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"{url!r} is not an http:// or https:// URL")
        self.path = parts.path.rstrip("/") or "/v1/events"
        connection = http.client.HTTPSConnection if parts.scheme == "https" else HTTPConnection
        self.conn = connection(parts.hostname, parts.port, timeout=30)
        self.headers = {"Content-Type": "application/x-ndjson"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.attempts = attempts
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.quarantined: Counter[str] = Counter()  # accepted, for silver to quarantine

    def send(self, batch: list[Emitted]) -> None:
        body = b"\n".join(e.value for e in batch)
        for attempt in range(self.attempts):
            try:
                self.conn.request("POST", self.path, body, self.headers)
                response = self.conn.getresponse()
                answer = response.read()
            except OSError as exc:  # refused, reset: nothing was acknowledged
                self.conn.close()
                problem = f"cannot reach the gateway: {exc}"
            else:
                if response.status in (202, 422):
                    verdict = orjson.loads(answer)
                    self.accepted += verdict["accepted"]
                    self.rejected.update(r["reason"] for r in verdict["rejected"])
                    self.quarantined.update(r["reason"] for r in verdict.get("quarantined", []))
                    return
                if response.status != 503:
                    raise InputError(
                        f"gateway answered {response.status}: {answer.decode(errors='replace')}"
                    )
                if b'"transport_failed"' in answer:  # retrying cannot help: say why, once
                    raise TransportError(
                        f"gateway answered 503: {answer.decode(errors='replace')}",
                        kind=ErrorKind.TERMINAL,
                    )
                problem = "gateway answered 503 (transport unavailable)"
            log.warning("%s; retrying (%d/%d)", problem, attempt + 1, self.attempts)
            time.sleep(min(0.1 * 2**attempt, 5.0))
        raise TransportError(f"gave up after {self.attempts} attempts: {problem}")

    def close(self) -> None:
        self.conn.close()


def route(line: bytes, topics: TopicSettings) -> OutgoingMessage:
    """Route one raw NDJSON line by its event_type; unreadable ones go to the dead-letter topic."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return OutgoingMessage(topics.dead_letter, None, line)
    if not isinstance(event, dict):
        return OutgoingMessage(topics.dead_letter, None, line)
    topic = topic_for(str(event.get("event_type")), topics)
    return OutgoingMessage(topic or topics.dead_letter, key_for(event) if topic else None, line)


def pump(
    stream: Iterable[Emitted],
    sink: Sink,
    *,
    num_events: int | None,
    rate: float | None = None,
    delay: float | None = None,
    stop: threading.Event | None = None,
    batch_size: int = 5000,
    on_progress: Callable[[int, Counter[str]], None] | None = None,
) -> Counter[str]:
    """Send ``num_events`` (None: until stopped) from ``stream`` to ``sink``, at ``rate``
    events/s or one per ``delay`` s if given. Returns the count sent per event type."""
    interval = delay if delay else (1.0 / rate if rate else 0.0)
    counts: Counter[str] = Counter()
    sent = 0
    started = time.monotonic()
    last_flush = started
    batch: list[Emitted] = []
    source: Iterator[Emitted] = iter(stream)
    if num_events is not None:
        source = itertools.islice(source, num_events)
    for emitted in source:
        if stop is not None and stop.is_set():
            break
        batch.append(emitted)
        counts[emitted.event_type] += 1
        sent += 1
        now = time.monotonic()
        due = started + sent * interval
        # Paced: flush at least every 0.2 s so events stay fresh; otherwise by size.
        if len(batch) >= batch_size or (interval and now - last_flush >= 0.2):
            sink.send(batch)
            batch = []
            last_flush = now
            if on_progress is not None:
                on_progress(sent, counts)
        if interval and due > now:
            if batch and due - now > 0.05:
                sink.send(batch)
                batch = []
                last_flush = now
            if stop is not None:
                stop.wait(due - now)
            else:
                time.sleep(due - now)
    if batch:
        sink.send(batch)
    sink.close()
    if on_progress is not None:
        on_progress(sent, counts)
    return counts
