"""Delta Lake adapter (delta-rs). The only module that imports ``deltalake``."""

from __future__ import annotations

import errno
import functools
import json
import operator
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Field,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from shoplake.contract.tables import TableSpec
from shoplake.errors import CommitConflict, DamagedTable, DiskFull, TableError, TableNotFound
from shoplake.settings import StorageSettings
from shoplake.tables.base import (
    AllOf,
    Commit,
    IsIn,
    Located,
    Predicate,
    TableScan,
    arrow_filter,
    columns_to_add,
    fence,
    merged_spans,
    rewound_positions,
    within,
)
from shoplake.tables.row_groups import RowGroupBounds
from shoplake.tables.storage import arrow_filesystem, arrow_subtree, delta_options

T = TypeVar("T")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_XML_ERROR = re.compile(r"<Code>(.*?)</Code>(?:.*?<Message>(.*?)</Message>)?", re.S)


def _first_line(exc: BaseException) -> str:
    """delta-rs's message on one line. Object-store errors come as a chain of causes, one
    per line under "↳" (the last one says what went wrong: a refused connection, an S3
    error code), and a Rust backtrace follows when RUST_BACKTRACE is set."""
    lines = _ANSI.sub("", str(exc)).strip().splitlines()
    if not lines:
        return type(exc).__name__
    parts = [lines[0].strip()]
    for n, line in enumerate(lines[1:], start=1):
        if not line.strip().startswith("↳"):
            break
        cause = line.strip().lstrip("↳ ").strip()
        if cause.startswith("<"):  # an S3 error document: its code and message
            found = _XML_ERROR.search("".join(lines[n:]))
            parts.append(": ".join(g for g in found.groups() if g) if found else "")
            break
        parts.append(cause)
    return ": ".join(p for p in parts if p)


def _damaged_commit(location: str | None) -> Path | None:
    """The first commit file of a local table's log that is not JSON lines, if any."""
    if location is None or "://" in location:
        return None
    log_dir = Path(location) / "_delta_log"
    for path in sorted(log_dir.glob("*.json")):
        try:
            for line in path.read_bytes().splitlines():
                if line.strip():
                    json.loads(line)
        except (OSError, ValueError):
            return path
    return None


@contextmanager
def _translated(spec: TableSpec, action: str, location: str | None = None) -> Iterator[None]:
    """Library errors become shoplake errors at this edge: one line, naming the table (and
    a damaged file, with what to do about it)."""
    try:
        yield
    except TableNotFoundError as exc:
        raise TableNotFound(f"table {spec.qualified} does not exist yet") from exc
    except CommitFailedError as exc:
        raise CommitConflict(
            f"{action} {spec.qualified}: concurrent commit ({_first_line(exc)})"
        ) from exc
    except (DeltaError, OSError) as exc:
        text = _first_line(exc)
        if getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in text:
            raise DiskFull(
                f"{action} {spec.qualified}: no space left on the device of "
                f"{location or 'the lakehouse'}: free some space ({text})"
            ) from exc
        damaged = _damaged_commit(location) if "json" in text.lower() else None
        if damaged is not None:
            newest = max(Path(damaged).parent.glob("*.json"))
            what = (
                "it is the newest commit: move it out of _delta_log to take the table back "
                "one version (the next run redoes that step), or restore it from a backup"
                if damaged == newest
                else "restore it from a backup (a commit before the newest cannot be skipped)"
            )
            raise DamagedTable(
                f"table {spec.qualified} is damaged: its commit {damaged} is truncated or "
                f"not JSON ({text}); {what}"
            ) from exc
        raise TableError(f"{action} {spec.qualified} failed: {text}") from exc


def _commit(positions: Mapping[str, int] | None) -> CommitProperties | None:
    if not positions:
        return None
    return CommitProperties(
        app_transactions=[Transaction(app_id, int(v)) for app_id, v in positions.items()]
    )


def _conform(spec: TableSpec, data: pa.Table) -> pa.Table:
    """The spec's columns, in its order and types."""
    return data.select(spec.schema.names).cast(spec.schema)


# The files of a clustered table (TableSpec.cluster_by) are cut at about this size: an
# upsert rewrites the newest one each step, and a late update one more.
_CLUSTERED_FILE_BYTES = 1 << 20
# Compaction bin-packs the files smaller than this. delta-rs's default (100 MB) made a
# day's growing file part of every compaction until it reached 100 MB: ~100 MB of a busy
# day's page views and bronze rewritten every minute. Files this size are left alone.
_COMPACTED_FILE_BYTES = 32 << 20
# ... in row groups of this many rows: a scan for a few keys (the orders a round touches)
# reads the row groups whose statistics hold them, not the whole compacted day (49 → 14 ms
# for 300k orders in one file, docs/benchmarks.md).
_COMPACTED_ROW_GROUP_ROWS = 16_384


def _with_files_overlapping(
    table: DeltaTable, column: str, spans: Sequence[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]] | None:
    """``spans`` widened to the whole of every file they overlap, by the files' min/max of
    ``column`` (those files are then rewritten whole, not cut in two); None when a file
    has no such statistics."""
    files = pa.table(table.get_add_actions(flatten=True))
    if files.num_rows == 0:
        return list(spans)
    low, high = f"min.{column}", f"max.{column}"
    if low not in files.column_names:
        return None
    tick = timedelta(microseconds=1)
    widened = list(spans)
    for first, last in zip(files[low].to_pylist(), files[high].to_pylist(), strict=True):
        if first is None or last is None:
            return None
        if any(first < end and start <= last for start, end in spans):
            widened.append((first, last + tick))
    return merged_spans(widened)


def _write_through(
    table: DeltaTable,
    spec: TableSpec,
    rows: pa.Table,
    positions: Mapping[str, int] | None,
    replace_where: str | None = None,
    target_file_size: int | None = None,
) -> None:
    """Append ``rows`` (in the spec's types) through the held ``table``, or overwrite the
    rows matching ``replace_where`` with them, in one commit with ``positions``."""
    options: dict[str, Any] = {
        "partition_by": list(spec.partition_by) or None,
        "target_file_size": target_file_size,
        "commit_properties": _commit(positions),
        "writer_properties": _writer_properties(spec),
    }
    if replace_where is None:
        write_deltalake(table, rows, mode="append", **options)
    else:
        write_deltalake(table, rows, mode="overwrite", predicate=replace_where, **options)


def _stats_configuration(spec: TableSpec) -> dict[str, str] | None:
    """The table property that limits its files' statistics to ``spec.stats_columns``
    (None: a table without any keeps Delta's default, every column)."""
    if not spec.stats_columns:
        return None
    return {"delta.dataSkippingStatsColumns": ",".join(spec.stats_columns)}


def _writer_properties(spec: TableSpec, max_row_group_size: int | None = None) -> WriterProperties:
    plain = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
    return WriterProperties(
        max_row_group_size=max_row_group_size,
        column_properties=dict.fromkeys(spec.payload_columns, plain) or None,
    )


class _Write:
    """One write through a held table; ``committed`` is False when it made no commit;
    ``version``: the table's version after it."""

    def __init__(self, table: DeltaTable, cache: _SnapshotCache) -> None:
        self.table = table
        self.cache = cache  # of the version written over
        self.committed = True
        self.version = -1


class _FileFragments:
    """The Arrow fragments of a table's files, kept across versions: a file never changes,
    so its fragment, and the footer Arrow reads into it once, serve every later version.
    delta-rs's to_pyarrow_dataset builds each file's fragment again for every version,
    with an expression of the file's statistics made by calls into Python (~0.1 ms a
    file, a fifth of the demo's CPU once tables held a few hundred files). Here a file's
    fragment carries its partition values only: Arrow prunes by the statistics of its
    row groups, exact where the log's are rounded (timestamps to the millisecond), and
    ``bounds`` narrows a scan for a long key list (tables/row_groups.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_path: dict[str, pads.ParquetFileFragment] = {}
        self.bounds = RowGroupBounds()
        self.format = pads.ParquetFileFormat(
            default_fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=True)
        )

    def dataset(self, table: DeltaTable, filesystem: pafs.FileSystem) -> pads.Dataset:
        actions = pa.table(table.get_add_actions(flatten=True))
        paths = actions["path"].to_pylist()  # as the log writes them: percent-encoded
        if table.protocol().min_reader_version > 1 or any("://" in p for p in paths):
            # column mapping, deletion vectors, absolute paths: delta-rs's own way
            dataset = table.to_pyarrow_dataset(filesystem=filesystem)
            self.bounds.keep_only({f.path for f in dataset.get_fragments()})
            return dataset
        schema = pa.schema(table.schema().to_arrow())
        partitions = {
            name.removeprefix("partition."): actions[name].to_pylist()
            for name in actions.column_names
            if name.startswith("partition.")
        }
        fragments = []
        with self._lock:  # files compacted or vacuumed away are forgotten
            known, self._by_path = self._by_path, {}
            for i, path in enumerate(paths):
                fragment = known.get(path)
                if fragment is None:
                    values = {column: given[i] for column, given in partitions.items()}
                    fragment = self.format.make_fragment(
                        urllib.parse.unquote(path),
                        filesystem=filesystem,
                        partition_expression=_partition_expression(schema, values),
                    )
                self._by_path[path] = fragment
                fragments.append(fragment)
            self.bounds.keep_only(self._by_path)
        return pads.FileSystemDataset(fragments, schema, self.format, filesystem)


def _partition_expression(schema: pa.Schema, values: Mapping[str, object]) -> pc.Expression:
    terms = [
        pc.field(column).is_null()
        if value is None
        else pc.field(column) == pa.scalar(value, schema.field(column).type)
        for column, value in values.items()
    ]
    return functools.reduce(operator.and_, terms, pc.scalar(True))


class _SnapshotCache:
    """What is known of one table version: positions {app_id: next offset or None} and
    its Arrow dataset (built once a version, from the fragments kept of earlier ones).
    ``string_views``: the table has files with string_view columns (see DeltaHandle.scan),
    which stays true for later versions; ``fragments``: its files' Arrow fragments (and
    row-group bounds), kept for later versions too."""

    def __init__(
        self,
        version: int,
        known: dict[str, int | None],
        earlier: _SnapshotCache | None = None,
    ) -> None:
        self.version = version
        self.known = known
        self.string_views: bool = earlier is not None and earlier.string_views
        self.fragments: _FileFragments = _FileFragments() if earlier is None else earlier.fragments
        self.dataset: pads.Dataset | None = None


class _KnownPositions:
    """The positions known at recent versions of each table, shared by every store of
    this process. A version's positions never change, so what one store learns (from its
    own commit, or one log replay per app id: ~4 ms each) another need not learn again:
    the refresh lane's store reads the positions of the silver tables the main loop's
    store writes. Keyed by the table's id too, as a table made again where one was
    counts its versions from 0 again."""

    def __init__(self, versions_per_table: int = 16) -> None:
        self._lock = threading.Lock()
        self._tables: dict[str, dict[int, dict[str, int | None]]] = {}
        self._versions_per_table = versions_per_table

    def at(self, table: DeltaTable, version: int) -> dict[str, int | None]:
        """The shared dict of what is known at ``version`` of ``table`` (fill it in)."""
        key = f"{table.table_uri}#{table.metadata().id}"
        with self._lock:
            versions = self._tables.setdefault(key, {})
            known = versions.get(version)
            if known is None:
                known = versions[version] = {}
                while len(versions) > self._versions_per_table:
                    del versions[min(versions)]
            return known


_KNOWN_POSITIONS = _KnownPositions()


def _sql_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, datetime):  # a TIMESTAMP literal is naive nanoseconds to delta-rs
        return f"'{value.isoformat()}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {value!r}")


def _merge_sql(where: Predicate, alias: str | None = None) -> str:
    """``where`` as a predicate of delta-rs's SQL over the table aliased ``alias``."""
    if isinstance(where, AllOf):
        return " AND ".join(f"({_merge_sql(t, alias)})" for t in where.terms)
    column = where.column if alias is None else f"{alias}.{where.column}"
    if isinstance(where, IsIn):
        values = (
            where.values.to_pylist()
            if isinstance(where.values, pa.Array | pa.ChunkedArray)
            else where.values
        )
        return f"{column} IN ({', '.join(_sql_literal(v) for v in values)})"
    return f"{column} {where.op} {_sql_literal(where.value)}"


def _may_have_moved(uri: str, table: DeltaTable) -> bool:
    """Whether a commit after the held version may exist. On a local disk, one look for
    the next commit's file: delta-rs's update lists the whole ``_delta_log``, which gains
    a file a commit (1 ms at 1,000 commits, 3 at 3,000: a day of rounds, ~100k), and a
    round opens each table a few times. Commits are numbered without gaps and appear
    whole (a rename), so no next file means no newer commit. Elsewhere, ask delta-rs."""
    if "://" in uri:
        return True
    return Path(uri, "_delta_log", f"{int(table.version()) + 1:020d}.json").exists()


class DeltaHandle:
    """A loaded Delta snapshot. Valid until the store reopens the same table."""

    def __init__(
        self,
        table: DeltaTable,
        spec: TableSpec,
        cache: _SnapshotCache,
        filesystem: Callable[[], pafs.FileSystem],
    ) -> None:
        self._table = table
        self._spec = spec
        self._cache = cache
        self._filesystem = filesystem

    @property
    def version(self) -> int:
        return self._cache.version

    def positions(self, app_ids: Iterable[str]) -> dict[str, int]:
        # transaction_version replays the log on every call, so answers are cached per version.
        out: dict[str, int] = {}
        for app_id in app_ids:
            if app_id not in self._cache.known:
                v = self._table.transaction_version(app_id)
                self._cache.known[app_id] = None if v is None else int(v)
            value = self._cache.known[app_id]
            if value is not None:
                out[app_id] = value
        return out

    def scan(
        self, columns: Sequence[str] | None = None, where: Predicate | None = None
    ) -> pa.Table:
        dataset = self.dataset()
        wanted = None if columns is None else list(columns)
        with _translated(self._spec, "reading"):
            if where is None:
                return dataset.to_table(columns=wanted)
            # a long list of keys (a round's order ids): only the row groups that may hold one
            dataset = self._cache.fragments.bounds.narrowed(dataset, where)
            try:
                flt = arrow_filter(self._spec, where, self._cache.string_views)
                return dataset.to_table(columns=wanted, filter=flt)
            except pa.ArrowNotImplementedError:
                if self._cache.string_views:
                    raise
            # delta-rs's merges write string columns as string_view, which Arrow's filters
            # cannot compare with strings: compare as strings, though that prunes no file by
            # its statistics, in every scan of this table from now on.
            self._cache.string_views = True
            flt = arrow_filter(self._spec, where, cast_strings=True)
            return dataset.to_table(columns=wanted, filter=flt)

    def described_scan(
        self, columns: Sequence[str] | None = None, where: Predicate | None = None
    ) -> TableScan:
        return TableScan(
            "delta",
            self._table.table_uri,
            self.version,
            None if columns is None else tuple(columns),
            where,
        )

    def dataset(self) -> pads.Dataset:
        if self._cache.dataset is None:
            with _translated(self._spec, "reading"):
                # Arrow's own filesystem: delta-rs's default is one implemented in Python,
                # whose calls from Arrow's I/O threads crash or hang the process at exit
                # when a scan stopped early (a LIMIT) is still running (delta-rs#2184).
                self._cache.dataset = self._cache.fragments.dataset(self._table, self._filesystem())
        return self._cache.dataset

    def count(self) -> int:
        with _translated(self._spec, "counting"):
            return int(self._table.count())


# Rows a commit added and removed, from its operationMetrics: the first group of metric
# names present is summed (None: none is). delta-rs writes numbers under snake_case
# names, Delta on Spark strings under camelCase ones. Updated rows count as removed and
# added again; the rows a DELETE, UPDATE or MERGE only copies into new files do not count.
_ROWS_ADDED: tuple[tuple[str, ...], ...] = (
    ("num_target_rows_inserted", "num_target_rows_updated"),  # MERGE
    ("num_updated_rows",),  # UPDATE
    ("num_added_rows",),  # WRITE: append, overwrite (with a predicate too)
    ("numTargetRowsInserted", "numTargetRowsUpdated"),  # Spark: MERGE
    ("numUpdatedRows",),  # Spark: UPDATE
    ("numOutputRows",),  # Spark: WRITE, STREAMING UPDATE
)
_ROWS_REMOVED: tuple[tuple[str, ...], ...] = (
    ("num_target_rows_updated", "num_target_rows_deleted"),  # MERGE
    ("num_updated_rows",),  # UPDATE
    ("num_deleted_rows",),  # DELETE
    ("numTargetRowsUpdated", "numTargetRowsDeleted"),  # Spark: MERGE
    ("numUpdatedRows",),  # Spark: UPDATE
    ("numDeletedRows",),  # Spark: DELETE
)


def _rows(metrics: Mapping[str, Any], groups: tuple[tuple[str, ...], ...]) -> int | None:
    for names in groups:
        values = [metrics[name] for name in names if metrics.get(name) is not None]
        if values:
            try:
                return sum(int(v) for v in values)
            except (TypeError, ValueError):
                return None
    return None


def _commit_positions(fs: pafs.FileSystem, log_dir: str, version: int) -> dict[str, int]:
    """The app transactions (positions) written in one commit, from its log file; ``{}``
    when that file is gone (log cleanup after a checkpoint). Lines that are not JSON are
    passed over: delta-rs has read the commits it lists."""
    try:
        with fs.open_input_stream(f"{log_dir}/{version:020d}.json") as f:
            content = f.read()
    except FileNotFoundError:
        return {}
    out: dict[str, int] = {}
    for line in content.splitlines():
        if b'"txn"' not in line:
            continue
        try:
            txn = json.loads(line).get("txn")
            if isinstance(txn, dict):
                out[str(txn["appId"])] = int(txn["version"])
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    return out


def _commit_of(entry: Mapping[str, Any], fs: pafs.FileSystem, log_dir: str) -> Commit:
    """One entry of ``DeltaTable.history()`` (its commitInfo) as a Commit."""
    version = int(entry["version"])
    metrics = entry.get("operationMetrics") or {}
    return Commit(
        version=version,
        timestamp=datetime.fromtimestamp(int(entry["timestamp"]) / 1000, UTC),
        operation=str(entry.get("operation") or ""),
        rows_added=_rows(metrics, _ROWS_ADDED),
        rows_removed=_rows(metrics, _ROWS_REMOVED),
        positions=_commit_positions(fs, log_dir, version),
    )


class DeltaStore:
    """TableStore over Delta tables at ``ROOT/layer/name``.

    The store keeps each table loaded and refreshes it incrementally on open(); writes
    go through that same handle, so a commit based on stale positions fails with
    CommitConflict instead of doubling data (the fencing of a zombie writer)."""

    def __init__(self, root: str, storage: StorageSettings | None = None) -> None:
        self._root = root.rstrip("/")
        self._storage = storage or StorageSettings()
        # delta-rs's storage_options: None for a local root
        self._options = delta_options(self._root, self._storage)
        self._lock = threading.RLock()
        self._tables: dict[str, DeltaTable] = {}
        self._caches: dict[str, _SnapshotCache] = {}

    def location(self, spec: TableSpec) -> str:
        return f"{self._root}/{spec.layer}/{spec.name}"

    def close(self) -> None:
        """Release the held tables (their native resources go before interpreter exit)."""
        with self._lock:
            self._tables.clear()
            self._caches.clear()

    def exists(self, spec: TableSpec) -> bool:
        uri = self.location(spec)
        if uri in self._tables:
            return True
        with _translated(spec, "looking for"):
            return bool(DeltaTable.is_deltatable(uri, storage_options=self._options))

    def ensure(self, spec: TableSpec) -> None:
        if self.exists(spec):
            self._upgrade(spec)
            return
        uri = self.location(spec)
        if "://" not in uri:
            try:
                Path(uri).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TableError(f"cannot create {uri}: {exc.strerror}") from exc
        with _translated(spec, "creating", uri):
            try:
                DeltaTable.create(
                    uri,
                    storage_options=self._options,
                    schema=spec.schema,
                    partition_by=list(spec.partition_by) or None,
                    name=spec.qualified,
                    description=spec.description,
                    configuration=_stats_configuration(spec),
                )
            except DeltaError:
                if not self.exists(spec):  # another process created it first: fine
                    raise

    def _upgrade(self, spec: TableSpec) -> None:
        """A table an older shoplake made: the spec's new columns added, and the files it
        writes from now on given the statistics a new table's get (files written before
        keep theirs). Each is one commit, once."""
        with self._lock, _translated(spec, "upgrading", self.location(spec)):
            table = self._loaded(spec)
            missing = columns_to_add(spec, (f.name for f in table.schema().fields))
            if missing:
                table.alter.add_columns([Field.from_arrow(f) for f in missing])
            stats = _stats_configuration(spec) or {}
            have = table.metadata().configuration
            if any(have.get(key) != value for key, value in stats.items()):
                table.alter.set_table_properties(stats)

    def _loaded(self, spec: TableSpec) -> DeltaTable:
        """The held table, brought up to date."""
        uri = self.location(spec)
        table = self._tables.get(uri)
        if table is None:
            table = self._table_at(uri)
            self._tables[uri] = table
        elif _may_have_moved(uri, table):
            table.update_incremental()
        return table

    def _cache(self, spec: TableSpec, table: DeltaTable) -> _SnapshotCache:
        version = int(table.version())
        cache = self._caches.get(self.location(spec))
        if cache is None or cache.version != version:
            known = _KNOWN_POSITIONS.at(table, version)
            cache = _SnapshotCache(version, known, cache)
            self._caches[self.location(spec)] = cache
        return cache

    def open(self, spec: TableSpec) -> DeltaHandle:
        with self._lock, _translated(spec, "opening", self.location(spec)):
            table = self._loaded(spec)
            return self._handle(table, spec, self._cache(spec, table))

    def _table_at(self, uri: str) -> DeltaTable:
        return DeltaTable(uri, storage_options=self._options)

    def _handle(self, table: DeltaTable, spec: TableSpec, cache: _SnapshotCache) -> DeltaHandle:
        uri = self.location(spec)
        return DeltaHandle(table, spec, cache, lambda: arrow_subtree(uri, self._storage))

    def open_as_of(self, spec: TableSpec, when: int | datetime) -> DeltaHandle:
        with _translated(spec, f"opening {spec.qualified} as of {when}:", self.location(spec)):
            table = self._table_at(self.location(spec))
            if isinstance(when, datetime):
                # By the commit's own timestamp, as `history` shows it: delta-rs would go
                # by the log file's modification time, a few ms later.
                cutoff = when.timestamp() * 1000
                versions = [int(c["version"]) for c in table.history() if c["timestamp"] <= cutoff]
                if not versions:
                    raise TableError(
                        f"{spec.qualified} has no version as of {when.isoformat()}: "
                        "its first commit is later"
                    )
                when = max(versions)
            table.load_as_version(when)
            return self._handle(table, spec, _SnapshotCache(int(table.version()), {}))

    @contextmanager
    def _writing(
        self,
        spec: TableSpec,
        action: str,
        positions: Mapping[str, int] | None,
        expected: Mapping[str, int] | None = None,
    ) -> Iterator[_Write]:
        """Write through the held table, brought up to date and fenced on ``expected``
        (a commit racing that check is caught by delta-rs, which fails a commit whose
        app ids a concurrent one recorded); afterwards carry the cached positions forward
        if ours was the only commit since (else they are re-read when asked for)."""
        with self._lock, _translated(spec, action, self.location(spec)):
            table = self._loaded(spec)
            before = int(table.version())
            cache = self._cache(spec, table)
            if expected:
                recorded = self._handle(table, spec, cache).positions(expected)
                fence(spec, recorded, expected)
            known = dict(cache.known)
            write = _Write(table, cache)
            yield write
            after = write.version = int(table.version())  # delta-rs moved it to its commit
            if write.committed and after == before + 1:
                merged = _KNOWN_POSITIONS.at(table, after)
                merged.update({**known, **(positions or {})})
                self._caches[self.location(spec)] = _SnapshotCache(after, merged, cache)

    def append(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None = None,
        *,
        expected: Mapping[str, int] | None = None,
    ) -> int:
        return self._write(spec, data, positions, "appending to", expected=expected)

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
        if data.num_rows == 0:
            self.append(spec, spec.schema.empty_table(), positions, expected=expected)
            return
        if not spec.key:
            raise TableError(f"{spec.qualified} has no key to merge on")
        if (
            located is not None
            and spec.cluster_by is not None
            and delete_when is None
            and self._rewrite_spans(spec, data, positions, located, expected)
        ):
            return
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
        with self._writing(spec, "merging into", positions, expected) as write:
            merger = write.table.merge(
                _conform(spec, data),
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                commit_properties=_commit(positions),
            )
            deleting = None if delete_when is None else _merge_sql(delete_when, "s")
            if deleting:
                merger = merger.when_matched_delete(predicate=deleting)
            merger = merger.when_matched_update_all()
            merger = merger.when_not_matched_insert_all(
                predicate=f"NOT ({deleting})" if deleting else None
            )
            metrics = merger.execute()
            write.committed = any(
                int(metrics.get(f"num_target_rows_{kind}", 0))
                for kind in ("inserted", "updated", "deleted")
            )
        if positions and not write.committed:
            # delta-rs makes no commit for a merge that changes nothing; record positions.
            self.append(spec, spec.schema.empty_table(), positions, expected=expected)

    def _rewrite_spans(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None,
        located: Located,
        expected: Mapping[str, int] | None,
    ) -> bool:
        """An upsert into a table kept sorted by ``spec.cluster_by``: the files overlapping
        ``located``'s spans are read whole, their rows with a key of ``data`` replaced, and
        written back sorted, cut at _CLUSTERED_FILE_BYTES, in one commit. A merge would
        rewrite every file holding a key of ``data``, and without the order every file
        does. False (nothing written): a file's span is unknown, so merge instead."""
        column = str(spec.cluster_by)
        (key,) = spec.key  # one key column: order_payments' order_id
        data = _conform(spec, data)
        with self._writing(spec, "merging into", positions, expected) as write:
            spans = _with_files_overlapping(write.table, column, located.spans)
            if not spans:
                write.committed = False
                return False
            handle = self._handle(write.table, spec, write.cache)
            held = [_conform(spec, handle.scan(None, within(column, span))) for span in spans]
            kept = pa.concat_tables(held)
            kept = kept.filter(pc.invert(pc.is_in(kept[key], value_set=data[key])))
            _write_through(
                write.table,
                spec,
                pa.concat_tables([kept, data]).sort_by(column),
                positions,
                " OR ".join(f"({_merge_sql(within(column, s))})" for s in spans),
                target_file_size=_CLUSTERED_FILE_BYTES,
            )
        return True

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
        if not values:
            self.append(spec, spec.schema.empty_table(), positions, expected=expected)
            return
        listed = ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
        where = f"{column} IN ({listed})"
        self._write(spec, data, positions, "replacing partitions of", where, expected)

    def _write(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None,
        action: str,
        replace_where: str | None = None,
        expected: Mapping[str, int] | None = None,
    ) -> int:
        """Append, or overwrite the rows matching ``replace_where``, in one commit; returns
        its version."""
        with self._writing(spec, action, positions, expected) as write:
            _write_through(write.table, spec, _conform(spec, data), positions, replace_where)
        return write.version

    def history(self, spec: TableSpec, limit: int | None = None) -> list[Commit]:
        # Through the held table: loading the table afresh reads its last checkpoint,
        # which a busy table's tombstones make large (silver asks after each compaction).
        with _translated(spec, "reading history of", self.location(spec)):
            with self._lock:
                entries = self._loaded(spec).history(limit)
            fs, path = arrow_filesystem(self.location(spec), self._storage)
            log_dir = f"{path}/_delta_log"
            ordered = sorted(entries, key=lambda e: int(e["version"]), reverse=True)
            return [_commit_of(entry, fs, log_dir) for entry in ordered]

    def restore(self, spec: TableSpec, when: int | datetime) -> Commit:
        target = self.open_as_of(spec, when)
        current = self.open(spec).version
        if target.version == current:
            raise TableError(f"{spec.qualified} is at version {current} already")
        positions = rewound_positions(self.history(spec), target)
        with self._writing(spec, "restoring", positions) as write:
            try:
                write.table.restore(target.version, commit_properties=_commit(positions))
            except DeltaError as exc:
                if "missing file" in str(exc).lower():
                    raise TableError(
                        f"cannot restore {spec.qualified} to version {target.version}: "
                        "files of that version were vacuumed (older than "
                        "SHOPLAKE_PIPELINE__VACUUM_RETENTION_HOURS)"
                    ) from exc
                raise
        return self.history(spec, 1)[0]

    def compact(self, spec: TableSpec) -> dict[str, Any]:
        return self._with_table(
            spec,
            "compacting",
            lambda t: t.optimize.compact(
                target_size=_COMPACTED_FILE_BYTES,
                writer_properties=_writer_properties(spec, _COMPACTED_ROW_GROUP_ROWS),
            ),
        )

    def excess_files(self, spec: TableSpec) -> int:
        """Small files beyond one per partition: those below a quarter of the compacted
        size (a compaction's own files may fall short of that size; micro-batches' files
        are far smaller)."""
        if spec.cluster_by is not None:
            return 0  # its upserts keep its files sorted and cut: bin-packing would mix them

        def count(table: DeltaTable) -> int:
            files = pa.table(table.get_add_actions(flatten=True))
            files = files.filter(pc.less(files["size_bytes"], _COMPACTED_FILE_BYTES // 4))
            keys = [c for c in files.column_names if c.startswith("partition.")]
            partitions = files.select(keys).group_by(keys).aggregate([]).num_rows if keys else 1
            return max(0, int(files.num_rows) - max(1, int(partitions)))

        return self._with_table(spec, "listing files of", count)

    def vacuum(self, spec: TableSpec, retention_hours: float) -> list[str]:
        return self._with_table(
            spec,
            "vacuuming",
            lambda t: t.vacuum(
                retention_hours=int(retention_hours),
                enforce_retention_duration=False,
                dry_run=False,
            ),
        )

    def _with_table(self, spec: TableSpec, action: str, fn: Callable[[DeltaTable], T]) -> T:
        with _translated(spec, action, self.location(spec)):
            return fn(self._table_at(self.location(spec)))
