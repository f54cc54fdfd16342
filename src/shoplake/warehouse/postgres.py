"""PostgreSQL warehouse (seed 003): silver as a star schema and every gold table, kept in
step with the lakehouse exactly once.

A round copies what changed since the last one in ONE PostgreSQL transaction, which also
records how far it got (``shoplake_sync.positions``): a kill -9 anywhere leaves the
warehouse as the previous round left it, never half a round, and the next round redoes
the rest. What changed is found per kind of table:

- facts (``silver.fact_orders``, ``fact_order_items``, ``fact_payments`` from
  ``silver.orders``, ``order_items``, ``payments``): the rows past the recorded offset of
  their (topic, partition) — silver appends each partition's records in offset order;
- dimensions and order status (``dim_customers``, ``dim_products``, ``order_payments``):
  upserted by key, the rows whose ``updated_ts`` is past the recorded one; the surrogate
  keys (``customer_key``, ``product_key``) are PostgreSQL identities, stable across updates;
- ``dim_date`` and the gold tables: replaced whole when the table's version moved.

The only module that imports ``psycopg`` (the ``warehouse`` extra).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import (
    ALL_TABLES,
    DIM_CUSTOMERS,
    DIM_DATE,
    DIM_PRODUCTS,
    ORDER_ITEMS,
    ORDER_PAYMENTS,
    ORDERS,
    PAYMENTS,
    TableSpec,
)
from shoplake.errors import ConfigError, ErrorKind, ShoplakeError
from shoplake.pipeline.gold import rates_table
from shoplake.settings import Settings
from shoplake.tables import TableStore, open_store
from shoplake.tables.base import Compare

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

_MISSING = "the PostgreSQL warehouse needs psycopg: pip install 'shoplake[warehouse]'"
_FIRST_RETRY_S, _LAST_RETRY_S = 0.2, 5.0


class WarehouseError(ShoplakeError):
    """PostgreSQL refused or could not be reached."""


Kind = Literal["fact", "upsert", "replace"]


@dataclass(frozen=True)
class Mirror:
    """How one lakehouse table reaches the warehouse."""

    source: TableSpec
    target: str  # schema.table in PostgreSQL
    kind: Kind
    surrogate: str | None = None  # an identity column, for a dimension
    keys: dict[str, str] | None = None  # fact column → dimension (surrogate key to fill)


_FACT_KEYS = {"customer_key": "silver.dim_customers", "product_key": "silver.dim_products"}

MIRRORS: tuple[Mirror, ...] = (
    Mirror(DIM_DATE, "silver.dim_date", "replace"),
    Mirror(DIM_CUSTOMERS, "silver.dim_customers", "upsert", surrogate="customer_key"),
    Mirror(DIM_PRODUCTS, "silver.dim_products", "upsert", surrogate="product_key"),
    Mirror(ORDER_PAYMENTS, "silver.order_payments", "upsert"),
    Mirror(ORDERS, "silver.fact_orders", "fact", keys={"customer_key": "user_id"}),
    Mirror(ORDER_ITEMS, "silver.fact_order_items", "fact", keys={"product_key": "product_id"}),
    Mirror(PAYMENTS, "silver.fact_payments", "fact", keys={"customer_key": "user_id"}),
    *(Mirror(spec, spec.qualified, "replace") for spec in ALL_TABLES if spec.layer == "gold"),
)


def mart_views(settings: Settings) -> dict[str, str]:
    """Seed 003's marts as views over the tables above (PostgreSQL's SQL), the same rows
    as ``shoplake query`` gives for them (``seed_names``)."""
    zone = settings.reporting.timezone.replace("'", "''")
    return {
        "gold.items_category_performance": "SELECT * FROM gold.category_performance",
        "gold.sales_performance": f"""
            SELECT s.partition_date, s.orders_placed, s.paid_orders, s.gross_revenue,
                   s.total_revenue, s.avg_order_value, s.conversion_rate,
                   s.total_revenue - lag(s.total_revenue) OVER (ORDER BY s.partition_date)
                       AS revenue_change,
                   sum(s.total_revenue) OVER (ORDER BY s.partition_date)
                       AS cumulative_revenue,
                   m.peak_minute, m.peak_minute_gmv
            FROM gold.daily_sales_summary s
            LEFT JOIN (
                SELECT (minute_bucket AT TIME ZONE '{zone}')::date AS day,
                       (array_agg(minute_bucket ORDER BY gmv DESC, minute_bucket))[1]
                           AS peak_minute,
                       max(gmv) AS peak_minute_gmv
                FROM gold.fct_sales_minute
                GROUP BY 1
            ) m ON m.day = s.partition_date""",
        "gold.select_sales": f"""
            SELECT (p.order_ts AT TIME ZONE '{zone}')::date AS sale_date, p.order_ts,
                   p.order_id, p.user_id, c.customer_key, i.line_number, i.product_id,
                   i.product_key, i.category, i.quantity, i.unit_price, i.currency,
                   i.line_amount,
                   round(i.line_amount * r.to_reporting, 2)::numeric(18, 2) AS revenue
            FROM silver.order_payments p
            JOIN silver.fact_order_items i ON i.event_id = p.order_event_id
            JOIN silver.currency_rates r ON r.currency = i.currency
            LEFT JOIN silver.dim_customers c ON c.user_id = p.user_id
            WHERE p.fully_paid""",
    }


def _pg_type(field: pa.Field) -> str:
    t = field.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t):
        return "smallint"
    if pa.types.is_int32(t):
        return "integer"
    if pa.types.is_int64(t):
        return "bigint"
    if pa.types.is_floating(t):
        return "double precision"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision}, {t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    raise ConfigError(f"no PostgreSQL type for {field.name} ({t})")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(mirror: Mirror) -> list[str]:
    return list(mirror.source.schema.names)


def _ddl(mirror: Mirror) -> str:
    spec = mirror.source
    cols = []
    if mirror.surrogate:
        cols.append(f"{mirror.surrogate} bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    if mirror.kind == "fact":
        cols.append("date_key integer NOT NULL")
        cols += [f"{key} bigint" for key in mirror.keys or {}]
    for field in spec.schema:
        null = "" if field.nullable else " NOT NULL"
        cols.append(f"{_quoted(field.name)} {_pg_type(field)}{null}")
    key = ", ".join(_quoted(k) for k in spec.key)
    if key:
        cols.append(f"UNIQUE ({key})" if mirror.surrogate else f"PRIMARY KEY ({key})")
    return f"CREATE TABLE IF NOT EXISTS {mirror.target} ({', '.join(cols)})"


def _connect(conninfo: str) -> psycopg.Connection[Any]:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(_MISSING) from None
    try:
        return psycopg.connect(conninfo, connect_timeout=10)
    except psycopg.Error as exc:
        raise WarehouseError(
            f"cannot connect to the warehouse: {str(exc).strip().splitlines()[0]}",
            kind=ErrorKind.TRANSIENT,
        ) from exc


@dataclass
class RoundResult:
    rows: dict[str, int]  # rows written per warehouse table this round

    @property
    def total(self) -> int:
        return sum(self.rows.values())


class Warehouse:
    """Keeps one PostgreSQL database in step with one lakehouse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn = _connect(settings.warehouse.conninfo())
        self._ensure_schema()

    def close(self) -> None:
        self.conn.close()

    def reconnect(self) -> None:
        """A new connection if the last one broke (PostgreSQL restarted)."""
        if self.conn.closed or self.conn.broken:
            self.conn.close()
            self.conn = _connect(self.settings.warehouse.conninfo())

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise WarehouseError(
                f"{action}: {str(exc).strip().splitlines()[0]}", kind=ErrorKind.TRANSIENT
            ) from exc

    def _ensure_schema(self) -> None:
        with self._translated("creating the warehouse's tables"), self.conn.transaction():
            # one creator at a time: two workers starting together must not race on DDL
            self._run("SELECT pg_advisory_xact_lock(7373001)")
            for schema in ("silver", "gold", "shoplake_sync"):
                self._run(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS shoplake_sync.positions (source text NOT NULL, "
                "position text NOT NULL, value text NOT NULL, PRIMARY KEY (source, position))"
            )
            for mirror in MIRRORS:
                self._run(_ddl(mirror))
                for key, natural in (mirror.keys or {}).items():
                    table = mirror.target.split(".")[1]
                    self._run(
                        f"CREATE INDEX IF NOT EXISTS {table}_{key}_unset ON {mirror.target} "
                        f"({_quoted(natural)}) WHERE {key} IS NULL"
                    )
            # the reporting currency's rates, as gold converts with them (select_sales)
            self._run(
                "CREATE TABLE IF NOT EXISTS silver.currency_rates "
                "(currency text PRIMARY KEY, to_reporting numeric(28, 10) NOT NULL)"
            )
            self.conn.execute("DELETE FROM silver.currency_rates")
            with self.conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO silver.currency_rates VALUES (%s, %s)",
                    [tuple(r.values()) for r in rates_table(self.settings.reporting).to_pylist()],
                )
            for name, sql in mart_views(self.settings).items():
                self._run(f"DROP VIEW IF EXISTS {name}")  # its columns may have changed
                self._run(f"CREATE VIEW {name} AS {sql}")

    def _run(self, sql: str) -> None:
        """SQL built here from names of the contract, never from user input."""
        self.conn.execute(sql)

    # -- a round ------------------------------------------------------------------------
    def sync(self, store: TableStore | None = None) -> RoundResult:
        """One round: everything the lakehouse has that the warehouse lacks, in one
        transaction with the positions that say so."""
        own_store = store is None
        store = store or open_store(self.settings)
        rows: dict[str, int] = {}
        try:
            with self._translated("syncing the warehouse"), self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(7373002)")  # one writer
                positions = self._positions()
                for mirror in MIRRORS:
                    if not store.exists(mirror.source):
                        continue
                    done = self._mirror(mirror, store, positions.get(mirror.target, {}))
                    if done:
                        rows[mirror.target] = done
                for mirror in MIRRORS:
                    for key, natural in (mirror.keys or {}).items():
                        self._fill_key(mirror.target, key, natural)
        finally:
            if own_store:
                store.close()
        return RoundResult(rows)

    def _positions(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for source, position, value in self.conn.execute(
            "SELECT source, position, value FROM shoplake_sync.positions"
        ):
            out.setdefault(source, {})[position] = value
        return out

    def _record(self, target: str, positions: dict[str, str]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO shoplake_sync.positions (source, position, value) "
                "VALUES (%s, %s, %s) ON CONFLICT (source, position) "
                "DO UPDATE SET value = EXCLUDED.value",
                [(target, k, v) for k, v in positions.items()],
            )

    def _mirror(self, mirror: Mirror, store: TableStore, done: dict[str, str]) -> int:
        handle = store.open(mirror.source)
        if mirror.kind == "replace":
            if done.get("version") == str(handle.version):
                return 0
            rows = handle.scan()
            self._run(f"DELETE FROM {mirror.target}")
            self._copy(mirror.target, rows)
            self._record(mirror.target, {"version": str(handle.version)})
            return int(rows.num_rows)
        if mirror.kind == "upsert":
            since = done.get("updated_ts")
            where = Compare("updated_ts", ">", datetime.fromisoformat(since)) if since else None
            rows = handle.scan(where=where)
            if rows.num_rows == 0:
                return 0
            self._upsert(mirror, rows)
            newest = pc.max(rows["updated_ts"]).as_py()
            self._record(mirror.target, {"updated_ts": newest.isoformat()})
            return int(rows.num_rows)
        # facts: the lineage first (three columns), then only the rows from the lowest new
        # offset on
        fresh = _past_recorded(handle.scan(["topic", "partition", "offset"]), done)
        if fresh.num_rows == 0:
            return 0
        lowest = pc.min(fresh["offset"]).as_py()
        new = _past_recorded(handle.scan(where=Compare("offset", ">=", lowest)), done)
        return self._append_facts(mirror, new)

    def _append_facts(self, mirror: Mirror, new: pa.Table) -> int:
        date_keys = pc.cast(pc.strftime(new["event_date"], "%Y%m%d"), pa.int32())
        self._copy(mirror.target, new.append_column("date_key", date_keys))
        reached: dict[str, str] = {}
        grouped = new.group_by(["topic", "partition"]).aggregate([("offset", "max")])
        for topic, partition, offset in zip(
            grouped["topic"].to_pylist(),
            grouped["partition"].to_pylist(),
            grouped["offset_max"].to_pylist(),
            strict=True,
        ):
            reached[f"{topic}/{partition}"] = str(offset)
        self._record(mirror.target, reached)
        return int(new.num_rows)

    def _copy(self, target: str, rows: pa.Table) -> None:
        columns = ", ".join(_quoted(c) for c in rows.column_names)
        sql = f"COPY {target} ({columns}) FROM STDIN"
        with self.conn.cursor() as cur, cur.copy(sql) as copy:
            for batch in rows.to_batches(max_chunksize=10_000):
                for row in zip(*(c.to_pylist() for c in batch.columns), strict=True):
                    copy.write_row(row)

    def _upsert(self, mirror: Mirror, rows: pa.Table) -> None:
        columns = _columns(mirror)
        stage = f"stage_{mirror.target.replace('.', '_')}"
        self._run(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
            f"(LIKE {mirror.target} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        if mirror.surrogate:  # the identity comes from the target, not the stage
            self._run(f"ALTER TABLE {stage} DROP COLUMN IF EXISTS {mirror.surrogate}")
        self._copy(stage, rows.select(columns))
        key = ", ".join(_quoted(k) for k in mirror.source.key)
        names = ", ".join(_quoted(c) for c in columns)
        updates = ", ".join(
            f"{_quoted(c)} = EXCLUDED.{_quoted(c)}" for c in columns if c not in mirror.source.key
        )
        self._run(
            f"INSERT INTO {mirror.target} ({names}) SELECT {names} FROM {stage} "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )

    def _fill_key(self, target: str, key: str, natural: str) -> None:
        """Surrogate keys of facts whose dimension row had not arrived when they did."""
        dimension = _FACT_KEYS[key]
        self._run(
            f"UPDATE {target} f SET {key} = d.{key} FROM {dimension} d "
            f"WHERE f.{key} IS NULL AND d.{_quoted(natural)} = f.{_quoted(natural)}"
        )


def _past_recorded(rows: pa.Table, done: dict[str, str]) -> pa.Table:
    """The rows whose offset is past the one recorded for their (topic, partition)."""
    if rows.num_rows == 0:
        return rows
    lineage = pc.binary_join_element_wise(
        rows["topic"], pc.cast(rows["partition"], pa.string()), "/"
    )
    keys = pa.array(list(done), pa.string())
    floors = pa.array([int(v) for v in done.values()], pa.int64())
    at = pc.index_in(lineage, value_set=keys)
    floor = pc.fill_null(pc.take(floors, at), -1)
    return rows.filter(pc.greater(rows["offset"], floor))


def run_warehouse(
    settings: Settings,
    *,
    until_idle: bool,
    stop: threading.Event,
    on_round: Callable[[RoundResult], None] | None = None,
) -> int:
    """Rounds until ``stop`` (or, with ``until_idle``, until a round finds nothing new).
    The continuous worker outlasts what passes — PostgreSQL restarting, the lakehouse
    unreachable a moment — retrying after 0.2 s, twice as long each time up to 5 s; with
    ``until_idle``, or on an error retrying cannot cure, it stops. Returns the rows written."""
    warehouse = Warehouse(settings)
    store = open_store(settings)
    total, backoff = 0, _FIRST_RETRY_S
    try:
        while not stop.is_set():
            try:
                warehouse.reconnect()
                result = warehouse.sync(store)
            except ShoplakeError as exc:
                if until_idle or not exc.transient:
                    raise
                log.warning("warehouse round failed, retrying in %.1f s: %s", backoff, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, _LAST_RETRY_S)
                continue
            backoff = _FIRST_RETRY_S
            total += result.total
            if on_round is not None:
                on_round(result)
            if until_idle and result.total == 0:
                break
            if not until_idle:
                stop.wait(settings.warehouse.interval_s)
    finally:
        store.close()
        warehouse.close()
    return total


def warehouse_tables(settings: Settings) -> Sequence[str]:
    """Every table and view the warehouse holds, schema-qualified."""
    return [m.target for m in MIRRORS] + list(mart_views(settings))
