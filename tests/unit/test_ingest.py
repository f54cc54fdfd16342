"""Ingest: a worker whose positions went stale (another took its partitions over in a
rebalance) must not commit what the other already committed."""

from __future__ import annotations

import itertools

import pyarrow as pa

from shoplake.contract.tables import RAW_EVENTS
from shoplake.engines.duckdb import DuckDB
from shoplake.pipeline.ingest import BronzeIngest
from shoplake.pipeline.positions import RecentCommits, read_ranges
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.tables import open_store
from shoplake.transport import open_transport
from shoplake.transport.base import TopicPartition
from tests.conftest import feed


def test_a_stale_worker_is_fenced_and_resumes_from_bronze(settings: Settings) -> None:
    lines = [e.value for e in itertools.islice(ShopSimulator(8).stream(), 900)]
    feed(settings, lines[:600])
    group = settings.pipeline.consumer_group

    def worker() -> BronzeIngest:  # as if in a process of its own
        return BronzeIngest(open_transport(settings), open_store(settings), group, engine=DuckDB())

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


def test_the_next_stage_reads_a_commit_from_memory_exactly_as_from_the_table(
    settings: Settings,
) -> None:
    """RecentCommits hands silver the rows ingest just committed: for ranges the commit
    covers, the same rows the table gives; for any other range, the table's rows."""
    feed(settings, [e.value for e in itertools.islice(ShopSimulator(9).stream(), 800)])
    store = open_store(settings)
    recent = RecentCommits()
    ingest = BronzeIngest(open_transport(settings), store, settings.pipeline.consumer_group,
                          engine=DuckDB(), recent=recent)  # fmt: skip
    assert ingest.step(300) == 300
    first = {tp: (0, end) for tp, end in ingest.positions().items() if end}
    assert ingest.step(10_000) == 500
    ends = ingest.positions()
    second = {tp: (first.get(tp, (0, 0))[1], end) for tp, end in ends.items()}
    inside = {tp: (start, start + (end - start) // 2) for tp, (start, end) in second.items()}
    columns = ["raw_value", "topic", "partition", "offset"]

    for ranges in (second, inside, first, {**first, **inside}):
        got = _in_order(recent.lineage_rows(store, RAW_EVENTS, ranges, columns))
        assert got
        assert got == _in_order(read_ranges(store, RAW_EVENTS, ranges, columns))
    assert recent.made_of(RAW_EVENTS, second) is not None
    assert recent.made_of(RAW_EVENTS, inside) is None  # made of the whole ranges only


def _in_order(rows: pa.Table) -> list[dict[str, object]]:
    return rows.sort_by([(c, "ascending") for c in ("topic", "partition", "offset")]).to_pylist()


def test_the_refresh_lane_finds_several_rounds_in_memory_while_they_are_held(
    settings: Settings,
) -> None:
    """A stage that steps less often (the refresh lane) takes the rows of several
    commits from memory, exactly what the table holds in its ranges; ranges older than
    what is held, or held before a rewind, are read from the table."""
    feed(settings, [e.value for e in itertools.islice(ShopSimulator(4).stream(), 1500)])
    store = open_store(settings)
    recent = RecentCommits(history_rows=900)
    ingest = BronzeIngest(open_transport(settings), store, settings.pipeline.consumer_group,
                          engine=DuckDB(), recent=recent)  # fmt: skip
    ends = [dict(ingest.positions())]
    for _ in range(5):
        assert ingest.step(300) == 300
        ends.append(dict(ingest.positions()))

    def between(a: int, b: int) -> dict[TopicPartition, tuple[int, int]]:
        """The ranges of commits a+1 … b (1-based)."""
        return {tp: (ends[a][tp], ends[b][tp]) for tp in ends[b]}

    columns = ["event_type", "ingest_ts", "topic", "partition", "offset"]
    for ranges in (between(2, 5), between(3, 4), between(2, 3)):
        held = recent.held(RAW_EVENTS, ranges, columns)
        assert held is not None and held.num_rows == sum(b - a for a, b in ranges.values()) > 0
        assert _in_order(held) == _in_order(read_ranges(store, RAW_EVENTS, ranges, columns))
    # the payload (raw_value) is held of the last commit only
    payload = ["raw_value", *columns]
    assert recent.held(RAW_EVENTS, between(4, 5), payload) is not None
    assert recent.held(RAW_EVENTS, between(3, 5), payload) is None
    # 900 rows are held: the first two commits were let go
    assert recent.held(RAW_EVENTS, between(1, 3), columns) is None
    assert _in_order(recent.lineage_rows(store, RAW_EVENTS, between(0, 5), columns)) == _in_order(
        read_ranges(store, RAW_EVENTS, between(0, 5), columns)
    )
    # A commit that does not start where the last ended: what was held is let go
    assert recent.held(RAW_EVENTS, between(3, 5), columns) is not None
    tp = next(tp for tp in ends[5] if ends[5][tp] > ends[4][tp])
    recent.record(RAW_EVENTS, {tp: (ends[4][tp], ends[5][tp])}, pa.table({
        "topic": [tp.topic], "partition": pa.array([tp.partition], pa.int32()),
        "offset": [ends[4][tp]], "event_type": ["page_view"], "ingest_ts": [None]}))  # fmt: skip
    assert recent.held(RAW_EVENTS, between(3, 5), columns) is None
