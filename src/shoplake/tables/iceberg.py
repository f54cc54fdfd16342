"""Apache Iceberg adapter (PyIceberg). The only module that imports ``pyiceberg``.

Tables live in a catalog (a SQL catalog on SQLite by default; a shared SQL database or a
REST catalog for several machines), namespace = layer, at ``ROOT/layer/name`` (a REST
catalog places them in its own warehouse).

- **Versions** are snapshot sequence numbers (0: no snapshot yet).
- **Positions** ride in each snapshot's summary: ``shoplake.positions`` holds every
  reader's next offset as of that snapshot, ``shoplake.commit-positions`` those this
  commit set. Every write here carries the whole map forward, compaction included.
- **Fencing**: a commit is a compare-and-swap of the table's metadata in the catalog. A
  writer that lost the race gets CommitConflict, unless it only appends or compacts and
  no position it records moved meanwhile (then it is redone on the new snapshot, as
  Delta does).
- **Maintenance** that PyIceberg lacks is written here on its API: compaction (a
  partition's files rewritten as one), snapshot expiry (PyIceberg's), orphan-file removal.
"""

from __future__ import annotations

import functools
import json
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    LessThan,
    LessThanOrEqual,
    NotEqualTo,
)
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Snapshot

from shoplake.contract.tables import TableSpec
from shoplake.errors import CommitConflict, TableError, TableNotFound
from shoplake.settings import StorageSettings, is_rest_catalog, rest_token_endpoint
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
    rewound_positions,
)
from shoplake.tables.storage import arrow_filesystem, on_object_storage

POSITIONS = "shoplake.positions"
COMMIT_POSITIONS = "shoplake.commit-positions"
_REDO_ATTEMPTS = 10

_COMPARE: dict[str, Any] = {  # op → the expression's class
    "=": EqualTo,
    "!=": NotEqualTo,
    "<": LessThan,
    "<=": LessThanOrEqual,
    ">": GreaterThan,
    ">=": GreaterThanOrEqual,
}


def _expression(where: Predicate | None) -> BooleanExpression:
    """``where`` as an Iceberg expression: it prunes partitions and files by their stats."""
    if where is None:
        return AlwaysTrue()
    if isinstance(where, AllOf):
        return functools.reduce(And, (_expression(t) for t in where.terms))
    if isinstance(where, IsIn):
        values = where.values
        listed = values.to_pylist() if isinstance(values, pa.Array | pa.ChunkedArray) else values
        kept = {v for v in listed if v is not None}
        return In(where.column, kept)  # type: ignore[call-arg]  # pyiceberg's __new__
    compared: BooleanExpression = _COMPARE[where.op](where.column, where.value)
    return compared


def _recorded(snapshot: Snapshot, key: str) -> dict[str, int] | None:
    """The positions ``key`` of the snapshot's summary; None if it has none."""
    text = None if snapshot.summary is None else snapshot.summary.additional_properties.get(key)
    return None if text is None else {str(k): int(v) for k, v in json.loads(text).items()}


def _positions_of(table: Table, snapshot: Snapshot | None) -> dict[str, int]:
    """Every reader's position as of ``snapshot``. A snapshot another engine committed
    (Spark's own Iceberg writer, say) records none and moves none: the nearest ancestor
    shoplake committed holds them."""
    while snapshot is not None:
        recorded = _recorded(snapshot, POSITIONS)
        if recorded is not None:
            return recorded
        parent = snapshot.parent_snapshot_id
        snapshot = None if parent is None else table.snapshot_by_id(parent)
    return {}


def _conform(spec: TableSpec, data: pa.Table) -> pa.Table:
    return data.select(spec.schema.names).cast(spec.schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def _translated(spec: TableSpec, action: str) -> Iterator[None]:
    try:
        yield
    except NoSuchTableError as exc:
        raise TableNotFound(f"table {spec.qualified} does not exist yet") from exc
    except CommitFailedException as exc:
        raise CommitConflict(
            f"{action} {spec.qualified}: concurrent commit ({_first_line(exc)})"
        ) from exc
    except (OSError, ValueError) as exc:
        raise TableError(f"{action} {spec.qualified} failed: {_first_line(exc)}") from exc


class IcebergHandle:
    """One snapshot of an Iceberg table (None: the table has none yet)."""

    def __init__(
        self,
        table: Table,
        spec: TableSpec,
        snapshot: Snapshot | None,
        storage: StorageSettings,
        catalog_name: str,
    ) -> None:
        self._table = table
        self._spec = spec
        self._snapshot = snapshot
        self._storage = storage
        self._catalog_name = catalog_name

    @property
    def version(self) -> int:
        return 0 if self._snapshot is None else int(self._snapshot.sequence_number or 0)

    def positions(self, app_ids: Iterable[str]) -> dict[str, int]:
        known = _positions_of(self._table, self._snapshot)
        return {a: known[a] for a in app_ids if a in known}

    def positions_all(self) -> dict[str, int]:
        return _positions_of(self._table, self._snapshot)

    def _scan(self, columns: Sequence[str] | None, where: Predicate | None) -> Any:
        return self._table.scan(
            row_filter=_expression(where),
            selected_fields=tuple(columns) if columns is not None else ("*",),
            snapshot_id=None if self._snapshot is None else self._snapshot.snapshot_id,
        )

    def scan(
        self, columns: Sequence[str] | None = None, where: Predicate | None = None
    ) -> pa.Table:
        schema = self._spec.schema
        wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
        if self._snapshot is None:
            return wanted.empty_table()
        with _translated(self._spec, "reading"):
            rows = self._scan(columns, where).to_arrow()
        return rows.select(wanted.names).cast(wanted)

    def described_scan(
        self, columns: Sequence[str] | None = None, where: Predicate | None = None
    ) -> TableScan:
        return TableScan(
            "iceberg",
            self._table.location(),
            self.version,
            None if columns is None else tuple(columns),
            where,
            name=f"{self._catalog_name}.{self._spec.layer}.{self._spec.name}",
            snapshot_id=None if self._snapshot is None else self._snapshot.snapshot_id,
        )

    def dataset(self) -> pads.Dataset:
        """The snapshot's data files as a lazy Arrow dataset (copy-on-write tables have no
        delete files; a table with some, written elsewhere, is read into memory)."""
        if self._snapshot is None:
            return pads.dataset(self._spec.schema.empty_table())
        with _translated(self._spec, "reading"):
            tasks = list(self._scan(None, None).plan_files())
            if any(task.delete_files for task in tasks):
                return pads.dataset(self.scan())
            fs, _ = arrow_filesystem(self._table.location(), self._storage)
            paths = [_path_in(task.file.file_path) for task in tasks]
            return pads.dataset(paths, schema=self._spec.schema, format="parquet", filesystem=fs)

    def count(self) -> int:
        if self._snapshot is None:
            return 0
        with _translated(self._spec, "counting"):
            tasks = list(self._scan(None, None).plan_files())
            if any(task.delete_files for task in tasks):  # row-level deletes of another engine
                return int(self.scan(self._spec.schema.names[:1]).num_rows)
            return sum(int(task.file.record_count) for task in tasks)


def _path_in(uri: str) -> str:
    """A data file's URI as a path of Arrow's filesystem for it."""
    for scheme in ("file://", "s3://", "s3a://"):
        if uri.startswith(scheme):
            return uri[len(scheme) :]
    return uri


class IcebergStore:
    """TableStore over Iceberg tables in a catalog (see the module's docstring)."""

    def __init__(
        self,
        root: str,
        catalog_uri: str,
        storage: StorageSettings | None = None,
        catalog_name: str = "shoplake",
        *,
        rest_warehouse: str | None = None,
        rest_credential: str | None = None,
    ) -> None:
        # a local root is made absolute: the catalog keeps the paths it is given
        self._root = root.rstrip("/") if "://" in root else Path(root).resolve().as_posix()
        self._storage = storage or StorageSettings()
        self._catalog_uri = catalog_uri
        self._catalog_name = catalog_name
        self._rest = is_rest_catalog(catalog_uri)
        self._rest_warehouse = rest_warehouse
        self._rest_credential = rest_credential
        self._catalog: Catalog | None = None
        self._lock = threading.RLock()
        self._tables: dict[str, Table] = {}

    # -- catalog ------------------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        props = {"warehouse": self._root if "://" in self._root else f"file://{self._root}"}
        if self._rest:
            props |= {"type": "rest", "uri": self._catalog_uri}
            if self._rest_warehouse:
                props["warehouse"] = self._rest_warehouse
            if self._rest_credential:  # OAuth2 client credentials, exchanged for a token
                props["credential"] = self._rest_credential
                # the catalog's own token endpoint, which PyIceberg otherwise guesses
                props["oauth2-server-uri"] = rest_token_endpoint(self._catalog_uri)
        else:
            props |= {"type": "sql", "uri": self._catalog_uri, "init_catalog_tables": "true"}
        if on_object_storage(self._root):
            s = self._storage
            props["s3.region"] = s.region
            props["s3.force-virtual-addressing"] = "false" if s.path_style else "true"
            if s.endpoint:
                props["s3.endpoint"] = s.endpoint
            if s.access_key_id:
                props["s3.access-key-id"] = s.access_key_id
            if s.secret_access_key is not None:
                props["s3.secret-access-key"] = s.secret_access_key.get_secret_value()
            if s.session_token is not None:
                props["s3.session-token"] = s.session_token.get_secret_value()
        return props

    def _get_catalog(self) -> Catalog:
        if self._catalog is None:
            if self._catalog_uri.startswith("sqlite:///"):  # its folder must exist
                Path(self._catalog_uri[len("sqlite:///") :]).parent.mkdir(
                    parents=True, exist_ok=True
                )
            try:
                self._catalog = load_catalog(self._catalog_name, **self._properties())
            except Exception as exc:  # any driver's error: one line naming the catalog
                raise TableError(
                    f"cannot open the Iceberg catalog at {self._catalog_uri}: {_first_line(exc)}"
                ) from exc
        return self._catalog

    def location(self, spec: TableSpec) -> str:
        if self._rest:  # where the catalog placed it, once it exists
            with suppress(TableNotFound), self._lock, _translated(spec, "opening"):
                return str(self._loaded(spec).location())
        return f"{self._root}/{spec.layer}/{spec.name}"

    def close(self) -> None:
        with self._lock:
            self._tables.clear()

    def exists(self, spec: TableSpec) -> bool:
        with self._lock, _translated(spec, "looking for"):
            return spec.qualified in self._tables or bool(
                self._get_catalog().table_exists((spec.layer, spec.name))
            )

    def ensure(self, spec: TableSpec) -> None:
        if self.exists(spec):
            self._add_new_columns(spec)
            return
        catalog = self._get_catalog()
        with self._lock, _translated(spec, "creating"):
            with suppress(NamespaceAlreadyExistsError):
                catalog.create_namespace(spec.layer)
            try:  # the table and its partitioning in one commit
                with catalog.create_table_transaction(
                    (spec.layer, spec.name),
                    schema=spec.schema,
                    location=None if self._rest else self.location(spec),
                    properties={
                        "comment": spec.description,
                        # PyIceberg would retry a failed commit itself, with the snapshot
                        # properties (positions) computed before the race: _commit retries
                        "commit.retry.num-retries": "0",
                    },
                ) as creating:
                    if spec.partition_by:
                        # bronze by ingest date and event type, silver by event date (seed 004)
                        with creating.update_spec() as update:
                            for column in spec.partition_by:
                                update.add_identity(column)
            except TableAlreadyExistsError:
                return  # another process created it first: fine

    def _add_new_columns(self, spec: TableSpec) -> None:
        with self._lock, _translated(spec, "adding columns to"):
            table = self._loaded(spec)
            missing = columns_to_add(spec, (f.name for f in table.schema().fields))
            if missing:
                with table.update_schema() as update:
                    update.union_by_name(pa.schema(missing))

    def _loaded(self, spec: TableSpec) -> Table:
        """The held table, brought up to date from the catalog."""
        table = self._tables.get(spec.qualified)
        if table is None:
            table = self._get_catalog().load_table((spec.layer, spec.name))
            self._tables[spec.qualified] = table
        else:
            table.refresh()
        return table

    def _handle(self, table: Table, spec: TableSpec, snapshot: Snapshot | None) -> IcebergHandle:
        return IcebergHandle(table, spec, snapshot, self._storage, self._catalog_name)

    def open(self, spec: TableSpec) -> IcebergHandle:
        with self._lock, _translated(spec, "opening"):
            table = self._loaded(spec)
            return self._handle(table, spec, table.current_snapshot())

    def _snapshots(self, table: Table) -> list[Snapshot]:
        """The snapshots of the current branch, oldest first."""
        chain = []
        snapshot = table.current_snapshot()
        while snapshot is not None:
            chain.append(snapshot)
            parent = snapshot.parent_snapshot_id
            snapshot = None if parent is None else table.snapshot_by_id(parent)
        return chain[::-1]

    def open_as_of(self, spec: TableSpec, when: int | datetime) -> IcebergHandle:
        with self._lock, _translated(spec, f"opening {spec.qualified} as of {when}:"):
            table = self._get_catalog().load_table((spec.layer, spec.name))
            snapshots = self._snapshots(table)
            if isinstance(when, datetime):
                cutoff = when.timestamp() * 1000
                earlier = [s for s in snapshots if s.timestamp_ms <= cutoff]
                if not earlier:
                    raise TableError(
                        f"{spec.qualified} has no version as of {when.isoformat()}: "
                        "its first commit is later"
                    )
                return self._handle(table, spec, earlier[-1])
            if when == 0:
                return self._handle(table, spec, None)
            found = [s for s in snapshots if s.sequence_number == when]
            if not found:
                raise TableError(f"{spec.qualified} has no version {when} (see its history)")
            return self._handle(table, spec, found[0])

    # -- writes -------------------------------------------------------------------------

    def _commit(
        self,
        spec: TableSpec,
        action: str,
        positions: Mapping[str, int] | None,
        write: Callable[[Transaction, dict[str, str], IcebergHandle], None],
        *,
        redo_on_conflict: bool = False,
        expected: Mapping[str, int] | None = None,
    ) -> int:
        """One commit: ``write`` stages its changes in a transaction, with the snapshot
        properties that carry the positions forward, reading what it needs from the
        snapshot the transaction starts from (the handle it is given). Returns the new
        version. ``redo_on_conflict``: the changes depend on nothing but that snapshot
        (an append, a compaction), so a commit that lost a race is redone on the new one,
        unless a position it records moved meanwhile. ``expected``: see ``fence``."""
        mine = dict(positions or {})
        with self._lock, _translated(spec, action):
            table = self._loaded(spec)
            for attempt in range(_REDO_ATTEMPTS):
                before = _positions_of(table, table.current_snapshot())
                if expected:
                    fence(spec, before, expected)
                properties = {
                    POSITIONS: json.dumps(before | mine, sort_keys=True),
                    COMMIT_POSITIONS: json.dumps(mine, sort_keys=True),
                }
                transaction = table.transaction()
                with warnings.catch_warnings():  # "Delete operation did not match any records"
                    warnings.simplefilter("ignore", UserWarning)
                    write(
                        transaction, properties, self._handle(table, spec, table.current_snapshot())
                    )
                try:
                    transaction.commit_transaction()
                    break
                except CommitFailedException:
                    table.refresh()
                    moved = _positions_of(table, table.current_snapshot())
                    stale = any(moved.get(a) != before.get(a) for a in mine)
                    if not redo_on_conflict or stale or attempt == _REDO_ATTEMPTS - 1:
                        raise
            table.refresh()
            snapshot = table.current_snapshot()
            return 0 if snapshot is None else int(snapshot.sequence_number or 0)

    def append(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None = None,
        *,
        expected: Mapping[str, int] | None = None,
    ) -> int:
        rows = _conform(spec, data)
        return self._commit(
            spec,
            "appending to",
            positions,
            lambda tx, props, _: tx.append(rows, snapshot_properties=props),
            redo_on_conflict=True,
            expected=expected,
        )

    def upsert(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None = None,
        delete_when: Predicate | None = None,
        located: Located | None = None,  # not used: this store merges by key (copy-on-write)
        *,
        expected: Mapping[str, int] | None = None,
    ) -> None:
        if data.num_rows == 0:
            self.append(spec, spec.schema.empty_table(), positions, expected=expected)
            return
        if not spec.key:
            raise TableError(f"{spec.qualified} has no key to merge on")
        source = _conform(spec, data)
        inserted = source
        if delete_when is not None:  # those rows delete their key and are not inserted
            inserted = source.filter(~arrow_filter(spec, delete_when))
        # Copy-on-write by key: the files holding any row whose key columns each take one
        # of the source's values are rewritten without the rows the source replaces.
        candidates: Predicate = AllOf(
            tuple(IsIn(k, pc.unique(source[k]).drop_null()) for k in spec.key)
        )
        keys = source.select(list(spec.key)).group_by(list(spec.key)).aggregate([])

        def write(tx: Transaction, props: dict[str, str], current: IcebergHandle) -> None:
            held = current.scan(where=candidates)
            kept = held.join(keys, list(spec.key), join_type="left anti")
            kept = kept.select(spec.schema.names).cast(spec.schema)
            if held.num_rows:  # the rows go in the next snapshot, with the new positions
                unchanged = {POSITIONS: json.dumps(current.positions_all(), sort_keys=True)}
                tx.delete(_expression(candidates), snapshot_properties=unchanged)
            tx.append(pa.concat_tables([kept, inserted]), snapshot_properties=props)

        self._commit(spec, "merging into", positions, write, expected=expected)

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
        rows = _conform(spec, data)
        where = _expression(IsIn(column, list(values)))
        self._commit(
            spec,
            "replacing partitions of",
            positions,
            lambda tx, props, _: tx.overwrite(
                rows, overwrite_filter=where, snapshot_properties=props
            ),
            expected=expected,
        )

    # -- history, restore, maintenance --------------------------------------------------

    def history(self, spec: TableSpec, limit: int | None = None) -> list[Commit]:
        with self._lock, _translated(spec, "reading history of"):
            table = self._loaded(spec)
            commits = [_commit_of(s) for s in reversed(self._snapshots(table))]
        return commits if limit is None else commits[:limit]

    def restore(self, spec: TableSpec, when: int | datetime) -> Commit:
        try:
            target = self.open_as_of(spec, when)
        except TableError as exc:
            raise TableError(
                f"cannot restore {spec.qualified} to {when}: {exc} (snapshots older than "
                "SHOPLAKE_PIPELINE__VACUUM_RETENTION_HOURS are expired when vacuumed)"
            ) from exc
        current = self.open(spec).version
        if target.version == current:
            raise TableError(f"{spec.qualified} is at version {current} already")
        positions = rewound_positions(self.history(spec), target)
        try:
            rows = target.scan()
        except TableError as exc:
            raise TableError(
                f"cannot restore {spec.qualified} to version {target.version}: its files were "
                f"vacuumed ({exc})"
            ) from exc
        self._commit(
            spec,
            "restoring",
            positions,
            lambda tx, props, _: tx.overwrite(rows, snapshot_properties=props),
        )
        return self.history(spec, 1)[0]

    def _files_by_partition(self, table: Table) -> dict[tuple[Any, ...], list[Any]]:
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for task in table.scan().plan_files():
            record = task.file.partition
            partition = tuple(record[i] for i in range(len(record))) if record else ()
            groups.setdefault(partition, []).append(task.file)
        return groups

    def excess_files(self, spec: TableSpec) -> int:
        with self._lock, _translated(spec, "listing files of"):
            table = self._loaded(spec)
            if table.current_snapshot() is None:
                return 0
            groups = self._files_by_partition(table)
            return max(0, sum(len(f) for f in groups.values()) - max(1, len(groups)))

    def compact(self, spec: TableSpec) -> dict[str, Any]:
        """Each partition holding more than one data file is rewritten as one, in one
        commit per partition that changes no row and carries the positions forward."""
        rewritten: list[int] = []  # the files each partition's (last) rewrite replaced
        with self._lock, _translated(spec, "compacting"):
            table = self._loaded(spec)
            if table.current_snapshot() is None:
                return {"numFilesRemoved": 0, "numFilesAdded": 0}
            groups = self._files_by_partition(table)
        names = list(spec.partition_by)
        for partition, files in groups.items():
            if len(files) < 2:
                continue
            where: Predicate | None = (
                AllOf(
                    tuple(
                        IsIn(n, [_partition_value(spec, n, v)])
                        for n, v in zip(names, partition, strict=True)
                    )
                )
                if names
                else None
            )

            replaced: list[int] = []  # files in the partition, at each attempt

            def rewrite(
                tx: Transaction, props: dict[str, str], current: IcebergHandle,
                where: Predicate | None = where, replaced: list[int] = replaced,
            ) -> None:  # fmt: skip
                replaced.append(sum(1 for _ in current._scan(None, where).plan_files()))
                rows = current.scan(where=where)
                tx.overwrite(rows, overwrite_filter=_expression(where), snapshot_properties=props)

            # a live pipeline's commits land meanwhile: the partition is read again
            self._commit(spec, "compacting", None, rewrite, redo_on_conflict=True)
            rewritten.append(replaced[-1])
        return {"numFilesRemoved": sum(rewritten), "numFilesAdded": len(rewritten)}

    def vacuum(self, spec: TableSpec, retention_hours: float) -> list[str]:
        """Expire the snapshots older than the retention (but the current one), then
        delete the files under the table's data/ and metadata/ that no remaining snapshot
        or metadata refers to and that are older than the retention (orphans, such as
        those of a writer that died before its commit)."""
        cutoff = datetime.now(UTC) - timedelta(hours=retention_hours)
        with self._lock, _translated(spec, "vacuuming"):
            table = self._loaded(spec)
            current = table.current_snapshot()
            old = [
                s.snapshot_id
                for s in table.snapshots()
                if current is not None
                and s.snapshot_id != current.snapshot_id
                and s.timestamp_ms < cutoff.timestamp() * 1000
            ]
            if old:
                table.maintenance.expire_snapshots().by_ids(old).commit()
                table.refresh()
            return self._remove_orphans(table, cutoff)

    def _remove_orphans(self, table: Table, cutoff: datetime) -> list[str]:
        referenced: set[str] = set()
        io = table.io
        for snapshot in table.snapshots():
            referenced.add(_path_in(snapshot.manifest_list))
            for manifest in snapshot.manifests(io):
                referenced.add(_path_in(manifest.manifest_path))
                for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                    referenced.add(_path_in(entry.data_file.file_path))
        referenced.add(_path_in(table.metadata_location))
        referenced.update(_path_in(m.metadata_file) for m in table.metadata.metadata_log)
        fs, root = arrow_filesystem(table.location(), self._storage)
        removed = []
        from pyarrow.fs import FileSelector, FileType

        for folder in ("data", "metadata"):
            selector = FileSelector(f"{root}/{folder}", recursive=True, allow_not_found=True)
            for info in fs.get_file_info(selector):
                if info.type != FileType.File or info.path in referenced:
                    continue
                if info.mtime is not None and info.mtime.astimezone(UTC) > cutoff:
                    continue  # maybe a commit in flight: too young to be an orphan
                fs.delete_file(info.path)
                removed.append(info.path)
        return removed


def _partition_value(spec: TableSpec, column: str, value: Any) -> Any:
    """An identity partition's value as Iceberg keeps it (a date as days since the
    epoch) in the column's own type."""
    if pa.types.is_date32(spec.schema.field(column).type) and isinstance(value, int):
        return date(1970, 1, 1) + timedelta(days=value)
    return value


def _commit_of(snapshot: Snapshot) -> Commit:
    summary = snapshot.summary
    props = summary.additional_properties if summary is not None else {}

    def number(key: str) -> int | None:
        value = props.get(key)
        return None if value is None else int(value)

    return Commit(
        version=int(snapshot.sequence_number or 0),
        timestamp=datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC),
        operation=str(summary.operation.value).upper() if summary is not None else "",
        rows_added=number("added-records") or 0,
        rows_removed=number("deleted-records"),
        positions=_recorded(snapshot, COMMIT_POSITIONS) or {},
    )
