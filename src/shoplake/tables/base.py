"""The TableStore port: what the pipeline needs from a table format.

Every write may carry *positions* — ``{app_id: next_offset}`` — committed atomically
with the rows (Delta ``app_transactions``, Iceberg snapshot properties). A layer reads
its progress back from its own table, so restarts, replays and compactions are harmless.
A write may also say the positions it moves on from (``expected``): if the table records
others, another writer consumed those offsets meanwhile, and the write fails with
CommitConflict rather than commit them twice (the fence between two workers).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from shoplake.contract.tables import TableSpec
from shoplake.errors import CommitConflict, TableError

# -- predicates: what a scan keeps, what a merge deletes -------------------------------
# Structured, so each format translates them its own way (Delta: Arrow expressions and
# merge SQL; Iceberg: its expressions) and pushes them down to partitions and file stats.


@dataclass(frozen=True)
class Compare:
    """``column op value``."""

    column: str
    op: Literal["=", "!=", "<", "<=", ">", ">="]
    value: object


@dataclass(frozen=True)
class IsIn:
    """``column`` is one of ``values`` (a sequence or an Arrow array)."""

    column: str
    values: Sequence[object] | pa.Array | pa.ChunkedArray


@dataclass(frozen=True)
class AllOf:
    """Every one of ``terms`` holds."""

    terms: tuple[Predicate, ...]


Predicate: TypeAlias = "Compare | IsIn | AllOf"


def within(column: str, span: tuple[date, date]) -> AllOf:
    """``column`` lies in the [start, end) ``span`` (of days or times)."""
    return AllOf((Compare(column, ">=", span[0]), Compare(column, "<", span[1])))


def merged_spans(
    spans: Iterable[tuple[datetime, datetime]], gap: timedelta = timedelta(0)
) -> list[tuple[datetime, datetime]]:
    """The fewest [start, end) spans covering ``spans``, closing gaps up to ``gap``."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True)
class Located:
    """Where an upsert's rows lie along the table's ``cluster_by`` column: every row of
    its data, and every row of the table with a key of its data, has that column in one
    of ``spans`` ([start, end), sorted, apart). A store may then rewrite just the rows in
    those spans rather than merge over the whole table."""

    spans: tuple[tuple[datetime, datetime], ...]


def all_of(*terms: Predicate | None) -> Predicate | None:
    """The conjunction of the terms given (None ones left out; None if none is left)."""
    kept = tuple(t for t in terms if t is not None)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else AllOf(kept)


_ARROW_COMPARE: dict[str, Callable[[pc.Expression, pa.Scalar], pc.Expression]] = {
    "=": lambda f, v: f == v,
    "!=": lambda f, v: f != v,
    "<": lambda f, v: f < v,
    "<=": lambda f, v: f <= v,
    ">": lambda f, v: f > v,
    ">=": lambda f, v: f >= v,
}


def arrow_filter(spec: TableSpec, where: Predicate, cast_strings: bool = False) -> pc.Expression:
    """``where`` as an Arrow filter, values in the spec's types: over a dataset it prunes
    partitions and row groups. ``cast_strings``: string columns (but partition values)
    cast to strings first (delta-rs's string_view files, see DeltaHandle.scan)."""
    if isinstance(where, AllOf):
        terms = [arrow_filter(spec, t, cast_strings) for t in where.terms]
        return functools.reduce(operator.and_, terms)
    kind = spec.schema.field(where.column).type
    column = pc.field(where.column)
    if cast_strings and pa.types.is_string(kind) and where.column not in spec.partition_by:
        column = column.cast(kind)
    if isinstance(where, IsIn):
        values = where.values
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        values = values.cast(kind) if isinstance(values, pa.Array) else pa.array(values, kind)
        within = column.isin(values)
        if len(values) == 0 or values.null_count:
            return within
        # Arrow prunes files by their statistics for a short list only (up to ~50 values);
        # the values' range prunes a longer one while its keys lie close together (order
        # ids grow with time: a round's new orders sit in a few recent files, though a
        # refund of an old order widens the range).
        bounds = pc.min_max(values)
        return (column >= bounds["min"]) & (column <= bounds["max"]) & within
    return _ARROW_COMPARE[where.op](column, pa.scalar(where.value, kind))


@dataclass(frozen=True)
class TableScan:
    """A scan for an engine that reads tables itself (Spark): the snapshot to read (its
    format, location and version) and what to keep of it."""

    format: str  # "delta" or "iceberg"
    location: str
    version: int
    columns: tuple[str, ...] | None = None
    where: Predicate | None = None
    # Iceberg: the table's name in its catalog (catalog.layer.table) and the snapshot id
    # (None: the table has no snapshot yet)
    name: str | None = None
    snapshot_id: int | None = None
    # a column of 1s to add, named so (a raw input of SQL that counts rows by weight)
    weight: str | None = None


@dataclass(frozen=True)
class Commit:
    """One commit of a table, as ``history`` lists them."""

    version: int
    timestamp: datetime  # when it was committed (UTC)
    operation: str  # WRITE, MERGE, OPTIMIZE, DELETE, VACUUM START, ... as the format names it
    rows_added: int | None  # None: the format does not say
    rows_removed: int | None  # rows deleted, or rewritten away by an update
    positions: dict[str, int] = field(default_factory=dict)  # app id → next offset recorded


# Commits that rewrite files and leave the rows as they were (compaction, vacuum), as
# the formats name them: Delta's OPTIMIZE and VACUUM, Iceberg's "replace" snapshots.
ROWS_UNCHANGED = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "REPLACE"})


def rewound_positions(history: Iterable[Commit], target: TableHandle) -> dict[str, int]:
    """The positions to restore ``target`` with: each reader that ever recorded one in
    ``history`` set back to where it stood at ``target`` (0 if it had none then)."""
    readers = {app for commit in history for app in commit.positions}
    return dict.fromkeys(readers, 0) | target.positions(readers)


def fence(spec: TableSpec, recorded: Mapping[str, int], expected: Mapping[str, int]) -> None:
    """CommitConflict unless the table records ``expected`` for each of its app ids
    (``recorded``: what it records of them; an id never recorded stands at 0)."""
    moved = {a: recorded.get(a, 0) for a, at in expected.items() if recorded.get(a, 0) != at}
    if moved:
        app_id, now = next(iter(moved.items()))
        raise CommitConflict(
            f"{spec.qualified}: another writer has consumed {app_id} up to {now} since this "
            f"one read it at {expected[app_id]} (two workers on the same input); nothing "
            "was written, the work is redone from the table"
        )


def columns_to_add(spec: TableSpec, present: Iterable[str]) -> list[pa.Field]:
    """The columns of ``spec`` a table made by an older shoplake lacks: ``ensure`` adds
    them (rows written before read NULL). A missing column that may not be NULL cannot
    be added that way: TableError."""
    have = set(present)
    missing = [f for f in spec.schema if f.name not in have]
    required = [f.name for f in missing if not f.nullable]
    if required:
        raise TableError(
            f"table {spec.qualified} lacks the column(s) {', '.join(required)}, which this "
            "version of shoplake needs and cannot add to existing rows: rebuild it "
            "(move the table away and run the pipeline over the log again)"
        )
    return missing


class TableHandle(Protocol):
    """One consistent snapshot of a table: its rows and positions agree."""

    @property
    def version(self) -> int: ...

    def positions(self, app_ids: Iterable[str]) -> dict[str, int]:
        """Recorded next offset per app id (ids never recorded are left out)."""
        ...

    def dataset(self) -> pads.Dataset:
        """The snapshot as an Arrow dataset, for readers that stream it lazily (the
        query layer); the pipeline uses ``scan``."""
        ...

    def scan(
        self, columns: Sequence[str] | None = None, where: Predicate | None = None
    ) -> pa.Table:
        """The rows for which ``where`` holds (None: all), with ``columns`` (None: all) in
        the spec's types; the predicate prunes partitions and files before any row is read."""
        ...

    def described_scan(
        self, columns: Sequence[str] | None = None, where: Predicate | None = None
    ) -> TableScan:
        """The same scan of this snapshot, for an engine to run itself."""
        ...

    def count(self) -> int: ...


class TableStore(Protocol):
    """Creates, writes, reads and maintains tables described by a TableSpec."""

    def exists(self, spec: TableSpec) -> bool: ...

    def ensure(self, spec: TableSpec) -> None:
        """Create the table from its spec if it does not exist; add the nullable columns
        the spec has gained since an existing table was made (``columns_to_add``)."""
        ...

    def open(self, spec: TableSpec) -> TableHandle:
        """The latest snapshot; raises TableNotFound if the table does not exist."""
        ...

    def open_as_of(self, spec: TableSpec, when: int | datetime) -> TableHandle:
        """The snapshot at a version, or the last one committed at or before a time."""
        ...

    def append(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None = None,
        *,
        expected: Mapping[str, int] | None = None,
    ) -> int:
        """Append rows and record positions in the same commit (an empty table records
        only); returns the version of that commit. ``expected``: the positions the table
        must record for those app ids when it commits, else CommitConflict (``fence``);
        the same for every write."""
        ...

    def upsert(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None = None,
        delete_when: Predicate | None = None,
        located: Located | None = None,
        *,
        expected: Mapping[str, int] | None = None,
    ) -> None:
        """Merge on the spec's key: update matches, insert the rest; source rows for which
        ``delete_when`` holds delete their key from the target instead, and are not
        inserted. ``located``: where the rows lie, for a table with ``cluster_by`` (a store
        that cannot use it merges as usual)."""
        ...

    def replace(
        self,
        spec: TableSpec,
        data: pa.Table,
        column: str,
        values: Sequence[object],
        positions: Mapping[str, int] | None = None,
        *,
        expected: Mapping[str, int] | None = None,
    ) -> None:
        """Atomically replace every row whose ``column`` is in ``values`` by ``data``
        (Delta replaceWhere), recording positions in the same commit."""
        ...

    def history(self, spec: TableSpec, limit: int | None = None) -> list[Commit]:
        """The table's commits, newest first (at most ``limit``)."""
        ...

    def restore(self, spec: TableSpec, when: int | datetime) -> Commit:
        """Roll the table back to its content as of a version or a time, in a new commit
        that also sets every recorded position back to what it was then (0 for a reader
        that had none), so the pipeline redoes what came after. Returns that commit."""
        ...

    def compact(self, spec: TableSpec) -> dict[str, Any]: ...

    def excess_files(self, spec: TableSpec) -> int:
        """Data files beyond one per partition: what compaction would merge."""
        ...

    def vacuum(self, spec: TableSpec, retention_hours: float) -> list[str]: ...

    def location(self, spec: TableSpec) -> str: ...

    def close(self) -> None:
        """Release held resources; the store may be used again afterwards."""
        ...
