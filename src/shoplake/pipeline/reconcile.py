"""From-scratch recomputation of the derived tables, to check the incremental ones."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import (
    DAILY_CUSTOMER_ANALYTICS,
    DATA_QUALITY_REPORT,
    DIM_CUSTOMERS,
    DIM_PRODUCTS,
    FCT_SALES_MINUTE,
    ORDER_PAYMENTS,
    RAW_EVENTS,
    TableSpec,
)
from shoplake.engines import Engine, open_engine
from shoplake.pipeline.positions import positions_of
from shoplake.pipeline.registry import (
    CUSTOMER_ANALYTICS_MODEL,
    DAILY_MODELS,
    DATA_QUALITY_MODEL,
    DIM_CUSTOMERS_MODEL,
    DIM_PRODUCTS_MODEL,
    ORDER_PAYMENTS_MODEL,
    SALES_MINUTE_MODEL,
)
from shoplake.settings import EngineSettings, ReportingSettings
from shoplake.tables.base import TableStore
from shoplake.transport.base import TopicPartition

# Columns that say when a row was computed, not what it holds.
VOLATILE = ("updated_ts", "processed_ts", "freshness_s")


Rows = list[dict[str, Any]]

# Every table the pipeline derives from silver events.
DERIVED: tuple[TableSpec, ...] = (
    ORDER_PAYMENTS,
    DIM_PRODUCTS,
    DIM_CUSTOMERS,
    FCT_SALES_MINUTE,
    *(m.spec for m in DAILY_MODELS),
    DAILY_CUSTOMER_ANALYTICS,
    DATA_QUALITY_REPORT,
)


def _stable(table: pa.Table, key: tuple[str, ...]) -> Rows:
    """Rows sorted by key, without the volatile columns: comparable across runs."""
    keep = [c for c in table.column_names if c not in VOLATILE]
    rows: Rows = table.select(keep).sort_by([(k, "ascending") for k in key]).to_pylist()
    return rows


def recomputed_gold(
    store: TableStore, reporting: ReportingSettings, engine: Engine | None = None
) -> dict[str, Rows]:
    """Every derived table computed from all of silver in one go (on DuckDB unless
    another engine is given).

    order_payments and fct_sales_minute depend on silver.orders and silver.payments
    only; the other models read the stored silver.order_payments, which the first entry
    checks."""
    engine = engine or open_engine(EngineSettings())
    order_payments = ORDER_PAYMENTS_MODEL.build(store, reporting, engine=engine).compute(None)
    sales = SALES_MINUTE_MODEL.build(store, reporting, engine=engine).compute(
        None, order_payments=order_payments
    )
    tables: dict[TableSpec, pa.Table] = {
        ORDER_PAYMENTS: order_payments,
        FCT_SALES_MINUTE: sales.filter(pc.greater(sales["paid_orders"], 0)),
    }
    for daily in DAILY_MODELS:
        model = daily.build(store, reporting, engine=engine)
        tables[model.spec] = model.compute(None)
    customers = CUSTOMER_ANALYTICS_MODEL.build(store, reporting, engine=engine)
    tables[customers.spec] = customers.compute(None)
    for dim in (DIM_PRODUCTS_MODEL, DIM_CUSTOMERS_MODEL):
        tables[dim.spec] = dim.build(store, reporting, engine=engine).compute(None)
    tps = bronze_partitions(store)
    consumed = positions_of(store.open(DATA_QUALITY_REPORT), tps)
    tables[DATA_QUALITY_REPORT] = DATA_QUALITY_MODEL.build(store, reporting, engine=engine).compute(
        None, consumed
    )
    return {spec.qualified: _stable(rows, spec.key) for spec, rows in tables.items()}


def current_gold(store: TableStore) -> dict[str, Rows]:
    """The same tables as the incremental pipeline left them."""
    return {spec.qualified: _stable(store.open(spec).scan(), spec.key) for spec in DERIVED}


def bronze_partitions(store: TableStore) -> list[TopicPartition]:
    """Every topic partition bronze holds records of."""
    lineage = store.open(RAW_EVENTS).scan(["topic", "partition"])
    pairs = lineage.group_by(["topic", "partition"]).aggregate([]).to_pylist()
    return [TopicPartition(p["topic"], p["partition"]) for p in pairs]
