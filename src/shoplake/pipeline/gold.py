"""Gold models (and silver.order_payments, which they read): silver → gold,
recomputing only the keys new input touches.

Every gold table records the bronze positions it has consumed (through the silver
tables it reads). A step finds the silver rows in the new bronze range, derives the
keys they touch — minutes, days, customers — recomputes exactly those from silver with
the model's SQL and writes them in one commit with the new positions:
gold.fct_sales_minute merges minutes (a minute left with no paid order is deleted), the
daily tables replace the touched days (days are cut in the reporting time zone), and
gold.daily_customer_analytics merges the touched customers' days.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import (
    ORDER_PAYMENTS,
    ORDERS,
    PAYMENTS,
    PRODUCT_UPDATES,
    TS,
    TableSpec,
)
from shoplake.engines.base import Engine
from shoplake.pipeline.models import load_model
from shoplake.pipeline.positions import Ranges, RecentCommits, read_ranges
from shoplake.pipeline.silver import pending_ranges, touched_orders
from shoplake.settings import ReportingSettings
from shoplake.tables.base import TableStore
from shoplake.transport.base import TopicPartition

if TYPE_CHECKING:  # the registry imports the models
    from shoplake.pipeline.registry import ModelDecl


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


class DerivedModel:
    """What the model of every derived table holds: its declaration (see registry), the
    store, the engine, its SQL, and the reporting time zone and rates.

    A step plans and computes what the new bronze ranges touch (``recompute``) and
    writes it the declared way, with the positions consumed, in one commit."""

    uses_local_date: ClassVar[bool] = False  # the SQL cuts days with local_date()

    def __init__(
        self,
        decl: ModelDecl[Any],
        store: TableStore,
        reporting: ReportingSettings,
        *,
        engine: Engine,
        recent: RecentCommits | None = None,
    ) -> None:
        self.decl = decl
        self.spec = decl.spec
        self.store = store
        self.timezone = reporting.timezone
        self.rates = rates_table(reporting)
        self.engine = engine
        self.recent = recent or RecentCommits()
        if self.uses_local_date:
            engine.define_local_date(self.timezone)
        self.sql = load_model(decl.sql)
        store.ensure(self.spec)

    def step(self, tps: list[TopicPartition]) -> int:
        ranges = pending_ranges(self.store, self.spec, self.decl.inputs, tps)
        if not ranges:
            return 0
        rows, partitions = self.recompute(ranges, tps)
        self.decl.commit(self.store, rows, ranges, partitions)
        self.committed(ranges, rows)
        return int(rows.num_rows)

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        """The rows of what ``ranges`` touch, and the partitions they replace (if the
        table is written by partition)."""
        raise NotImplementedError

    def committed(self, ranges: Ranges, rows: pa.Table) -> None:
        """Called once a step's rows are committed."""

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
        """Recompute ``days`` from silver and write them (``run --date``), for the models
        whose declaration says they rebuild days."""
        raise NotImplementedError


def _select_ids(store: TableStore, spec: TableSpec, column: str, ids: pa.Array) -> pa.Table:
    return store.open(spec).dataset().to_table(filter=pc.field(column).isin(ids))


class OrderPaymentsModel(DerivedModel):
    """silver.orders + silver.payments → silver.order_payments, for the orders touched."""

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        return self.compute(touched_orders(self.store, ranges, self.recent)), []

    def committed(self, ranges: Ranges, rows: pa.Table) -> None:
        self.recent.record(self.spec, ranges, rows)  # fct_sales_minute takes them from memory

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


class SalesMinuteModel(DerivedModel):
    """silver.order_payments → gold.fct_sales_minute, by the minutes touched."""

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
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
        return self.compute(minutes), []

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
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
        self.decl.commit(self.store, rows, None)
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


class DailyModel(DerivedModel):
    """A gold table of rows per day: a step recomputes the days its new input touches
    and replaces them in one commit.

    Its declaration names the silver tables read by day (with the columns the SQL uses)
    and whether silver.order_payments is an input too."""

    uses_local_date = True

    @property
    def uses_orders(self) -> bool:
        return ORDER_PAYMENTS in self.decl.inputs

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        days = sorted(self.touched_days(ranges))
        return self.compute(days), days

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
        """Recompute ``days`` from silver and replace them (``run --date``)."""
        rows = self.compute(days)
        self.decl.commit(self.store, rows, None, days)
        return int(rows.num_rows)

    def touched_days(self, ranges: Ranges) -> set[date]:
        days: set[date] = set()
        for spec, _ in self.decl.reads:
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
            spec.name: read_near_days(self.store, spec, days, list(columns))
            for spec, columns in self.decl.reads
        }
        if self.uses_orders:
            tables[ORDER_PAYMENTS.name] = self._order_payments(days)
        return tables

    def compute(self, days: list[date] | None) -> pa.Table:
        """Rows for ``days`` (None: every day the input has)."""
        tables = self.load(days)
        if days is None:
            found: set[date] = set()
            for spec, _ in self.decl.reads:
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


class ProductModel(DailyModel):
    """gold.product_analytics: per product and day, with the recommendation score.

    A product update renames or recategorises a product from its day on, so it touches
    every later day already in the table too."""

    _CATALOG: ClassVar[list[str]] = ["product_id", "name", "category", "event_id", "event_ts"]

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


class CustomerAnalyticsModel(DerivedModel):
    """gold.daily_customer_analytics: a customer's value to date changes every later day
    they are active, so a step recomputes the touched customers from the earliest day
    touched on, and merges those rows. Its declaration's reads are the activity tables."""

    uses_local_date = True

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        seen = [
            read_range(self.store, spec, ranges, ["user_id", "event_ts"])
            for spec, _ in self.decl.reads
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
        return rows, []

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
        """Recompute everyone's rows of ``days`` and replace those days whole."""
        rows = self.compute(None, min(days))
        rows = rows.filter(pc.is_in(rows["partition_date"], value_set=pa.array(days, pa.date32())))
        self.store.replace(self.spec, rows, self.decl.partition, days)
        return int(rows.num_rows)

    def compute(self, users: pa.Array | None, from_day: date | None = None) -> pa.Table:
        """Rows of ``users`` (None: everyone) for the days from ``from_day`` on."""
        tables: dict[str, pa.Table] = {}
        for spec, columns in self.decl.reads:
            flt = (
                None if from_day is None else pc.field("event_date") >= from_day - timedelta(days=1)
            )
            if users is not None:
                by_user = pc.field("user_id").isin(users)
                flt = by_user if flt is None else flt & by_user
            tables[spec.name] = (
                self.store.open(spec).dataset().to_table(columns=list(columns), filter=flt)
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
