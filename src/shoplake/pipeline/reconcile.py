"""From-scratch recomputation of the derived tables, to check the incremental ones."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import DAILY_SALES_SUMMARY, FCT_SALES_MINUTE, ORDER_PAYMENTS
from shoplake.pipeline.gold import DailySalesModel, SalesMinuteModel, local_dates
from shoplake.pipeline.silver import OrderPaymentsModel
from shoplake.settings import ReportingSettings
from shoplake.tables.base import TableStore

# Columns that say when a row was computed, not what it holds.
VOLATILE = ("updated_ts", "processed_ts")


Rows = list[dict[str, Any]]


def _stable(table: pa.Table, key: tuple[str, ...]) -> Rows:
    """Rows sorted by key, without the volatile columns: comparable across runs."""
    keep = [c for c in table.column_names if c not in VOLATILE]
    rows: Rows = table.select(keep).sort_by([(k, "ascending") for k in key]).to_pylist()
    return rows


def recomputed_gold(store: TableStore, reporting: ReportingSettings) -> dict[str, Rows]:
    """order_payments and fct_sales_minute computed from all of silver in one go.

    fct_sales_minute is computed over the *recomputed* order_payments, so the result
    depends on silver.orders and silver.payments only."""
    order_payments = OrderPaymentsModel(store).compute(None)
    sales = SalesMinuteModel(store, reporting).compute(None, order_payments=order_payments)
    sales = sales.filter(pc.greater(sales["paid_orders"], 0))
    daily_model = DailySalesModel(store, reporting)
    daily = daily_model.compute(
        None,
        order_payments=order_payments.append_column(
            "order_date", local_dates(order_payments["order_ts"], reporting.timezone)
        ),
    )
    return {
        ORDER_PAYMENTS.qualified: _stable(order_payments, ORDER_PAYMENTS.key),
        FCT_SALES_MINUTE.qualified: _stable(sales, FCT_SALES_MINUTE.key),
        DAILY_SALES_SUMMARY.qualified: _stable(daily, DAILY_SALES_SUMMARY.key),
    }


def current_gold(store: TableStore) -> dict[str, Rows]:
    """The same tables as the incremental pipeline left them."""
    return {
        spec.qualified: _stable(store.open(spec).dataset().to_table(), spec.key)
        for spec in (ORDER_PAYMENTS, FCT_SALES_MINUTE, DAILY_SALES_SUMMARY)
    }
