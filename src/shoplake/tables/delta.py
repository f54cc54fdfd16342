"""Delta Lake adapter (delta-rs). The only module that imports ``deltalake``."""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from shoplake.contract.tables import TableSpec
from shoplake.errors import CommitConflict, DamagedTable, DiskFull, TableError, TableNotFound

T = TypeVar("T")


def _first_line(exc: BaseException) -> str:
    """delta-rs appends a Rust backtrace to its messages when RUST_BACKTRACE is set."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def _writer_properties(spec: TableSpec) -> WriterProperties:
    if not spec.payload_columns:
        return WriterProperties()
    plain = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
    return WriterProperties(column_properties=dict.fromkeys(spec.payload_columns, plain))


class _Write:
    """One write through a held table; ``committed`` is False when it made no commit;
    ``version``: the table's version after it."""

    def __init__(self, table: DeltaTable) -> None:
        self.table = table
        self.committed = True
        self.version = -1


class _SnapshotCache:
    """What is known of one table version: positions {app_id: next offset or None} and
    its Arrow dataset (building one lists every file: ~50 ms at a few hundred files)."""

    def __init__(self, version: int, known: dict[str, int | None]) -> None:
        self.version = version
        self.known = known
        self.dataset: pads.Dataset | None = None


def _native_filesystem(table_uri: str) -> pafs.FileSystem | None:
    """Arrow's own filesystem rooted at a local table, for its datasets.

    delta-rs's default is a filesystem implemented in Python: Arrow's I/O threads then call
    into the interpreter, and a scan stopped early (a LIMIT) still running at exit crashes
    or hangs the process in Arrow's thread-pool shutdown (delta-io/delta-rs#2184)."""
    if "://" in table_uri and not table_uri.startswith("file://"):
        return None
    raw, path = pafs.FileSystem.from_uri(
        table_uri if "://" in table_uri else Path(table_uri).resolve().as_uri()
    )
    return pafs.SubTreeFileSystem(path, raw)


class DeltaHandle:
    """A loaded Delta snapshot. Valid until the store reopens the same table."""

    def __init__(self, table: DeltaTable, spec: TableSpec, cache: _SnapshotCache) -> None:
        self._table = table
        self._spec = spec
        self._cache = cache

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

    def dataset(self) -> pads.Dataset:
        if self._cache.dataset is None:
            with _translated(self._spec, "reading"):
                self._cache.dataset = self._table.to_pyarrow_dataset(
                    filesystem=_native_filesystem(self._table.table_uri)
                )
        return self._cache.dataset

    def count(self) -> int:
        with _translated(self._spec, "counting"):
            return int(self._table.count())


class DeltaStore:
    """TableStore over Delta tables at ``ROOT/layer/name``.

    The store keeps each table loaded and refreshes it incrementally on open(); writes
    go through that same handle, so a commit based on stale positions fails with
    CommitConflict instead of doubling data (the fencing of a zombie writer)."""

    def __init__(self, root: str) -> None:
        self._root = root.rstrip("/")
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
        return self.location(spec) in self._tables or bool(
            DeltaTable.is_deltatable(self.location(spec))
        )

    def ensure(self, spec: TableSpec) -> None:
        if self.exists(spec):
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
                    schema=spec.schema,
                    partition_by=list(spec.partition_by) or None,
                    name=spec.qualified,
                    description=spec.description,
                )
            except DeltaError:
                if not self.exists(spec):  # another process created it first: fine
                    raise

    def _loaded(self, spec: TableSpec) -> DeltaTable:
        """The held table, brought up to date."""
        uri = self.location(spec)
        table = self._tables.get(uri)
        if table is None:
            table = DeltaTable(uri)
            self._tables[uri] = table
        else:
            table.update_incremental()
        return table

    def _cache(self, spec: TableSpec, version: int) -> _SnapshotCache:
        cache = self._caches.get(self.location(spec))
        if cache is None or cache.version != version:
            cache = _SnapshotCache(version, {})
            self._caches[self.location(spec)] = cache
        return cache

    def open(self, spec: TableSpec) -> DeltaHandle:
        with self._lock, _translated(spec, "opening", self.location(spec)):
            table = self._loaded(spec)
            return DeltaHandle(table, spec, self._cache(spec, int(table.version())))

    def open_as_of(self, spec: TableSpec, when: int | datetime) -> DeltaHandle:
        with _translated(spec, f"opening {spec.qualified} as of {when}:", self.location(spec)):
            table = DeltaTable(self.location(spec))
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
            return DeltaHandle(table, spec, _SnapshotCache(int(table.version()), {}))

    @contextmanager
    def _writing(
        self, spec: TableSpec, action: str, positions: Mapping[str, int] | None
    ) -> Iterator[_Write]:
        """Write through the held table; afterwards carry the cached positions forward
        if ours was the only commit since (else they are re-read when asked for)."""
        with self._lock, _translated(spec, action, self.location(spec)):
            table = self._loaded(spec)
            before = int(table.version())
            known = dict(self._cache(spec, before).known)
            write = _Write(table)
            yield write
            after = write.version = int(table.version())  # delta-rs moved it to its commit
            if write.committed and after == before + 1:
                merged: dict[str, int | None] = {**known, **(positions or {})}
                self._caches[self.location(spec)] = _SnapshotCache(after, merged)

    def append(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None = None,
    ) -> int:
        return self._write(spec, data, positions, "appending to")

    def upsert(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None = None,
        delete_when: str | None = None,
    ) -> None:
        if data.num_rows == 0:
            self.append(spec, spec.schema.empty_table(), positions)
            return
        if not spec.key:
            raise TableError(f"{spec.qualified} has no key to merge on")
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
        with self._writing(spec, "merging into", positions) as write:
            merger = write.table.merge(
                _conform(spec, data),
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                commit_properties=_commit(positions),
            )
            if delete_when:
                merger = merger.when_matched_delete(predicate=delete_when)
            merger = merger.when_matched_update_all()
            merger = merger.when_not_matched_insert_all(
                predicate=f"NOT ({delete_when})" if delete_when else None
            )
            metrics = merger.execute()
            write.committed = any(
                int(metrics.get(f"num_target_rows_{kind}", 0))
                for kind in ("inserted", "updated", "deleted")
            )
        if positions and not write.committed:
            # delta-rs makes no commit for a merge that changes nothing; record positions.
            self.append(spec, spec.schema.empty_table(), positions)

    def replace(
        self,
        spec: TableSpec,
        data: pa.Table,
        column: str,
        values: Sequence[object],
        positions: Mapping[str, int] | None = None,
    ) -> None:
        if not values:
            self.append(spec, spec.schema.empty_table(), positions)
            return
        listed = ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
        self._write(spec, data, positions, "replacing partitions of", f"{column} IN ({listed})")

    def _write(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None,
        action: str,
        replace_where: str | None = None,
    ) -> int:
        """Append, or overwrite the rows matching ``replace_where``, in one commit; returns
        its version."""
        options: dict[str, Any] = {
            "partition_by": list(spec.partition_by) or None,
            "commit_properties": _commit(positions),
            "writer_properties": _writer_properties(spec),
        }
        with self._writing(spec, action, positions) as write:
            if replace_where is None:
                write_deltalake(write.table, _conform(spec, data), mode="append", **options)
            else:
                write_deltalake(
                    write.table,
                    _conform(spec, data),
                    mode="overwrite",
                    predicate=replace_where,
                    **options,
                )
        return write.version

    def history(self, spec: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
        return self._with_table(spec, "reading history of", lambda t: t.history(limit))

    def compact(self, spec: TableSpec) -> dict[str, Any]:
        return self._with_table(spec, "compacting", lambda t: t.optimize.compact())

    def excess_files(self, spec: TableSpec) -> int:
        def count(table: DeltaTable) -> int:
            files = pa.table(table.get_add_actions(flatten=True))
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
            return fn(DeltaTable(self.location(spec)))
