"""The TableStore port: what the pipeline needs from a table format.

Every write may carry *positions* — ``{app_id: next_offset}`` — committed atomically
with the rows (Delta ``app_transactions``, Iceberg snapshot properties). A layer reads
its progress back from its own table, so restarts, replays and compactions are harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.dataset as pads

from shoplake.contract.tables import TableSpec


class TableHandle(Protocol):
    """One consistent snapshot of a table: its rows and positions agree."""

    @property
    def version(self) -> int: ...

    def positions(self, app_ids: Iterable[str]) -> dict[str, int]:
        """Recorded next offset per app id (ids never recorded are left out)."""
        ...

    def dataset(self) -> pads.Dataset:
        """The snapshot as an Arrow dataset (filters prune files by partition and stats)."""
        ...

    def count(self) -> int: ...


class TableStore(Protocol):
    """Creates, writes, reads and maintains tables described by a TableSpec."""

    def exists(self, spec: TableSpec) -> bool: ...

    def ensure(self, spec: TableSpec) -> None:
        """Create the table from its spec if it does not exist."""
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
    ) -> int:
        """Append rows and record positions in the same commit (an empty table records
        only); returns the version of that commit."""
        ...

    def upsert(
        self,
        spec: TableSpec,
        data: pa.Table,
        positions: Mapping[str, int] | None = None,
        delete_when: str | None = None,
    ) -> None:
        """Merge on the spec's key: update matches, insert the rest; rows for which the
        SQL predicate ``delete_when`` (over source columns, alias ``s``) holds are deleted
        from the target instead, and not inserted."""
        ...

    def replace(
        self,
        spec: TableSpec,
        data: pa.Table,
        column: str,
        values: Sequence[object],
        positions: Mapping[str, int] | None = None,
    ) -> None:
        """Atomically replace every row whose ``column`` is in ``values`` by ``data``
        (Delta replaceWhere), recording positions in the same commit."""
        ...

    def history(self, spec: TableSpec, limit: int | None = None) -> list[dict[str, Any]]: ...

    def compact(self, spec: TableSpec) -> dict[str, Any]: ...

    def excess_files(self, spec: TableSpec) -> int:
        """Data files beyond one per partition: what compaction would merge."""
        ...

    def vacuum(self, spec: TableSpec, retention_hours: float) -> list[str]: ...

    def location(self, spec: TableSpec) -> str: ...

    def close(self) -> None:
        """Release held resources; the store may be used again afterwards."""
        ...
