"""Ingest: a worker whose positions went stale (another took its partitions over in a
rebalance) must not commit what the other already committed."""

from __future__ import annotations

import itertools

from shoplake.contract.tables import RAW_EVENTS
from shoplake.pipeline.ingest import BronzeIngest
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.tables import open_store
from shoplake.transport import open_transport
from tests.conftest import feed


def test_a_stale_worker_is_fenced_and_resumes_from_bronze(settings: Settings) -> None:
    lines = [e.value for e in itertools.islice(ShopSimulator(8).stream(), 900)]
    feed(settings, lines[:600])
    group = settings.pipeline.consumer_group

    def worker() -> BronzeIngest:  # as if in a process of its own
        return BronzeIngest(open_transport(settings), open_store(settings), group)

    a, b = worker(), worker()
    assert a.step(10_000) == 600  # a reads positions and ingests everything…
    feed(settings, lines[600:])
    b.positions()  # …b is given the partitions and reads where bronze stands
    assert b.step(10_000) == 300
    assert a.step(10_000) == 0  # a still believes it is at 600: fenced, nothing doubled
    assert a.step(10_000) == 0  # and reloaded, it finds nothing left
    store = open_store(settings)
    assert store.open(RAW_EVENTS).dataset().count_rows() == 900
    feed(settings, lines[:5])  # the same bytes sent again are new records
    assert a.step(10_000) == 5
    assert store.open(RAW_EVENTS).dataset().count_rows() == 905
