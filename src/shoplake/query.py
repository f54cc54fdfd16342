"""Reading the lakehouse: every table addressable as ``layer.table`` in DuckDB SQL."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from shoplake.contract.tables import ALL_TABLES, TableSpec
from shoplake.engines.duckdb import DuckDB
from shoplake.errors import QueryError
from shoplake.settings import Settings
from shoplake.tables import TableStore, open_store
from shoplake.tables.base import TableHandle

# Seed projects' names for the same tables (DESIGN.md), accepted in queries.
ALIASES: dict[str, str] = {
    "silver.orders_clean": "silver.orders",
    "silver.purchases": "silver.orders",
    "silver.payments_clean": "silver.payments",
    "silver.order_payments_enriched": "silver.order_payments",
    "gold.items_category_performance": "gold.category_performance",
    "gold.silver_data_quality_report": "gold.data_quality_report",
}


def _named_tables(sql: str) -> set[str]:
    """The shoplake tables (aliases resolved) that the SQL text mentions."""
    text = sql.lower()
    names = {
        spec.qualified
        for spec in ALL_TABLES
        if re.search(rf"\b{re.escape(spec.qualified)}\b", text)
    }
    names |= {
        target for alias, target in ALIASES.items() if re.search(rf"\b{re.escape(alias)}\b", text)
    }
    return names


@dataclass(frozen=True)
class TableInfo:
    name: str
    rows: int
    version: int
    location: str
    description: str


class Lakehouse:
    """Queries and lists the tables of one shoplake home."""

    def __init__(self, settings: Settings, store: TableStore | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings)

    def existing(self) -> list[TableSpec]:
        return [spec for spec in ALL_TABLES if self.store.exists(spec)]

    def tables(self) -> list[TableInfo]:
        out = []
        for spec in self.existing():
            handle = self.store.open(spec)
            out.append(
                TableInfo(
                    spec.qualified,
                    handle.count(),
                    handle.version,
                    self.store.location(spec),
                    spec.description,
                )
            )
        return out

    def commit_ages(self) -> dict[str, float | None]:
        """Seconds since the newest commit of each layer (None: no table of it yet)."""
        now = datetime.now(UTC).timestamp()
        newest: dict[str, float | None] = dict.fromkeys((s.layer for s in ALL_TABLES), None)
        for spec in self.existing():
            history = self.store.history(spec, 1)
            if history:
                seconds = max(0.0, now - history[0].timestamp.timestamp())
                current = newest[spec.layer]
                newest[spec.layer] = seconds if current is None else min(current, seconds)
        return newest

    def query(
        self,
        sql: str,
        *,
        as_of: int | datetime | None = None,
        params: Mapping[str, Any] | None = None,
        snapshots: Mapping[str, TableHandle] | None = None,
    ) -> pa.Table:
        """Run DuckDB SQL over the latest snapshot of every table, or each table as of a
        version or a time (time travel). Only the tables the SQL names are loaded.
        ``params`` binds the SQL's ``$name`` placeholders (values never become SQL text);
        ``snapshots`` ({qualified name: handle}) pins tables to snapshots already open."""
        engine = DuckDB()
        try:
            specs = self.existing()
            for layer in sorted({s.layer for s in ALL_TABLES}):
                engine.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
            named = _named_tables(sql)
            for spec in specs:
                if spec.qualified not in named:
                    continue
                pinned = (snapshots or {}).get(spec.qualified)
                if pinned is not None:
                    handle = pinned
                elif as_of is None:
                    handle = self.store.open(spec)
                else:
                    handle = self.store.open_as_of(spec, as_of)
                engine.register(f"__{spec.layer}_{spec.name}", handle.dataset())
                engine.execute(
                    f"CREATE VIEW {spec.qualified} AS SELECT * FROM __{spec.layer}_{spec.name}"
                )
            present = {s.qualified for s in specs}
            for alias, target in ALIASES.items():
                if target in present and target in named:
                    engine.execute(f"CREATE VIEW {alias} AS SELECT * FROM {target}")
            try:
                return engine.query(sql, params)
            except QueryError as exc:
                missing = re.search(r"Table with name (\w+) does not exist", str(exc))
                if missing:
                    name = missing.group(1)
                    qualified = re.search(rf"\b(\w+\.{name})\b", sql)
                    known = ", ".join(sorted(present)) or "none yet — run the pipeline first"
                    raise QueryError(
                        f"unknown table {qualified.group(1) if qualified else name}; "
                        f"tables: {known}"
                    ) from exc
                raise
        finally:
            engine.close()
