"""Delta Lake adapter (delta-rs). The only module that imports ``deltalake``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from shoplake.contract.tables import TableSpec
from shoplake.errors import CommitConflict, TableError, TableNotFound

T = TypeVar("T")


@contextmanager
def _translated(spec: TableSpec, action: str) -> Iterator[None]:
    """Library errors become shoplake errors at this edge."""
    try:
        yield
    except TableNotFoundError as exc:
        raise TableNotFound(f"table {spec.qualified} does not exist yet") from exc
    except CommitFailedError as exc:
        raise CommitConflict(f"{action} {spec.qualified}: concurrent commit ({exc})") from exc
    except (DeltaError, OSError) as exc:
        raise TableError(f"{action} {spec.qualified} failed: {exc}") from exc


def _commit(positions: Mapping[str, int] | None) -> CommitProperties | None:
    if not positions:
        return None
    return CommitProperties(
        app_transactions=[Transaction(app_id, int(v)) for app_id, v in positions.items()]
    )


class DeltaHandle:
    """A loaded Delta snapshot."""

    def __init__(self, table: DeltaTable, spec: TableSpec) -> None:
        self._table = table
        self._spec = spec

    @property
    def version(self) -> int:
        return int(self._table.version())

    def positions(self, app_ids: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for app_id in app_ids:
            v = self._table.transaction_version(app_id)
            if v is not None:
                out[app_id] = int(v)
        return out

    def dataset(self) -> pads.Dataset:
        with _translated(self._spec, "reading"):
            return self._table.to_pyarrow_dataset()

    def count(self) -> int:
        with _translated(self._spec, "counting"):
            return int(self._table.count())


class DeltaStore:
    """TableStore over Delta tables at ``ROOT/layer/name``."""

    def __init__(self, root: str) -> None:
        self._root = root.rstrip("/")

    def location(self, spec: TableSpec) -> str:
        return f"{self._root}/{spec.layer}/{spec.name}"

    def exists(self, spec: TableSpec) -> bool:
        return bool(DeltaTable.is_deltatable(self.location(spec)))

    def ensure(self, spec: TableSpec) -> None:
        if self.exists(spec):
            return
        uri = self.location(spec)
        if "://" not in uri:
            try:
                Path(uri).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TableError(f"cannot create {uri}: {exc.strerror}") from exc
        with _translated(spec, "creating"):
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

    def open(self, spec: TableSpec) -> DeltaHandle:
        with _translated(spec, "opening"):
            return DeltaHandle(DeltaTable(self.location(spec)), spec)

    def open_as_of(self, spec: TableSpec, version: int) -> DeltaHandle:
        with _translated(spec, f"opening version {version} of"):
            return DeltaHandle(DeltaTable(self.location(spec), version=version), spec)

    def append(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None = None,
    ) -> None:
        with _translated(spec, "appending to"):
            write_deltalake(
                self.location(spec),
                data.select(spec.schema.names).cast(spec.schema),
                mode="append",
                partition_by=list(spec.partition_by) or None,
                commit_properties=_commit(positions),
            )

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
        with _translated(spec, "merging into"):
            merger = DeltaTable(self.location(spec)).merge(
                data.select(spec.schema.names).cast(spec.schema),
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
        changed = sum(
            int(metrics.get(f"num_target_rows_{kind}", 0))
            for kind in ("inserted", "updated", "deleted")
        )
        if positions and changed == 0:
            # delta-rs makes no commit for a merge that changes nothing; record positions anyway.
            self.append(spec, spec.schema.empty_table(), positions)

    def history(self, spec: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
        return self._with_table(spec, "reading history of", lambda t: t.history(limit))

    def compact(self, spec: TableSpec) -> dict[str, Any]:
        return self._with_table(spec, "compacting", lambda t: t.optimize.compact())

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
        with _translated(spec, action):
            return fn(DeltaTable(self.location(spec)))
