"""Positions: how every layer knows what it has consumed.

A position is the next offset to read in one (topic, partition) of the transport.
Bronze records the transport positions it covers under the app id
``GROUP/TOPIC/PARTITION``; silver and gold record the bronze positions they have
consumed under ``bronze/TOPIC/PARTITION``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import TableSpec
from shoplake.tables.base import AllOf, Compare, TableHandle, TableStore
from shoplake.transport.base import TopicPartition

Positions = dict[TopicPartition, int]
Ranges = dict[TopicPartition, tuple[int, int]]


def ingest_app_id(group: str, tp: TopicPartition) -> str:
    return f"{group}/{tp.topic}/{tp.partition}"


def source_app_id(tp: TopicPartition) -> str:
    return f"bronze/{tp.topic}/{tp.partition}"


def to_app_ids(positions: Mapping[TopicPartition, int], group: str | None = None) -> dict[str, int]:
    if group is None:
        return {source_app_id(tp): off for tp, off in positions.items()}
    return {ingest_app_id(group, tp): off for tp, off in positions.items()}


def positions_of(
    handle: TableHandle, tps: Iterable[TopicPartition], group: str | None = None
) -> Positions:
    """Positions per partition recorded in a table snapshot; unrecorded ones are 0."""
    ids = {tp: source_app_id(tp) if group is None else ingest_app_id(group, tp) for tp in tps}
    got = handle.positions(ids.values())
    return {tp: got.get(app_id, 0) for tp, app_id in ids.items()}


def range_ends(ranges: Ranges) -> Positions:
    """The position after each range: what a layer records once it has consumed them."""
    return {tp: end for tp, (_, end) in ranges.items()}


def range_starts(ranges: Ranges) -> Positions:
    """Where each range starts: what a layer must still record when it commits them (else
    another worker consumed them meanwhile: the fence, see TableStore)."""
    return {tp: start for tp, (start, _) in ranges.items()}


def in_ranges(rows: pa.Table, ranges: Ranges) -> pa.Array:
    """A mask of the rows whose lineage lies in ``ranges`` (end exclusive)."""
    # Arrow scalars, not Python values: pyarrow converts those through a failing import
    # of dateutil each call (~0.2 ms).
    mask = pa.array([False] * rows.num_rows, pa.bool_())
    for (topic, partition), (start, end) in ranges.items():
        mine = pc.and_(
            pc.and_(
                pc.equal(rows["topic"], pa.scalar(topic, pa.string())),
                pc.equal(rows["partition"], pa.scalar(partition, pa.int32())),
            ),
            pc.and_(
                pc.greater_equal(rows["offset"], pa.scalar(start, pa.int64())),
                pc.less(rows["offset"], pa.scalar(end, pa.int64())),
            ),
        )
        mask = pc.or_(mask, mine)
    return mask


def read_ranges(store: TableStore, spec: TableSpec, ranges: Ranges, columns: list[str]) -> pa.Table:
    """The rows of ``spec`` whose lineage lies in ``ranges``.

    One scan per topic, filtered on the topic and its span of offsets, which file
    statistics prune well (topics differ in size, so one span over all of them would read
    most of the small ones); the exact test runs on the rows read. (pyarrow simplifies a
    filter with one term per partition very slowly: ~0.4 s for 18 partitions over 16
    files.)"""
    if not ranges:
        return spec.schema.empty_table().select(columns)
    handle = store.open(spec)
    extra = [c for c in LINEAGE if c not in columns]
    parts = []
    for mine, where in topic_spans(ranges):
        rows = handle.scan([*columns, *extra], where)
        parts.append(rows.filter(in_ranges(rows, mine)).select(columns))
    return pa.concat_tables(parts)


def topic_spans(ranges: Ranges) -> list[tuple[Ranges, AllOf]]:
    """Per topic: its ranges, and a predicate on the topic and its span of offsets (a
    superset of the ranges, which file statistics prune well)."""
    by_topic: dict[str, Ranges] = {}
    for tp, span in ranges.items():
        by_topic.setdefault(tp.topic, {})[tp] = span
    spans = []
    for topic, mine in by_topic.items():
        lo = min(start for start, _ in mine.values())
        hi = max(end for _, end in mine.values())
        where = AllOf(
            (Compare("topic", "=", topic), Compare("offset", ">=", lo), Compare("offset", "<", hi))
        )
        spans.append((mine, where))
    return spans


# The lineage columns of a table row: where in bronze it came from (what in_ranges reads).
LINEAGE = ("topic", "partition", "offset")


def lineage_span(rows: pa.Table) -> Ranges:
    """The smallest ranges per partition covering the lineage of ``rows``."""
    if rows.num_rows == 0:
        return {}
    spans = rows.group_by(["topic", "partition"]).aggregate([("offset", "min"), ("offset", "max")])
    return {
        TopicPartition(r["topic"], r["partition"]): (r["offset_min"], r["offset_max"] + 1)
        for r in spans.to_pylist()
    }


_Held = TypeVar("_Held")


class HeldAlong(Generic[_Held]):
    """The bookkeeping of what a model holds in memory about the positions it has
    consumed in this process (compacted days, a customer's marks): a step stages what it
    would hold next, which is taken only once that step has committed. What is held is
    valid while the model's positions of every partition are where this process's last
    committed step left them: any other (another writer moved one, a rewind) means it is
    stale."""

    def __init__(self) -> None:
        self._at: Positions | None = None  # every partition's position after the last commit
        self._staged: tuple[Ranges, Positions, _Held] | None = None

    def continues(self, own: Positions) -> bool:
        """Whether the model's positions ``own`` (every partition, read before a step)
        are where this process's last committed step left them (or none has)."""
        return self._at is None or self._at == own

    def stage(self, ranges: Ranges, own: Positions, value: _Held) -> None:
        """What the step over ``ranges`` from positions ``own`` would hold."""
        self._staged = (ranges, {**own, **range_ends(ranges)}, value)

    def committed(self, ranges: Ranges) -> _Held | None:
        """What the step over ``ranges`` (the same object) staged, now that it has
        committed; None if it staged nothing."""
        if self._staged is None or self._staged[0] is not ranges:
            return None
        _, self._at, value = self._staged
        self._staged = None
        return value

    def reset(self) -> None:
        self._at = None
        self._staged = None


@dataclass(frozen=True)
class _Commit:
    ranges: Ranges  # non-empty ranges only
    rows: pa.Table
    moved_from: pa.Array | None = None  # see RecentCommits.record


def _nonempty(ranges: Ranges) -> Ranges:
    return {tp: (start, end) for tp, (start, end) in ranges.items() if end > start}


class RecentCommits:
    """What this process last committed to each table, with the bronze ranges it covered,
    so a later stage takes it from memory instead of listing and scanning the table's
    files again. Anything else (a restart, a stage that lags) reads the table.

    Kept per table: the last commit (of a derived table, the rows a step made of exactly
    its ranges: ``made_of``); and of an append-only table of lineage (bronze, the silver
    events), the latest commits, contiguous per partition, up to ``history_rows`` rows
    and ``history_commits`` commits, without the table's payload columns: what they hold
    of their ranges is every row the table holds there, and stays so. Then the refresh
    lane, which steps every few seconds, finds several rounds' rows here too. The main
    loop records while the lane reads: both under one lock."""

    def __init__(self, history_rows: int = 100_000, history_commits: int = 64) -> None:
        self._last: dict[str, _Commit] = {}
        self._history: dict[str, deque[_Commit]] = {}
        self._history_rows = history_rows
        self._history_commits = history_commits
        self._lock = threading.Lock()

    def record(
        self,
        spec: TableSpec,
        ranges: Ranges,
        rows: pa.Table,
        moved_from: pa.Array | None = None,
    ) -> None:
        """``moved_from``: of a derived table, the times (of its cluster_by column) its
        replaced rows may have held before, where they moved from."""
        commit = _Commit(_nonempty(ranges), rows, moved_from)
        with self._lock:
            self._last[spec.qualified] = commit
            if commit.ranges and set(LINEAGE) <= set(rows.column_names):
                payload = [c for c in spec.payload_columns if c in rows.column_names]
                kept = _Commit(commit.ranges, rows.drop_columns(payload)) if payload else commit
                self._add_to_history(spec.qualified, kept)

    def _add_to_history(self, table: str, commit: _Commit) -> None:
        held = self._history.setdefault(table, deque())
        ends = {tp: end for c in held for tp, (_, end) in c.ranges.items()}
        if any(tp in ends and ends[tp] != start for tp, (start, _) in commit.ranges.items()):
            held.clear()  # not where the last commit ended (another writer, a rewind)
        held.append(commit)
        total = sum(c.rows.num_rows for c in held)
        while len(held) > 1 and (total > self._history_rows or len(held) > self._history_commits):
            total -= held.popleft().rows.num_rows

    def made_of(self, spec: TableSpec, ranges: Ranges) -> pa.Table | None:
        """The rows the last commit to ``spec`` made of exactly ``ranges``, if it did."""
        last = self._last.get(spec.qualified)
        return last.rows if last is not None and last.ranges == _nonempty(ranges) else None

    def moved_of(self, spec: TableSpec, ranges: Ranges) -> pa.Array | None:
        """The ``moved_from`` of that commit (None: it moved nothing, or is not there)."""
        last = self._last.get(spec.qualified)
        return last.moved_from if last is not None and last.ranges == _nonempty(ranges) else None

    def lineage_rows(
        self, store: TableStore, spec: TableSpec, ranges: Ranges, columns: list[str]
    ) -> pa.Table:
        """The rows of append-only ``spec`` whose lineage lies in ``ranges``."""
        rows = self.held(spec, ranges, columns)
        return read_ranges(store, spec, ranges, columns) if rows is None else rows

    def held(self, spec: TableSpec, ranges: Ranges, columns: list[str]) -> pa.Table | None:
        """The rows of append-only ``spec`` whose lineage lies in ``ranges``, if the
        commits held cover the ranges (None: they do not, read the table). Only the
        last commit keeps the table's payload columns (bronze's raw_value)."""
        wanted = _nonempty(ranges)
        if not wanted:
            return spec.schema.empty_table().select(columns)
        with self._lock:
            last = self._last.get(spec.qualified)
            history = list(self._history.get(spec.qualified, ()))
        for commits in ([last] if last is not None else [], history):
            if not commits or not set(columns) <= set(commits[0].rows.column_names):
                continue
            used = _covering(commits, wanted)
            if used is None:
                continue
            if len(used) == 1 and used[0].ranges == wanted:
                return used[0].rows.select(columns)
            keep = [*columns, *(c for c in LINEAGE if c not in columns)]
            rows = pa.concat_tables(
                [c.rows.select(keep) for c in used], promote_options="permissive"
            )
            return rows.filter(in_ranges(rows, wanted)).select(columns)
        return None


def _covering(commits: list[_Commit], wanted: Ranges) -> list[_Commit] | None:
    """The commits (contiguous per partition, in order) that hold rows of ``wanted``, if
    together they cover it (None: they do not)."""
    covered: dict[TopicPartition, tuple[int, int]] = {}
    for commit in commits:
        for tp, (start, end) in commit.ranges.items():
            covered[tp] = (covered[tp][0] if tp in covered else start, end)
    if not all(
        tp in covered and covered[tp][0] <= start and end <= covered[tp][1]
        for tp, (start, end) in wanted.items()
    ):
        return None
    return [c for c in commits if any(_overlap(c.ranges.get(tp), w) for tp, w in wanted.items())]


def _overlap(a: tuple[int, int] | None, b: tuple[int, int]) -> bool:
    return a is not None and a[0] < b[1] and b[0] < a[1]


T = TypeVar("T")


def ranges_key(ranges: Ranges) -> tuple[tuple[str, int, int, int], ...]:
    """``ranges`` as a dictionary key (empty ranges left out)."""
    return tuple(sorted((tp.topic, tp.partition, a, b) for tp, (a, b) in _nonempty(ranges).items()))


class SharedReads:
    """What the models of one pass read alike, read once per pass: the positions of
    their input tables and what they derive from the same ranges of them (the new rows,
    the orders those touch). Five daily models read the day's new page views, and plan
    on the same ranges only if they see the same input positions.

    Inside ``one_pass``, an input's positions are those of its first read in the pass
    (it may have moved on since: the next pass takes the rest) until a model of the pass
    commits to it. Outside, every read is made afresh."""

    def __init__(self) -> None:
        self._active = False
        self._positions: dict[str, Positions] = {}
        self._read: dict[Hashable, Any] = {}

    @contextmanager
    def one_pass(self) -> Iterator[None]:
        """Share the reads of the steps inside; forget them after (they hold rows)."""
        self._active = True
        try:
            yield
        finally:
            self._active = False
            self._positions.clear()
            self._read.clear()

    def positions(
        self, store: TableStore, spec: TableSpec, tps: Iterable[TopicPartition]
    ) -> Positions:
        tps = list(tps)
        got = self._positions.get(spec.qualified)
        if got is None or any(tp not in got for tp in tps):
            got = positions_of(store.open(spec), tps)
            if self._active:
                self._positions[spec.qualified] = got
        return got

    def committed(self, spec: TableSpec) -> None:
        """A model of the pass committed to ``spec``: its positions moved."""
        self._positions.pop(spec.qualified, None)

    def once(self, key: Hashable, read: Callable[[], T]) -> T:
        """``read()``, called once per pass for ``key``."""
        if not self._active:
            return read()
        if key not in self._read:
            self._read[key] = read()
        result: T = self._read[key]
        return result
