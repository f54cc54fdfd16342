"""The Engine port: what the pipeline needs from a compute engine.

The SQL models (``pipeline/models/*.sql``) are written once, in DuckDB's dialect; an
engine that speaks another dialect transpiles them (the Spark engine uses sqlglot). The
inputs of a model are Arrow tables or datasets under the names the SQL reads; its result
comes back as an Arrow table with the types DuckDB gives, whatever engine ran it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from threading import Event
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import pyarrow as pa

if TYPE_CHECKING:
    import pyarrow.dataset as pads

    from shoplake.settings import Settings
    from shoplake.tables.base import Predicate, TableHandle, TableScan

    # What a model's SQL reads under one name: rows, a scan an engine that reads tables
    # runs itself, or a query over tables an engine holds; a list of rows or scans is
    # their union (by column name).
    Part: TypeAlias = "pa.Table | pads.Dataset | TableScan | HeldQuery"
    Input: TypeAlias = Part | Sequence[Part]


@dataclass(frozen=True)
class HeldQuery:
    """Rows of a query over tables an engine with ``capabilities.holds_tables`` keeps
    itself (in its dialect): read where they are, no row passes this process."""

    sql: str


@dataclass(frozen=True)
class IcebergCatalog:
    """The Iceberg catalog the tables are in, for an engine that reads them itself."""

    name: str
    uri: str  # a SQLAlchemy URL (sqlite:///…, postgresql://…) or a REST catalog's http(s)://
    warehouse: str  # the lakehouse root, or a REST catalog's own warehouse
    credential: str | None = field(default=None, repr=False)  # a REST catalog's OAuth2 client


@dataclass(frozen=True)
class Capabilities:
    """Where engines differ, so callers ask instead of checking the engine's class."""

    in_process: bool  # runs inside this interpreter (no cluster, no JVM)
    validates_raw_events: bool  # compiles the contract's rules into its own SQL (silver)
    streams_bronze: bool = False  # ingests Kafka into bronze itself (stream_bronze)
    # reads a model's input tables itself, given a TableScan: no rows pass the driver
    reads_tables: bool = False
    # keeps tables of its own between queries (CREATE TABLE, DELETE, INSERT) that a
    # HeldQuery reads, within a memory limit past which it spills them to disk
    holds_tables: bool = False


@dataclass(frozen=True)
class RawEventRules:
    """How silver judges raw events: the contract's rules with the shop's currencies, and
    the late-data watermark."""

    currencies: tuple[str, ...]
    watermark_minutes: float


@dataclass
class ParsedEvents:
    """One batch of bronze rows turned into silver rows by an engine."""

    rows: dict[str, pa.Table]  # silver table name → its rows of the batch, in lineage order
    valid: pa.Table  # every valid event: event_id, event_type, event_ts, event_date, lineage
    high_water: pa.Table  # (topic, partition, max_ts): the newest valid event time in the batch


class Engine(Protocol):
    """Runs the SQL models over named inputs."""

    name: str
    capabilities: Capabilities

    def define_local_date(self, timezone: str) -> None:
        """Make ``local_date(ts)`` available to the models: the calendar day of a UTC
        timestamp in ``timezone`` (the reporting time zone)."""
        ...

    def register(self, name: str, data: Input) -> None:
        """Expose an Arrow table or dataset (or, with ``capabilities.reads_tables``, a
        TableScan; with ``capabilities.holds_tables``, a HeldQuery), or the union of a
        list of tables or scans, as a view called ``name`` until unregistered."""
        ...

    def unregister(self, name: str) -> None: ...

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement for its effect (a macro, a temporary table)."""
        ...

    def table(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query; ``params`` bind its ``$name`` placeholders."""
        ...

    def table_over(
        self, sql: str, inputs: Mapping[str, Input], params: Mapping[str, Any] | None = None
    ) -> pa.Table:
        """Run ``sql`` with each of ``inputs`` (see ``register``) visible under its name,
        then release them again."""
        ...

    def parse_raw_events(
        self,
        batch: pa.Table,
        high_water: pa.Table,
        rules: RawEventRules,
        tables: Collection[str],
        now: datetime,
    ) -> ParsedEvents:
        """Validate bronze rows ``batch`` (raw_value and lineage) against the contract and
        derive the typed rows of each silver table named in ``tables`` (quarantine gets a
        reason code per broken record, stamped ``now``). ``high_water`` (topic, partition,
        max_ts) holds the newest valid event time before the batch, for the late flag.
        Engines without ``capabilities.validates_raw_events`` raise ConfigError."""
        ...

    def sibling(self) -> Engine:
        """An engine for another thread: the same compute resources (DuckDB's process, the
        Spark application), its own views and settings, so two threads' models never see
        each other's inputs. Closing it leaves this one running."""
        ...

    def stream_bronze(self, settings: Settings, *, until_idle: bool, stop: Event) -> int:
        """Ingest the Kafka topics of ``settings`` into bronze exactly once, until ``stop``
        (or, with ``until_idle``, until what Kafka held at the start is in); the records
        written. Engines without ``capabilities.streams_bronze`` raise ConfigError."""
        ...

    def close(self) -> None: ...


def table_input(
    engine: Engine,
    handle: TableHandle,
    columns: Sequence[str] | None = None,
    where: Predicate | None = None,
) -> Part:
    """A table's rows as the input of a query on ``engine``: the scan itself for an
    engine that reads tables (Spark: no row passes this process), else the rows."""
    if engine.capabilities.reads_tables:
        return handle.described_scan(columns, where)
    return handle.scan(columns, where)


@contextmanager
def registered(engine: Engine, inputs: Mapping[str, Input]) -> Iterator[None]:
    """Each of ``inputs`` visible on ``engine`` under its name (see ``Engine.register``)
    for the block, released after it however it ends."""
    done: list[str] = []
    try:
        for name, data in inputs.items():
            engine.register(name, data)
            done.append(name)
        yield
    finally:
        for name in done:
            engine.unregister(name)
