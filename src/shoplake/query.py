"""Reading the lakehouse: every table addressable as ``layer.table`` in DuckDB SQL, and
under the seed systems' names (``seed_names``); SQL written for Spark or Trino is
transpiled with sqlglot."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa

from shoplake.contract.tables import ALL_TABLES, TableSpec
from shoplake.engines.duckdb import DuckDB
from shoplake.errors import QueryError
from shoplake.pipeline.gold import rates_table
from shoplake.seed_names import CATALOGS, SeedView, seed_views
from shoplake.settings import Settings
from shoplake.tables import TableStore, open_store
from shoplake.tables.base import TableHandle

# auto: DuckDB's SQL, and what DuckDB cannot parse is read as Spark SQL (the seeds' SQL
# is Spark's or Trino's; what they print parses either way).
Dialect = Literal["auto", "duckdb", "spark", "trino"]
DIALECTS: tuple[Dialect, ...] = ("auto", "duckdb", "spark", "trino")

_SHOW_TABLES = re.compile(
    r"^\s*SHOW\s+TABLES(?:\s+(?:IN|FROM)\s+([\w.`\"]+))?(?:\s+(?:LIKE\s+)?'([^']*)')?\s*;?\s*$",
    re.IGNORECASE,
)


def _mentions(text: str, name: str) -> bool:
    return name in text and re.search(rf"(?<![\w.]){re.escape(name)}\b", text) is not None


def _named_tables(sql: str, views: Mapping[str, SeedView]) -> tuple[set[str], list[SeedView]]:
    """The shoplake tables the SQL text needs, and the seed views it names."""
    text = sql.lower()
    named = [view for name, view in views.items() if _mentions(text, name)]
    tables = {spec.qualified for spec in ALL_TABLES if _mentions(text, spec.qualified)}
    for view in named:
        tables |= view.reads
    return tables, named


def transpile(sql: str, dialect: Dialect) -> str:
    """``sql`` in DuckDB's dialect: as it is for duckdb, through sqlglot from Spark or
    Trino. One statement at a time."""
    if dialect in ("auto", "duckdb"):
        return sql
    import sqlglot
    from sqlglot.errors import SqlglotError

    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except SqlglotError as exc:
        raise QueryError(f"not valid {dialect} SQL: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise QueryError(f"one SQL statement at a time (got {len(statements)})")
    return statements[0].sql("duckdb")


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
        dialect: Dialect = "duckdb",
    ) -> pa.Table:
        """Run SQL over the latest snapshot of every table, or each table as of a version
        or a time (time travel). Only the tables the SQL names are loaded; the seeds'
        names are views over them (``seed_names``), and Spark's ``SHOW TABLES [IN x]``
        lists them. ``dialect`` is the SQL's (see ``Dialect``); ``params`` binds the SQL's
        ``$name`` placeholders (values never become SQL text); ``snapshots`` ({qualified
        name: handle}) pins tables to snapshots already open."""
        show = _SHOW_TABLES.match(sql)
        if show:
            return self.show_tables(show.group(1), show.group(2))
        duck_sql = transpile(sql, dialect)
        try:
            return self._run(duck_sql, as_of, params, snapshots)
        except QueryError as exc:
            if dialect != "auto" or not str(exc).startswith("Parser Error"):
                raise
            try:
                return self._run(transpile(sql, "spark"), as_of, params, snapshots)
            except QueryError:
                raise exc from None  # DuckDB's own message: the SQL was meant for it

    def _run(
        self,
        sql: str,
        as_of: int | datetime | None,
        params: Mapping[str, Any] | None,
        snapshots: Mapping[str, TableHandle] | None,
    ) -> pa.Table:
        engine = DuckDB()
        try:
            specs = self.existing()
            for layer in sorted({s.layer for s in ALL_TABLES}):
                engine.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
            views = seed_views(self.settings.topics)
            named, seed_named = _named_tables(sql, views)
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
            if seed_named:
                self._create_seed_views(engine, seed_named, present)
            try:
                return engine.query(sql, params)
            except QueryError as exc:
                missing = re.search(r'Table with name "?([\w.]+?)"? does not exist', str(exc))
                if missing:
                    raise QueryError(_unknown_table(sql, missing.group(1), present)) from exc
                raise
        finally:
            engine.close()

    def _create_seed_views(self, engine: DuckDB, named: list[SeedView], present: set[str]) -> None:
        engine.define_local_date(self.settings.reporting.timezone)
        engine.register("seed_rates", rates_table(self.settings.reporting))
        attached: set[str] = set()
        for view in named:
            absent = sorted(view.reads - present)
            if absent:
                raise QueryError(
                    f"{view.name} reads {', '.join(absent)}, which "
                    f"{'does' if len(absent) == 1 else 'do'} not exist yet: run the pipeline "
                    "first (`shoplake run`)"
                )
            catalog = view.name.split(".")[0]
            if catalog in CATALOGS and view.name.count(".") == 2 and catalog not in attached:
                engine.execute(f"ATTACH ':memory:' AS {catalog}")
                attached.add(catalog)
            engine.execute(f"CREATE SCHEMA IF NOT EXISTS {view.schema}")
            engine.execute(f"CREATE VIEW {view.name} AS {view.sql}")

    def show_tables(self, namespace: str | None = None, like: str | None = None) -> pa.Table:
        """Spark's ``SHOW TABLES [IN namespace] [LIKE pattern]``: namespace, tableName,
        isTemporary, and the shoplake table each name reads. Without a namespace, shoplake's
        own tables; in a seed's namespace (``iceberg.silver``, ``local``), the seed's names
        whose tables exist."""
        present = {s.qualified for s in self.existing()}
        wanted = (namespace or "").strip('`"').lower()
        names: list[tuple[str, str, str]] = []  # (namespace, table, maps to)
        if not wanted or wanted in {s.layer for s in ALL_TABLES}:
            names = [
                (s.layer, s.name, s.qualified)
                for s in ALL_TABLES
                if s.qualified in present and (not wanted or s.layer == wanted)
            ]
            if wanted:  # the seeds' names in this layer too
                names += [
                    (wanted, v.name.split(".")[-1], v.maps_to)
                    for v in seed_views(self.settings.topics).values()
                    if v.schema == wanted and v.reads <= present
                ]
        else:
            names = [
                (v.schema, v.name.split(".")[-1], v.maps_to)
                for v in seed_views(self.settings.topics).values()
                if v.schema == wanted and v.reads <= present
            ]
            if not names and wanted not in _known_namespaces(self.settings):
                raise QueryError(
                    f"unknown namespace {namespace}; namespaces: "
                    + ", ".join(sorted(_known_namespaces(self.settings)))
                )
        if like:
            pattern = re.compile(
                "|".join(re.escape(p).replace(r"\*", ".*") for p in like.split("|")), re.I
            )
            names = [n for n in names if pattern.fullmatch(n[1])]
        names.sort()
        return pa.table(
            {
                "namespace": [n[0] for n in names],
                "tableName": [n[1] for n in names],
                "isTemporary": [False] * len(names),
                "shoplake_table": [n[2] for n in names],
            }
        )


def _known_namespaces(settings: Settings) -> set[str]:
    return {s.layer for s in ALL_TABLES} | {v.schema for v in seed_views(settings.topics).values()}


def _unknown_table(sql: str, name: str, present: set[str]) -> str:
    qualified = re.search(rf"\b((?:\w+\.)*{re.escape(name)})\b", sql, re.IGNORECASE)
    known = ", ".join(sorted(present)) or "none yet — run the pipeline first"
    return f"unknown table {qualified.group(1) if qualified else name}; tables: {known}"
