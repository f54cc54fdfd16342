"""Gold models: silver → gold, recomputing only the keys new input touches.

gold.fct_sales_minute records the bronze positions it has consumed (through
silver.order_payments). A step takes the silver orders and payments in the new
bronze range, finds the minutes of the orders they touch, recomputes exactly those
minutes from silver.order_payments and merges them in; a minute left with no paid
order is deleted. gold.daily_sales_summary does the same by day (in the reporting time
zone) and replaces the touched days in one commit.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import (
    DAILY_SALES_SUMMARY,
    FCT_SALES_MINUTE,
    ORDER_PAYMENTS,
    PAGE_VIEWS,
    TS,
)
from shoplake.engines.duckdb import DuckDB
from shoplake.pipeline.models import load_model
from shoplake.pipeline.positions import range_ends, range_filter, to_app_ids
from shoplake.pipeline.silver import pending_ranges, touched_orders
from shoplake.settings import ReportingSettings
from shoplake.tables.base import TableStore
from shoplake.transport.base import TopicPartition


def rates_table(reporting: ReportingSettings) -> pa.Table:
    """currency → units of the reporting currency per unit, to 10 decimal places."""
    codes = sorted(reporting.rates)
    return pa.table(
        {
            "currency": pa.array(codes, pa.string()),
            "to_reporting": pa.array(
                [reporting.rate_to_reporting(c).quantize(Decimal("1e-10")) for c in codes],
                pa.decimal128(20, 10),
            ),
        }
    )


class SalesMinuteModel:
    """silver.order_payments → gold.fct_sales_minute."""

    spec = FCT_SALES_MINUTE

    def __init__(
        self,
        store: TableStore,
        reporting: ReportingSettings,
        *,
        engine: DuckDB | None = None,
    ) -> None:
        self.store = store
        self.rates = rates_table(reporting)
        self.engine = engine or DuckDB()
        self.sql = load_model("fct_sales_minute")
        store.ensure(self.spec)

    def step(self, tps: list[TopicPartition]) -> int:
        ranges = pending_ranges(self.store, self.spec, (ORDER_PAYMENTS,), tps)
        if not ranges:
            return 0
        ids = touched_orders(self.store, ranges)
        # Filtered in memory: merged files hold string_view columns, which pyarrow's
        # dataset filters cannot compare with plain strings.
        known = self.store.open(ORDER_PAYMENTS).dataset().to_table(columns=["order_id", "order_ts"])
        order_ts = known.filter(pc.is_in(known["order_id"], value_set=ids))["order_ts"]
        minutes = pc.unique(pc.floor_temporal(order_ts, unit="minute"))
        rows = self.compute(minutes)
        self.store.upsert(
            self.spec,
            rows,
            to_app_ids(range_ends(ranges)),
            delete_when="s.paid_orders = 0",
        )
        return int(rows.num_rows)

    def compute(
        self, minutes: pa.Array | None, *, order_payments: pa.Table | None = None
    ) -> pa.Table:
        """Rows for ``minutes`` (None: every minute with an order) from order_payments
        (read from silver unless given)."""
        if order_payments is None:
            order_payments = self._order_payments_within(minutes)
        if minutes is None:
            minutes = pc.unique(pc.floor_temporal(order_payments["order_ts"], unit="minute"))
        return self.engine.table_over(
            self.sql,
            {
                "order_payments": order_payments,
                "rates": self.rates,
                "touched_minutes": pa.table({"minute_bucket": minutes.cast(TS)}),
            },
            {"now": datetime.now(UTC)},
        )

    def _order_payments_within(self, minutes: pa.Array | None) -> pa.Table:
        dataset = self.store.open(ORDER_PAYMENTS).dataset()
        if minutes is None:
            return dataset.to_table()
        if len(minutes) == 0:
            return dataset.schema.empty_table()
        lo = pc.min(minutes).as_py()
        hi = pc.max(minutes).as_py() + timedelta(minutes=1)
        return dataset.to_table(
            filter=(pc.field("order_ts") >= pa.scalar(lo, TS))
            & (pc.field("order_ts") < pa.scalar(hi, TS))
        )


def local_dates(ts: pa.Array | pa.ChunkedArray, timezone: str) -> pa.Array | pa.ChunkedArray:
    """The calendar day of each UTC timestamp in ``timezone`` (days are cut there)."""
    return pc.local_timestamp(ts.cast(pa.timestamp("us", tz=timezone))).cast(pa.date32())


class DailySalesModel:
    """silver.page_views + silver.order_payments → gold.daily_sales_summary, by touched day."""

    spec = DAILY_SALES_SUMMARY
    inputs = (PAGE_VIEWS, ORDER_PAYMENTS)

    def __init__(
        self, store: TableStore, reporting: ReportingSettings, *, engine: DuckDB | None = None
    ) -> None:
        self.store = store
        self.timezone = reporting.timezone
        self.rates = rates_table(reporting)
        self.engine = engine or DuckDB()
        self.sql = load_model("daily_sales_summary")
        store.ensure(self.spec)

    def step(self, tps: list[TopicPartition]) -> int:
        ranges = pending_ranges(self.store, self.spec, self.inputs, tps)
        if not ranges:
            return 0
        views = (
            self.store.open(PAGE_VIEWS)
            .dataset()
            .to_table(columns=["event_ts"], filter=range_filter(ranges))
        )
        ids = touched_orders(self.store, ranges)
        orders = self._order_payments()
        placed = orders.filter(pc.is_in(orders["order_id"], value_set=ids))["order_date"]
        days = sorted(
            set(local_dates(views["event_ts"], self.timezone).to_pylist()) | set(placed.to_pylist())
        )
        rows = self.compute(days, order_payments=orders)
        positions = to_app_ids(range_ends(ranges))
        self.store.replace(self.spec, rows, "partition_date", days, positions)
        return int(rows.num_rows)

    def _order_payments(self) -> pa.Table:
        table = self.store.open(ORDER_PAYMENTS).dataset().to_table()
        return table.append_column("order_date", local_dates(table["order_ts"], self.timezone))

    def compute(
        self, days: list[date] | None, *, order_payments: pa.Table | None = None
    ) -> pa.Table:
        """Rows for ``days`` (None: every day with a view or an order)."""
        orders = order_payments if order_payments is not None else self._order_payments()
        dataset = self.store.open(PAGE_VIEWS).dataset()
        if days is None:
            views = dataset.to_table(columns=["user_id", "event_ts"])
        elif not days:
            views = dataset.to_table(columns=["user_id", "event_ts"], filter=pc.scalar(False))
        else:  # event_date is the UTC day: a day either side covers any time zone
            views = dataset.to_table(
                columns=["user_id", "event_ts"],
                filter=(pc.field("event_date") >= min(days) - timedelta(days=1))
                & (pc.field("event_date") <= max(days) + timedelta(days=1)),
            )
        views = views.append_column("view_date", local_dates(views["event_ts"], self.timezone))
        if days is None:
            days = sorted(
                set(views["view_date"].to_pylist()) | set(orders["order_date"].to_pylist())
            )
        return self.engine.table_over(
            self.sql,
            {
                "order_payments": orders,
                "page_views": views,
                "rates": self.rates,
                "touched_days": pa.table({"partition_date": pa.array(days, pa.date32())}),
            },
            {"now": datetime.now(UTC)},
        )
