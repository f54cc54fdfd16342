"""DuckDB engine: runs the SQL models over Arrow data in process.

The only module that imports ``duckdb``. Everything engine-specific — JSON parsing,
validation of raw events — lives here; the gold models in ``pipeline/models`` are
plain SQL that Spark can run too.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from shoplake.engines import duckdb_silver
from shoplake.engines.base import (
    Capabilities,
    HeldQuery,
    ParsedEvents,
    RawEventRules,
    registered,
)
from shoplake.errors import ConfigError, QueryError
from shoplake.process_dirs import remove_orphans

if TYPE_CHECKING:
    from shoplake.engines.base import Input
    from shoplake.settings import Settings


@contextmanager
def _interrupts_stay_interrupts(memory_limit: str | None) -> Iterator[None]:
    """Ctrl-C during a query is a KeyboardInterrupt, whichever way DuckDB reports it
    (``interrupt()`` raises InterruptException; a SIGINT it caught itself, a RuntimeError),
    so callers stop cleanly instead of printing a traceback or mistaking it for bad SQL.
    A query that needs more than the memory limit (what it cannot spill) is a ConfigError
    that names the setting."""
    try:
        yield
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except duckdb.OutOfMemoryException as exc:
        limit = f"engine.duckdb_memory_limit {memory_limit}" if memory_limit else "memory"
        raise ConfigError(
            f"DuckDB ran out of its {limit}: raise SHOPLAKE_ENGINE__DUCKDB_MEMORY_LIMIT "
            f"({str(exc).splitlines()[0]})"
        ) from exc
    except RuntimeError as exc:
        if str(exc).strip() == "Query interrupted":
            raise KeyboardInterrupt from None
        raise


_instances = itertools.count()
_SPILL_PREFIX = "shoplake-duckdb-"


class DuckDB:
    """One in-process DuckDB database and connection with UTC as its time zone. Past
    ``memory_limit`` (None: DuckDB's default, 80% of RAM) it spills the tables it holds
    and its queries' intermediates to a directory of its own in the system's temporary
    one, which DuckDB removes on close."""

    name = "duckdb"
    capabilities = Capabilities(in_process=True, validates_raw_events=True, holds_tables=True)

    def __init__(self, threads: int | None = None, memory_limit: str | None = None) -> None:
        self._threads = threads
        self._memory_limit = memory_limit
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        spill = f"{_SPILL_PREFIX}{os.getpid()}-{next(_instances)}"  # not DuckDB's ./.tmp
        tmp = tempfile.gettempdir()
        remove_orphans(Path(tmp), _SPILL_PREFIX)  # spilled by a process that was killed
        self.con.execute("SET temp_directory = $dir", {"dir": os.path.join(tmp, spill)})
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            try:
                self.con.execute("SET memory_limit = $limit", {"limit": memory_limit})
            except duckdb.Error as exc:
                raise ConfigError(f"engine.duckdb_memory_limit {memory_limit!r}: {exc}") from exc
        self._views: set[str] = set()  # names registered as views over held tables

    def define_local_date(self, timezone: str) -> None:
        """``local_date(ts)``: the calendar day of a UTC timestamp in ``timezone``, the
        one function the SQL models use that each engine defines its own way."""
        zone = timezone.replace("'", "''")
        self.con.execute(
            f"CREATE OR REPLACE MACRO local_date(ts) AS CAST(timezone('{zone}', ts) AS DATE)"
        )

    def register(self, name: str, data: Input) -> None:
        """Expose an Arrow table or dataset, the union of a list of tables, or a query
        over tables the connection holds, as a view called ``name``."""
        if isinstance(data, HeldQuery):
            self.con.execute(f'CREATE OR REPLACE TEMP VIEW "{name}" AS {data.sql}')
            self._views.add(name)
            return
        if isinstance(data, list | tuple):
            data = pa.concat_tables(data, promote_options="permissive")
        self.con.register(name, data)

    def unregister(self, name: str) -> None:
        if name in self._views:
            self._views.discard(name)
            self.con.execute(f'DROP VIEW IF EXISTS "{name}"')
        else:
            self.con.unregister(name)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with _interrupts_stay_interrupts(self._memory_limit):
            self.con.execute(sql, dict(params) if params else None)

    def table(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query and return its result as an Arrow table."""
        with _interrupts_stay_interrupts(self._memory_limit):
            return self.con.sql(sql, params=dict(params) if params else None).to_arrow_table()

    def table_over(
        self, sql: str, inputs: Mapping[str, Input], params: Mapping[str, Any] | None = None
    ) -> pa.Table:
        """Run ``sql`` with each of ``inputs`` (Arrow data) visible under its name, then
        release them again."""
        with registered(self, inputs):
            return self.table(sql, params)

    def parse_raw_events(
        self,
        batch: pa.Table,
        high_water: pa.Table,
        rules: RawEventRules,
        tables: Collection[str],
        now: datetime,
    ) -> ParsedEvents:
        """Silver rows of a bronze batch (see Engine.parse_raw_events)."""
        return duckdb_silver.parse_raw_events(self, batch, high_water, rules, tables, now)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """A user's query (``$name`` placeholders bound from ``params``): DuckDB errors
        become QueryError with DuckDB's own message; an interrupted query (Ctrl-C) stays an
        interrupt, so no caller mistakes it for bad SQL."""
        try:
            return self.table(sql, params)
        except duckdb.Error as exc:
            raise QueryError(str(exc).strip()) from exc

    def sibling(self) -> DuckDB:
        """A database and connection of its own (views, macros and tables are per
        connection), with the same limits."""
        return DuckDB(self._threads, self._memory_limit)

    def stream_bronze(self, settings: Settings, *, until_idle: bool, stop: Event) -> int:
        raise ConfigError(
            "the DuckDB engine does not stream Kafka: bronze is the Python worker's "
            "(shoplake run --job ingestion)"
        )

    def close(self) -> None:
        self.con.close()
