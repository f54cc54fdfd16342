"""Gold models: silver → gold, recomputing only the keys new input touches.

Every gold table records the bronze positions it has consumed (through the silver
tables it reads). A step finds the silver rows in the new bronze range, derives the
keys they touch — minutes, days, customers — recomputes exactly those from silver with
the model's SQL and writes them in one commit with the new positions:
gold.fct_sales_minute merges minutes (a minute left with no paid order is deleted), the
daily tables replace the touched days (days are cut in the reporting time zone), and
gold.daily_customer_analytics merges the touched customers' days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import (
    CART_EVENTS,
    CATEGORY_PERFORMANCE,
    DAILY_CUSTOMER_ANALYTICS,
    DAILY_SALES_SUMMARY,
    DAILY_TRAFFIC_SOURCES,
    FCT_SALES_MINUTE,
    FUNNEL_DAILY,
    ORDER_ITEMS,
    ORDER_PAYMENTS,
    ORDERS,
    PAGE_VIEWS,
    PRODUCT_ANALYTICS,
    PRODUCT_UPDATES,
    TS,
    TableSpec,
)
from shoplake.engines.base import Engine
from shoplake.pipeline.models import load_model
from shoplake.pipeline.positions import (
    Ranges,
    RecentCommits,
    range_ends,
    read_ranges,
    to_app_ids,
)
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
        engine: Engine,
        recent: RecentCommits | None = None,
    ) -> None:
        self.store = store
        self.timezone = reporting.timezone
        self.rates = rates_table(reporting)
        self.engine = engine
        self.recent = recent or RecentCommits()
        self.sql = load_model("fct_sales_minute")
        store.ensure(self.spec)

    def step(self, tps: list[TopicPartition]) -> int:
        ranges = pending_ranges(self.store, self.spec, (ORDER_PAYMENTS,), tps)
        if not ranges:
            return 0
        made = self.recent.made_of(ORDER_PAYMENTS, ranges)
        if made is not None:  # order_payments' rows for the orders of exactly these ranges
            order_ts = made["order_ts"]
        else:
            ids = touched_orders(self.store, ranges, self.recent)
            # Filtered in memory: merged files hold string_view columns, which pyarrow's
            # dataset filters cannot compare with plain strings.
            known = (
                self.store.open(ORDER_PAYMENTS).dataset().to_table(columns=["order_id", "order_ts"])
            )
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

    def rebuild(self, days: list[date]) -> int:
        """Recompute every minute of ``days`` (reporting time zone) and merge them."""
        wanted = pa.array(days, pa.date32())
        placed = self.store.open(ORDER_PAYMENTS).dataset().to_table(columns=["order_ts"])[0]
        shown = self.store.open(self.spec).dataset().to_table(columns=["minute_bucket"])[0]
        minutes = pc.unique(
            pa.chunked_array(
                [
                    *pc.floor_temporal(placed, unit="minute").chunks,
                    *shown.cast(TS).chunks,
                ],
                TS,
            )
        )
        minutes = minutes.filter(pc.is_in(local_dates(minutes, self.timezone), value_set=wanted))
        rows = self.compute(minutes)
        self.store.upsert(self.spec, rows, delete_when="s.paid_orders = 0")
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


def _day_set(ts: pa.Array | pa.ChunkedArray, timezone: str) -> set[date]:
    return set(pc.unique(local_dates(ts, timezone)).to_pylist()) - {None}


def _near(days: Iterable[date]) -> pa.Array:
    """``days`` and the day either side: the UTC dates holding every instant of those
    local days, whatever the time zone."""
    return pa.array(sorted({d + timedelta(days=k) for d in days for k in (-1, 0, 1)}), pa.date32())


def read_near_days(
    store: TableStore,
    spec: TableSpec,
    days: Iterable[date] | None,
    columns: list[str],
    date_column: str = "event_date",
) -> pa.Table:
    """The rows of a table that may fall on ``days`` (None: every row)."""
    dataset = store.open(spec).dataset()
    if days is None:
        return dataset.to_table(columns=columns)
    return dataset.to_table(columns=columns, filter=pc.field(date_column).isin(_near(days)))


def read_range(store: TableStore, spec: TableSpec, ranges: Ranges, columns: list[str]) -> pa.Table:
    """The rows of a table whose bronze lineage lies in ``ranges``."""
    return read_ranges(store.open(spec).dataset(), ranges, columns)


def _days_table(days: Iterable[date]) -> pa.Table:
    return pa.table({"partition_date": pa.array(sorted(days), pa.date32())})


class DailyModel:
    """A gold table of rows per day: a step recomputes the days its new input touches
    and replaces them in one commit.

    Subclasses name the table, the SQL model, the silver tables read by day (with the
    columns the SQL uses) and whether it reads silver.order_payments."""

    spec: TableSpec
    model: str
    reads: ClassVar[Mapping[TableSpec, list[str]]] = {}
    uses_orders = False

    def __init__(self, store: TableStore, reporting: ReportingSettings, *, engine: Engine) -> None:
        self.store = store
        self.timezone = reporting.timezone
        self.rates = rates_table(reporting)
        self.engine = engine
        self.engine.define_local_date(self.timezone)
        self.sql = load_model(self.model)
        store.ensure(self.spec)

    @property
    def inputs(self) -> tuple[TableSpec, ...]:
        """The tables whose consumed bronze positions bound this one's."""
        return (*self.reads, *((ORDER_PAYMENTS,) if self.uses_orders else ()))

    def step(self, tps: list[TopicPartition]) -> int:
        ranges = pending_ranges(self.store, self.spec, self.inputs, tps)
        if not ranges:
            return 0
        days = sorted(self.touched_days(ranges))
        rows = self.compute(days)
        positions = to_app_ids(range_ends(ranges))
        self.store.replace(self.spec, rows, "partition_date", days, positions)
        return int(rows.num_rows)

    def rebuild(self, days: list[date]) -> int:
        """Recompute ``days`` from silver and replace them (``run --date``)."""
        rows = self.compute(days)
        self.store.replace(self.spec, rows, "partition_date", days)
        return int(rows.num_rows)

    def touched_days(self, ranges: Ranges) -> set[date]:
        days: set[date] = set()
        for spec in self.reads:
            days |= _day_set(read_range(self.store, spec, ranges, ["event_ts"])[0], self.timezone)
        if self.uses_orders:
            orders = self._order_payments(None)
            ids = touched_orders(self.store, ranges)
            days |= _day_set(
                orders.filter(pc.is_in(orders["order_id"], value_set=ids))["order_ts"],
                self.timezone,
            )
        return days

    def load(self, days: list[date] | None) -> dict[str, pa.Table]:
        """The model's inputs, cut to what may fall on ``days`` (None: everything)."""
        tables = {
            spec.name: read_near_days(self.store, spec, days, columns)
            for spec, columns in self.reads.items()
        }
        if self.uses_orders:
            tables[ORDER_PAYMENTS.name] = self._order_payments(days)
        return tables

    def compute(self, days: list[date] | None) -> pa.Table:
        """Rows for ``days`` (None: every day the input has)."""
        tables = self.load(days)
        if days is None:
            found: set[date] = set()
            for spec in self.reads:
                found |= _day_set(tables[spec.name]["event_ts"], self.timezone)
            if self.uses_orders:
                found |= _day_set(tables[ORDER_PAYMENTS.name]["order_ts"], self.timezone)
            days = sorted(found)
        return self.engine.table_over(
            self.sql,
            {**tables, "rates": self.rates, "touched_days": _days_table(days)},
            {"now": datetime.now(UTC)},
        )

    def _order_payments(self, days: list[date] | None) -> pa.Table:
        # Filtered in memory: merged files hold string_view columns (see SalesMinuteModel).
        table = self.store.open(ORDER_PAYMENTS).dataset().to_table()
        if days is None:
            return table
        local = local_dates(table["order_ts"], self.timezone)
        return table.filter(pc.is_in(local, value_set=pa.array(days, pa.date32())))


_EVENT = ["event_id", "event_ts"]


class DailySalesModel(DailyModel):
    """gold.daily_sales_summary: orders, revenue, visitors and conversion per day."""

    spec = DAILY_SALES_SUMMARY
    model = "daily_sales_summary"
    reads: ClassVar[Mapping[TableSpec, list[str]]] = {PAGE_VIEWS: ["user_id", *_EVENT]}
    uses_orders = True


class TrafficSourcesModel(DailyModel):
    """gold.daily_traffic_sources: the day's visitors, buyers and revenue by source."""

    spec = DAILY_TRAFFIC_SOURCES
    model = "daily_traffic_sources"
    reads: ClassVar[Mapping[TableSpec, list[str]]] = {
        PAGE_VIEWS: ["user_id", "session_id", "traffic_source", *_EVENT]
    }
    uses_orders = True


class FunnelModel(DailyModel):
    """gold.funnel_daily: sessions reaching each step of the funnel per day."""

    spec = FUNNEL_DAILY
    model = "funnel_daily"
    reads: ClassVar[Mapping[TableSpec, list[str]]] = {
        PAGE_VIEWS: ["session_id", "page_type", *_EVENT],
        CART_EVENTS: ["session_id", "event_type", *_EVENT],
        ORDERS: ["session_id", *_EVENT],
    }


class CategoryModel(DailyModel):
    """gold.category_performance: paid orders, units and revenue per category and day."""

    spec = CATEGORY_PERFORMANCE
    model = "category_performance"
    reads: ClassVar[Mapping[TableSpec, list[str]]] = {
        ORDER_ITEMS: ["event_id", "category", "quantity", "line_amount", "currency", "event_ts"]
    }
    uses_orders = True


class ProductModel(DailyModel):
    """gold.product_analytics: per product and day, with the recommendation score.

    A product update renames or recategorises a product from its day on, so it touches
    every later day already in the table too."""

    spec = PRODUCT_ANALYTICS
    model = "product_analytics"
    reads: ClassVar[Mapping[TableSpec, list[str]]] = {
        PAGE_VIEWS: ["product_id", "category", *_EVENT],
        CART_EVENTS: ["product_id", "category", "event_type", *_EVENT],
        ORDER_ITEMS: [
            "event_id",
            "product_id",
            "category",
            "quantity",
            "line_amount",
            "currency",
            "event_ts",
        ],
    }
    uses_orders = True
    _CATALOG: ClassVar[list[str]] = ["product_id", "name", "category", *_EVENT]

    @property
    def inputs(self) -> tuple[TableSpec, ...]:
        return (*super().inputs, PRODUCT_UPDATES)

    def touched_days(self, ranges: Ranges) -> set[date]:
        days = super().touched_days(ranges)
        updated = _day_set(
            read_range(self.store, PRODUCT_UPDATES, ranges, ["event_ts"])[0], self.timezone
        )
        if updated:
            first = min(updated)
            later = (
                self.store.open(self.spec)
                .dataset()
                .to_table(columns=["partition_date"], filter=pc.field("partition_date") >= first)
            )
            days |= set(pc.unique(later["partition_date"]).to_pylist())
        return days

    def load(self, days: list[date] | None) -> dict[str, pa.Table]:
        tables = super().load(days)
        catalog = self.store.open(PRODUCT_UPDATES).dataset()
        if days is not None:  # updates after the last day cannot name it
            last = max(days, default=date.min) + timedelta(days=1)
            tables[PRODUCT_UPDATES.name] = catalog.to_table(
                columns=self._CATALOG, filter=pc.field("event_date") <= last
            )
        else:
            tables[PRODUCT_UPDATES.name] = catalog.to_table(columns=self._CATALOG)
        return tables


class CustomerAnalyticsModel:
    """gold.daily_customer_analytics: a customer's value to date changes every later day
    they are active, so a step recomputes the touched customers from the earliest day
    touched on, and merges those rows."""

    spec = DAILY_CUSTOMER_ANALYTICS
    activity: ClassVar[Mapping[TableSpec, list[str]]] = {
        PAGE_VIEWS: ["user_id", "session_id", "event_ts"],
        CART_EVENTS: ["user_id", "session_id", "event_type", "event_ts"],
        ORDERS: ["user_id", "session_id", "event_ts"],
    }
    inputs = (*activity, ORDER_PAYMENTS)

    def __init__(self, store: TableStore, reporting: ReportingSettings, *, engine: Engine) -> None:
        self.store = store
        self.timezone = reporting.timezone
        self.rates = rates_table(reporting)
        self.engine = engine
        self.engine.define_local_date(self.timezone)
        self.sql = load_model("daily_customer_analytics")
        store.ensure(self.spec)

    def step(self, tps: list[TopicPartition]) -> int:
        ranges = pending_ranges(self.store, self.spec, self.inputs, tps)
        if not ranges:
            return 0
        seen = [
            read_range(self.store, spec, ranges, ["user_id", "event_ts"]) for spec in self.activity
        ]
        orders = (
            self.store.open(ORDER_PAYMENTS)
            .dataset()
            .to_table(columns=["order_id", "user_id", "order_ts"])
        )
        paid = orders.filter(
            pc.is_in(orders["order_id"], value_set=touched_orders(self.store, ranges))
        )
        seen.append(paid.select(["user_id", "order_ts"]).rename_columns(["user_id", "event_ts"]))
        touched = pa.concat_tables(seen, promote_options="permissive")
        rows = self.spec.schema.empty_table()
        if touched.num_rows:
            from_day = min(_day_set(touched["event_ts"], self.timezone))
            rows = self.compute(pc.unique(touched["user_id"]), from_day)
        self.store.upsert(self.spec, rows, to_app_ids(range_ends(ranges)))
        return int(rows.num_rows)

    def rebuild(self, days: list[date]) -> int:
        rows = self.compute(None, min(days))
        rows = rows.filter(pc.is_in(rows["partition_date"], value_set=pa.array(days, pa.date32())))
        self.store.replace(self.spec, rows, "partition_date", days)
        return int(rows.num_rows)

    def compute(self, users: pa.Array | None, from_day: date | None = None) -> pa.Table:
        """Rows of ``users`` (None: everyone) for the days from ``from_day`` on."""
        tables: dict[str, pa.Table] = {}
        for spec, columns in self.activity.items():
            flt = (
                None if from_day is None else pc.field("event_date") >= from_day - timedelta(days=1)
            )
            if users is not None:
                by_user = pc.field("user_id").isin(users)
                flt = by_user if flt is None else flt & by_user
            tables[spec.name] = (
                self.store.open(spec).dataset().to_table(columns=columns, filter=flt)
            )
        orders = self.store.open(ORDER_PAYMENTS).dataset().to_table()
        if users is not None:
            orders = orders.filter(pc.is_in(orders["user_id"], value_set=users))
        tables[ORDER_PAYMENTS.name] = orders
        return self.engine.table_over(
            self.sql,
            {**tables, "rates": self.rates},
            {"now": datetime.now(UTC), "from_day": from_day or date.min},
        )
