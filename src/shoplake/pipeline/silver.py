"""Process: bronze.raw_events → silver, and silver → silver.order_payments.

Each silver table records the bronze positions it has consumed. A step reads bronze
from the smallest of those positions, derives every table from that one batch, and
appends to each table only the rows past its own position, with the new position in
the same commit. A crash between two tables' commits is therefore harmless: the next
step catches the lagging table up. Each table deduplicates on event_id against itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import (
    CART_EVENTS,
    ORDER_ITEMS,
    ORDER_PAYMENTS,
    ORDERS,
    PAGE_VIEWS,
    PAYMENTS,
    PRODUCT_UPDATES,
    QUARANTINE,
    RAW_EVENTS,
    USER_SESSIONS,
    TableSpec,
)
from shoplake.engines import duckdb_silver as sql
from shoplake.engines.duckdb import DuckDB
from shoplake.pipeline.models import load_model
from shoplake.pipeline.positions import (
    Positions,
    Ranges,
    positions_of,
    range_ends,
    range_filter,
    to_app_ids,
)
from shoplake.tables.base import TableStore
from shoplake.transport.base import TopicPartition

# Silver tables appended from bronze, with the SQL that derives each from `parsed`.
SILVER_FROM_BRONZE: tuple[tuple[TableSpec, str], ...] = (
    (QUARANTINE, sql.QUARANTINE_SQL),
    (PAGE_VIEWS, sql.PAGE_VIEWS_SQL),
    (CART_EVENTS, sql.CART_EVENTS_SQL),
    (ORDERS, sql.ORDERS_SQL),
    (ORDER_ITEMS, sql.ORDER_ITEMS_SQL),
    (PAYMENTS, sql.PAYMENTS_SQL),
    (USER_SESSIONS, sql.USER_SESSIONS_SQL),
    (PRODUCT_UPDATES, sql.PRODUCT_UPDATES_SQL),
)
# Tables of one row per event: what they drop as repeated event_ids is counted.
ONE_ROW_PER_EVENT = (PAGE_VIEWS, CART_EVENTS, ORDERS, PAYMENTS, USER_SESSIONS, PRODUCT_UPDATES)


@dataclass
class StepResult:
    rows_in: int = 0
    rows_written: int = 0
    duplicates_dropped: int = 0


class SilverProcessor:
    """bronze.raw_events → every silver table of events, order_items and quarantine."""

    def __init__(
        self,
        store: TableStore,
        ingest_group: str,
        currencies: list[str],
        *,
        engine: DuckDB | None = None,
    ) -> None:
        self.store = store
        self.group = ingest_group
        self.currencies = currencies
        self.engine = engine or DuckDB()
        for spec, _ in SILVER_FROM_BRONZE:
            store.ensure(spec)

    def step(self, tps: list[TopicPartition], max_records: int) -> StepResult:
        """Process up to ``max_records`` new bronze rows of partitions ``tps``."""
        if not self.store.exists(RAW_EVENTS):
            return StepResult()
        bronze = self.store.open(RAW_EVENTS)
        bronze_end = positions_of(bronze, tps, self.group)
        own = {spec: positions_of(self.store.open(spec), tps) for spec, _ in SILVER_FROM_BRONZE}
        start = {tp: min(p[tp] for p in own.values()) for tp in tps}
        ranges = _bounded({tp: (start[tp], bronze_end[tp]) for tp in tps}, max_records)
        if not ranges:
            return StepResult()
        batch = bronze.dataset().to_table(
            columns=["raw_value", "topic", "partition", "offset"], filter=range_filter(ranges)
        )
        result = StepResult(rows_in=batch.num_rows)
        eng = self.engine
        eng.register("batch", batch)
        try:
            eng.execute(sql.parsed_sql(self.currencies))
            now = datetime.now(UTC)
            for spec, query in SILVER_FROM_BRONZE:
                wanted = {tp: end for tp, (_, end) in ranges.items() if end > own[spec][tp]}
                if not wanted:
                    continue
                rows = eng.table(query, {"now": now}) if "$now" in query else eng.table(query)
                rows, repeated = _first_per_key(_past(rows, own[spec]), spec.key)
                known = 0
                if "event_id" in spec.key:
                    rows, known = self._drop_known(spec, rows)
                if spec in ONE_ROW_PER_EVENT:
                    result.duplicates_dropped += repeated + known
                self.store.append(spec, rows, to_app_ids(wanted))
                result.rows_written += rows.num_rows
        finally:
            eng.unregister("batch")
            eng.execute("DROP TABLE IF EXISTS parsed")
        return result

    def _drop_known(self, spec: TableSpec, rows: pa.Table) -> tuple[pa.Table, int]:
        """Remove rows whose event_id the table already holds."""
        if rows.num_rows == 0:
            return rows, 0
        ids = pc.unique(rows["event_id"])
        known = (
            self.store.open(spec)
            .dataset()
            .to_table(columns=["event_id"], filter=pc.field("event_id").isin(ids))["event_id"]
        )
        if len(known) == 0:
            return rows, 0
        keep = pc.invert(pc.is_in(rows["event_id"], value_set=pc.unique(known)))
        kept = rows.filter(keep)
        return kept, rows.num_rows - kept.num_rows


def _bounded(ranges: Ranges, max_records: int) -> Ranges:
    """Non-empty ranges cut to ``max_records`` in all, shared in proportion to what is pending."""
    pending = {tp: end - start for tp, (start, end) in ranges.items() if end > start}
    total = sum(pending.values())
    if total <= max_records:
        return {tp: ranges[tp] for tp in pending}
    out: Ranges = {}
    for tp, n in pending.items():
        start = ranges[tp][0]
        out[tp] = (start, start + max(1, n * max_records // total))
    return out


def _first_per_key(rows: pa.Table, key: tuple[str, ...]) -> tuple[pa.Table, int]:
    """Keep the first row (in lineage order) of each key; returns the rows and how many went."""
    if rows.num_rows == 0 or "event_id" not in key:
        return rows, 0
    indexed = rows.append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
    firsts = indexed.group_by(list(key), use_threads=False).aggregate([("__row", "min")])
    if firsts.num_rows == rows.num_rows:
        return rows, 0
    keep = pc.sort_indices(firsts["__row_min"])
    return rows.take(pc.take(firsts["__row_min"], keep)), rows.num_rows - firsts.num_rows


def _past(rows: pa.Table, positions: Positions) -> pa.Table:
    """Rows at or after each partition's position (rows a table already holds are dropped)."""
    if rows.num_rows == 0:
        return rows
    mask = None
    for (topic, partition), start in positions.items():
        if start == 0:
            continue
        older = pc.and_(
            pc.and_(pc.equal(rows["topic"], topic), pc.equal(rows["partition"], partition)),
            pc.less(rows["offset"], start),
        )
        mask = older if mask is None else pc.or_(mask, older)
    return rows if mask is None else rows.filter(pc.invert(mask))


def touched_orders(store: TableStore, ranges: Ranges) -> pa.Array:
    """order_ids of silver orders and payments whose bronze lineage lies in ``ranges``."""
    flt = range_filter(ranges)
    ids = [
        store.open(spec).dataset().to_table(columns=["order_id"], filter=flt)["order_id"]
        for spec in (ORDERS, PAYMENTS)
    ]
    return pc.unique(pa.chunked_array([c for arr in ids for c in arr.chunks], pa.string()))


def _select_ids(store: TableStore, spec: TableSpec, column: str, ids: pa.Array) -> pa.Table:
    return store.open(spec).dataset().to_table(filter=pc.field(column).isin(ids))


class OrderPaymentsModel:
    """silver.orders + silver.payments → silver.order_payments, for the orders touched."""

    spec = ORDER_PAYMENTS
    inputs = (ORDERS, PAYMENTS)

    def __init__(self, store: TableStore, *, engine: DuckDB | None = None) -> None:
        self.store = store
        self.engine = engine or DuckDB()
        self.sql = load_model("order_payments")
        store.ensure(self.spec)

    def step(self, tps: list[TopicPartition]) -> int:
        ranges = pending_ranges(self.store, self.spec, self.inputs, tps)
        if not ranges:
            return 0
        ids = touched_orders(self.store, ranges)
        rows = self.compute(ids)
        self.store.upsert(self.spec, rows, to_app_ids(range_ends(ranges)))
        return int(rows.num_rows)

    def compute(self, ids: pa.Array | None) -> pa.Table:
        """order_payments rows for ``ids`` (None: every order) from the silver tables."""
        if ids is None:
            orders = self.store.open(ORDERS).dataset().to_table()
            payments = self.store.open(PAYMENTS).dataset().to_table()
            ids = pc.unique(orders["order_id"])
        else:
            orders = _select_ids(self.store, ORDERS, "order_id", ids)
            payments = _select_ids(self.store, PAYMENTS, "order_id", ids)
        return self.engine.table_over(
            self.sql,
            {"orders": orders, "payments": payments, "touched_orders": pa.table({"order_id": ids})},
            {"now": datetime.now(UTC)},
        )


def pending_ranges(
    store: TableStore,
    spec: TableSpec,
    inputs: tuple[TableSpec, ...],
    tps: list[TopicPartition],
) -> Ranges:
    """Bronze ranges every input has consumed but ``spec`` has not."""
    own = positions_of(store.open(spec), tps)
    ends = [positions_of(store.open(s), tps) for s in inputs]
    out: Ranges = {}
    for tp in tps:
        end = min(e[tp] for e in ends)
        if end > own[tp]:
            out[tp] = (own[tp], end)
    return out
