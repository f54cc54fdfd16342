"""HTTP clients for the gateway tests: batches of valid, unique events from the
simulator, posted over real HTTP; the ids of every batch answered 202 are kept."""

from __future__ import annotations

import http.client
import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shoplake.contract.tables import QUARANTINE, RAW_EVENTS
from shoplake.pipeline.silver import SILVER_FROM_BRONZE
from shoplake.settings import Settings
from shoplake.simulator.shop import ShopSimulator
from shoplake.tables import open_store


def post(port: int, events: list[dict[str, Any]], timeout: float = 10) -> tuple[int, bytes]:
    """POST a JSON array to /v1/events; (status, body), or (0, error) when the connection
    failed or the answer was cut short (the gateway is down or was killed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/v1/events",
            body=orjson.dumps(events),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, cut short
        return 0, repr(exc).encode()
    finally:
        conn.close()


@dataclass
class Acks:
    """What the clients sent and what the gateway acknowledged."""

    acked: set[str] = field(default_factory=set)
    statuses: list[int] = field(default_factory=list)
    bodies: dict[int, bytes] = field(default_factory=dict)  # one body per status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, body: bytes, ids: list[str]) -> None:
        with self.lock:
            self.statuses.append(status)
            self.bodies.setdefault(status, body)
            if status == 202:
                self.acked.update(ids)


class EventSource:
    """Valid events, each event id only ever sent once (thread safe)."""

    def __init__(self, seed: int) -> None:
        self._events = ShopSimulator(seed).events()
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def batch(self, n: int) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for event in itertools.islice(self._events, n):
                assert event["event_id"] not in self._seen
                self._seen.add(event["event_id"])
                out.append(dict(event))
            return out


def send(port: int, source: EventSource, acks: Acks, n: int = 50, timeout: float = 10) -> int:
    """Post one batch of ``n`` fresh events; a batch that failed is not resent (so an
    event id appears in the transport at most once); returns the status."""
    events = source.batch(n)
    status, body = post(port, events, timeout)
    acks.record(status, body, [e["event_id"] for e in events])
    return status


def bronze_ids(home: Path) -> list[str]:
    """The event id of every bronze record, after checking no transport record is there
    twice (by lineage)."""
    store = open_store(Settings(home=home))
    if not store.exists(RAW_EVENTS):
        return []
    rows = (
        store.open(RAW_EVENTS)
        .dataset()
        .to_table(columns=["raw_value", "topic", "partition", "offset"])
    )
    lineage = list(
        zip(*(rows[c].to_pylist() for c in ("topic", "partition", "offset")), strict=True)
    )
    assert len(set(lineage)) == len(lineage), "a transport record is in bronze twice"
    ids = [orjson.loads(v)["event_id"] for v in rows["raw_value"].to_pylist()]
    store.close()
    return ids


def silver_ids(home: Path) -> list[str]:
    """The event id of every row of the silver event tables (order lines: one per order)."""
    store = open_store(Settings(home=home))
    ids: list[str] = []
    for spec in SILVER_FROM_BRONZE:
        if spec is QUARANTINE or spec.key != ("event_id",):
            continue
        if store.exists(spec):
            ids += store.open(spec).dataset().to_table(columns=["event_id"])[0].to_pylist()
    store.close()
    return ids
