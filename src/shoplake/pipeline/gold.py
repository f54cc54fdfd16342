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

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

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
from shoplake.engines.base import Engine, HeldQuery, table_input
from shoplake.pipeline.digests import WEIGHT, DayDigests, weighed
from shoplake.pipeline.models import load_model
from shoplake.pipeline.positions import (
    Ranges,
    RecentCommits,
    SharedReads,
    positions_of,
    ranges_key,
)
from shoplake.pipeline.silver import pending_ranges, touched_orders
from shoplake.pipeline.steptrace import step
from shoplake.settings import ReportingSettings
from shoplake.tables.base import (
    Compare,
    IsIn,
    Located,
    Predicate,
    TableScan,
    TableStore,
    all_of,
    merged_spans,
    within,
)
from shoplake.transport.base import TopicPartition

if TYPE_CHECKING:  # the registry imports the models
    from shoplake.engines.base import Input
    from shoplake.pipeline.registry import ModelDecl

T = TypeVar("T")


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
        shared: SharedReads | None = None,
    ) -> None:
        self.decl = decl
        self.spec = decl.spec
        self.store = store
        self.timezone = reporting.timezone
        self.rates = rates_table(reporting)
        self.engine = engine
        self.recent = recent or RecentCommits()
        self.shared = shared
        if self.uses_local_date:
            engine.define_local_date(self.timezone)
        self.sql = load_model(decl.sql)
        store.ensure(self.spec)
        # Inputs held compacted for the days touched last (see pipeline/digests.py), as
        # tables of an engine that holds some (Spark reads the tables itself: no rows pass
        # this process to hold).
        self.digests = (
            DayDigests(dict(decl.digests), self.engine)
            if decl.digests and self.engine.capabilities.holds_tables
            else None
        )
        # inputs the SQL counts as SUM(weight), held or not (see digests)
        self.counted = {spec for spec, digest in decl.digests if digest.counted}

    def step(self, tps: list[TopicPartition]) -> int:
        ranges = pending_ranges(self.store, self.spec, self.decl.inputs, tps, self.shared)
        if not ranges:
            return 0
        name = self.spec.qualified
        with step(f"{name} recompute"):  # parts of the model's step (see steptrace)
            rows, partitions = self.recompute(ranges, tps)
        with step(f"{name} commit"):
            self.decl.commit(self.store, rows, ranges, partitions, self.located())
        if self.shared is not None:
            self.shared.committed(self.spec)
        self.committed(ranges, rows)
        return int(rows.num_rows)

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        """The rows of what ``ranges`` touch, and the partitions they replace (if the
        table is written by partition)."""
        raise NotImplementedError

    def located(self) -> Located | None:
        """Where the rows of the last ``recompute`` lie, for a table with ``cluster_by``
        (None: not known, the commit merges over the whole table)."""
        return None

    def committed(self, ranges: Ranges, rows: pa.Table) -> None:
        """Called once a step's rows are committed."""
        if self.digests is not None:
            self.digests.keep(ranges)

    def digested(
        self, ranges: Ranges, tps: list[TopicPartition], days: list[date]
    ) -> dict[TableSpec, HeldQuery]:
        """The digested inputs of ``days`` with the step's new rows folded in (none when
        the model holds no digests)."""
        if self.digests is None or not days:
            return {}
        own = positions_of(self.store.open(self.spec), tps)
        return self.digests.inputs(ranges, own, days, self.lineage, self._read_days)

    def _read_days(
        self, spec: TableSpec, columns: Sequence[str], days: list[date]
    ) -> pa.Table | TableScan:
        return self.input_rows(spec, columns, IsIn("event_date", _near(days)))

    def _raw(self, spec: TableSpec, rows: pa.Table | TableScan) -> pa.Table | TableScan:
        """Rows read of ``spec`` as they are, for the SQL: of a counted input, each
        weighing 1."""
        if spec not in self.counted:
            return rows
        if isinstance(rows, TableScan):
            return dataclasses.replace(rows, weight=WEIGHT)
        return weighed(rows)

    def input_rows(
        self, spec: TableSpec, columns: Sequence[str] | None = None, where: Predicate | None = None
    ) -> pa.Table | TableScan:
        """An input of the model's SQL, as only the SQL reads it (see ``table_input``)."""
        return table_input(self.engine, self.store.open(spec), columns, where)

    def rows_within(
        self,
        spec: TableSpec,
        column: str,
        spans: Sequence[tuple[datetime, datetime]],
        columns: Sequence[str] | None = None,
    ) -> Input:
        """An input of the rows whose ``column`` lies in any of ``spans`` (one part each)."""
        parts = [self.input_rows(spec, columns, within(column, span)) for span in spans]
        return parts[0] if len(parts) == 1 else parts

    def lineage(self, spec: TableSpec, ranges: Ranges, columns: list[str]) -> pa.Table:
        """The rows of ``spec`` whose lineage lies in ``ranges``: the new input a step
        plans on (only those rows and the keys they touch pass this process)."""
        key = ("lineage", spec.qualified, ranges_key(ranges), tuple(columns))
        return self._once(key, lambda: self.recent.lineage_rows(self.store, spec, ranges, columns))

    def touched_orders(self, ranges: Ranges) -> pa.Array:
        """order_ids of the orders and payments in ``ranges``."""
        key = ("touched_orders", ranges_key(ranges))
        return self._once(key, lambda: touched_orders(self.store, ranges, self.recent))

    def order_event_times(self, ranges: Ranges) -> pa.ChunkedArray:
        """The times of every order event of the orders touched in ``ranges``."""
        key = ("order_event_times", ranges_key(ranges))
        return self._once(key, lambda: order_event_times(self.store, self.touched_orders(ranges)))

    def _once(self, key: Hashable, read: Callable[[], T]) -> T:
        """``read()``, shared with the other models of the pass if they share one."""
        return read() if self.shared is None else self.shared.once(key, read)

    def days_in(self, inputs: Mapping[str, tuple[Input, str]]) -> list[date]:
        """The days (reporting time zone) of the timestamps in each input's column, found
        by the engine: only the days come back to this process."""
        sql = " UNION ".join(
            f"SELECT DISTINCT local_date({column}) AS day FROM {name}"
            for name, (_, column) in inputs.items()
        )
        days = self.engine.table_over(sql, {n: data for n, (data, _) in inputs.items()})["day"]
        return sorted(d for d in days.to_pylist() if d is not None)

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
        """Recompute ``days`` from silver and write them (``run --date``), for the models
        whose declaration says they rebuild days."""
        raise NotImplementedError


class OrderPaymentsModel(DerivedModel):
    """silver.orders + silver.payments → silver.order_payments, for the orders touched.

    Its rows are stored sorted by order_ts, and a step says where they lie (``located``):
    a payment comes soon after its order, so a step rewrites only the recent files."""

    _located: Located | None = None
    _moved_from: pa.Array | None = None

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        ids = self.touched_orders(ranges)
        rows, again = self._compute(ids, locate=True)
        self._located = _where_orders_lie(rows, again)
        self._moved_from = again["event_ts"].combine_chunks()
        return rows, []

    def located(self) -> Located | None:
        return self._located

    def committed(self, ranges: Ranges, rows: pa.Table) -> None:
        # fct_sales_minute takes them from memory, and the minutes an order moved from
        self.recent.record(self.spec, ranges, rows, self._moved_from)

    def compute(self, ids: pa.Array | None) -> pa.Table:
        """order_payments rows for ``ids`` (None: every order) from the silver tables."""
        return self._compute(ids, locate=False)[0]

    def _compute(self, ids: pa.Array | None, locate: bool) -> tuple[pa.Table, pa.Table]:
        """The rows, and (``locate``) the events of the orders among them placed more than
        once: a stored row's order_ts is the first of its order events seen so far, so it
        may move back in time."""
        where = None if ids is None else IsIn("order_id", ids)
        with step(f"{self.spec.qualified} read"):
            orders = self.input_rows(ORDERS, where=where)
            payments = self.input_rows(PAYMENTS, where=where)
        rows = self.engine.table_over(
            self.sql,
            {
                "orders": orders,
                "payments": payments,
                # every order: the SQL reads only the order_id column of touched_orders
                "touched_orders": orders if ids is None else pa.table({"order_id": ids}),
            },
            {"now": datetime.now(UTC)},
        )
        if not locate:
            return rows, _NO_EVENTS
        return rows, self.engine.table_over(_PLACED_AGAIN, {"orders": orders})


_PLACED_AGAIN = """
SELECT order_id, event_ts FROM orders
WHERE order_id IN (SELECT order_id FROM orders GROUP BY order_id HAVING count(*) > 1)
"""
_NO_EVENTS = pa.table({"order_id": pa.array([], pa.string()), "event_ts": pa.array([], TS)})
_LOCATE_GAP = timedelta(minutes=1)  # a step's orders a minute apart or less: one span


def order_event_times(store: TableStore, ids: pa.Array) -> pa.ChunkedArray:
    """The times of every order event of the orders ``ids``: where each order's row was
    and is, as an order placed again earlier moves back in time."""
    return store.open(ORDERS).scan(["event_ts"], IsIn("order_id", ids))["event_ts"]


def _where_orders_lie(rows: pa.Table, again: pa.Table) -> Located:
    """Where a step's order_payments rows lie, before and after: each row's order_ts, and
    for an order placed more than once, the span of its order events (its stored row's
    order_ts is one of them)."""
    tick = timedelta(microseconds=1)
    points = [(t, t + tick) for t in pc.unique(rows["order_ts"]).to_pylist()]
    bounds = again.group_by("order_id").aggregate([("event_ts", "min"), ("event_ts", "max")])
    firsts, lasts = (bounds[c].to_pylist() for c in ("event_ts_min", "event_ts_max"))
    spans = [(a, b + tick) for a, b in zip(firsts, lasts, strict=True)]
    return Located(tuple(merged_spans([*points, *spans], _LOCATE_GAP)))


class SalesMinuteModel(DerivedModel):
    """silver.order_payments → gold.fct_sales_minute, by the minutes touched."""

    uses_local_date = True  # a rebuild finds the minutes of its days

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        made = self.recent.made_of(ORDER_PAYMENTS, ranges)
        if made is not None:  # order_payments' rows for the orders of exactly these ranges
            moved = self.recent.moved_of(ORDER_PAYMENTS, ranges)
            earlier = [] if moved is None else [moved.cast(TS)]
            order_ts = pa.chunked_array([*made["order_ts"].cast(TS).chunks, *earlier], TS)
        else:
            order_ts = self.order_event_times(ranges)
        minutes = pc.unique(pc.floor_temporal(order_ts, unit="minute"))
        return self.compute(minutes), []

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
        """Recompute every minute of ``days`` (reporting time zone) and merge them."""
        spans = utc_spans(days)
        minutes = self.engine.table_over(
            _MINUTES_OF_DAYS,
            {
                "placed": self.rows_within(ORDER_PAYMENTS, "order_ts", spans, ["order_ts"]),
                "shown": self.rows_within(self.spec, "minute_bucket", spans, ["minute_bucket"]),
                "touched_days": _days_table(days),
            },
        )["minute_bucket"]
        rows = self.compute(minutes.cast(TS))
        self.decl.commit(self.store, rows, None)
        return int(rows.num_rows)

    def compute(
        self, minutes: pa.Array | None, *, order_payments: pa.Table | None = None
    ) -> pa.Table:
        """Rows for ``minutes`` (None: every minute with an order) from order_payments
        (read from silver unless given)."""
        if minutes is None:
            if order_payments is None:
                order_payments = self.store.open(ORDER_PAYMENTS).scan()
            minutes = pc.unique(pc.floor_temporal(order_payments["order_ts"], unit="minute"))
        return self.engine.table_over(
            self.sql,
            {
                "order_payments": (
                    self._order_payments_within(minutes)
                    if order_payments is None
                    else order_payments
                ),
                "rates": self.rates,
                "touched_minutes": pa.table({"minute_bucket": minutes.cast(TS)}),
            },
            {"now": datetime.now(UTC)},
        )

    def _order_payments_within(self, minutes: pa.Array) -> Input:
        """The orders placed in ``minutes``, read as spans of nearby minutes (an hour
        apart at most): a late order of last week does not make the read span the week."""
        if len(minutes) == 0:
            return ORDER_PAYMENTS.schema.empty_table()
        starts = sorted(pc.unique(minutes).to_pylist())
        spans = spans_of(starts, timedelta(minutes=1), gap=timedelta(hours=1))
        return self.rows_within(ORDER_PAYMENTS, "order_ts", spans)


# The minutes of the touched days that hold an order or a row of the table.
_MINUTES_OF_DAYS = """
SELECT DISTINCT date_trunc('minute', order_ts) AS minute_bucket FROM placed
WHERE local_date(order_ts) IN (SELECT partition_date FROM touched_days)
UNION
SELECT minute_bucket FROM shown
WHERE local_date(minute_bucket) IN (SELECT partition_date FROM touched_days)
"""


def local_dates(ts: pa.Array | pa.ChunkedArray, timezone: str) -> pa.Array | pa.ChunkedArray:
    """The calendar day of each UTC timestamp in ``timezone`` (days are cut there)."""
    return pc.local_timestamp(ts.cast(pa.timestamp("us", tz=timezone))).cast(pa.date32())


def _day_set(ts: pa.Array | pa.ChunkedArray, timezone: str) -> set[date]:
    return set(pc.unique(local_dates(ts, timezone)).to_pylist()) - {None}


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def utc_spans(days: Sequence[date]) -> list[tuple[datetime, datetime]]:
    """[start, end) spans of the UTC days that hold every instant of ``days`` (not empty),
    whatever the time zone: a query then cuts the days exactly. Days far apart (a late
    event from last month beside today's) get spans of their own, not one span between."""
    near = [_midnight(d.as_py()) for d in _near(days)]
    return spans_of(near, timedelta(days=1))


def spans_of(
    starts: Sequence[datetime], length: timedelta, gap: timedelta = timedelta(0)
) -> list[tuple[datetime, datetime]]:
    """The fewest [start, end) spans covering [s, s + length) for each of the sorted
    ``starts``, closing gaps up to ``gap`` between them."""
    return merged_spans([(start, start + length) for start in starts], gap)


def _near(days: Iterable[date]) -> pa.Array:
    """``days`` and the day either side: the UTC dates holding every instant of those
    local days, whatever the time zone."""
    return pa.array(sorted({d + timedelta(days=k) for d in days for k in (-1, 0, 1)}), pa.date32())


def _days_table(days: Iterable[date]) -> pa.Table:
    return pa.table({"partition_date": pa.array(sorted(days), pa.date32())})


class DailyModel(DerivedModel):
    """A gold table of rows per day: a step recomputes the days its new input touches
    and replaces them in one commit.

    Its declaration names the silver tables read by day (with the columns the SQL uses)
    and whether silver.order_payments is an input too. Inputs it declares digests for are
    held compacted for the days touched last (see pipeline/digests.py), unless the engine
    reads the tables itself (then no rows pass this process to hold)."""

    uses_local_date = True

    @property
    def uses_orders(self) -> bool:
        return ORDER_PAYMENTS in self.decl.inputs

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        days = sorted(self.touched_days(ranges))
        return self.compute(days, self.digested(ranges, tps, days)), days

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
        """Recompute ``days`` from silver and replace them (``run --date``)."""
        rows = self.compute(days)
        self.decl.commit(self.store, rows, None, days)
        return int(rows.num_rows)

    def touched_days(self, ranges: Ranges) -> set[date]:
        days: set[date] = set()
        for spec, _ in self.decl.reads:
            days |= _day_set(self.lineage(spec, ranges, ["event_ts"])[0], self.timezone)
        if self.uses_orders:
            days |= _day_set(self.order_event_times(ranges), self.timezone)
        return days

    def load(
        self, days: list[date], given: Mapping[TableSpec, Input] | None = None
    ) -> dict[str, Input]:
        """The model's inputs, cut to what may fall on ``days`` (those ``given`` as they
        are)."""
        given = given or {}
        tables = {
            spec.name: given[spec]
            if spec in given
            else self._raw(spec, self._read_days(spec, columns, days))
            for spec, columns in self.decl.reads
        }
        if self.uses_orders:
            tables[ORDER_PAYMENTS.name] = self._order_payments(days)
        return tables

    def load_all(self) -> tuple[dict[str, Input], list[date]]:
        """Every row of the model's inputs, and the days they fall on."""
        tables: dict[str, Input] = {
            spec.name: self._raw(spec, self.input_rows(spec, columns))
            for spec, columns in self.decl.reads
        }
        timed = {name: (rows, "event_ts") for name, rows in tables.items()}
        if self.uses_orders:
            tables[ORDER_PAYMENTS.name] = self.input_rows(ORDER_PAYMENTS)
            timed[ORDER_PAYMENTS.name] = (tables[ORDER_PAYMENTS.name], "order_ts")
        return tables, self.days_in(timed)

    def compute(
        self, days: list[date] | None, given: Mapping[TableSpec, Input] | None = None
    ) -> pa.Table:
        """Rows for ``days`` (None: every day the input has); inputs ``given`` are used
        as they are."""
        if days is None:
            tables, days = self.load_all()
        else:
            tables = self.load(days, given)
        return self.engine.table_over(
            self.sql,
            {**tables, "rates": self.rates, "touched_days": _days_table(days)},
            {"now": datetime.now(UTC)},
        )

    def _order_payments(self, days: list[date]) -> Input:
        """The orders placed in the UTC spans that hold every instant of ``days``: the SQL
        cuts the days exactly."""
        if not days:
            return ORDER_PAYMENTS.schema.empty_table()
        return self.rows_within(ORDER_PAYMENTS, "order_ts", utc_spans(days))


class ProductModel(DailyModel):
    """gold.product_analytics: per product and day, with the recommendation score.

    A product update renames or recategorises a product from its day on, so it touches
    every later day already in the table too."""

    _CATALOG: ClassVar[list[str]] = ["product_id", "name", "category", "event_id", "event_ts"]

    def touched_days(self, ranges: Ranges) -> set[date]:
        days = super().touched_days(ranges)
        updated = _day_set(self.lineage(PRODUCT_UPDATES, ranges, ["event_ts"])[0], self.timezone)
        if updated:
            later = self.input_rows(
                self.spec, ["partition_date"], Compare("partition_date", ">=", min(updated))
            )
            found = self.engine.table_over(
                "SELECT DISTINCT partition_date FROM later", {"later": later}
            )
            days |= set(found["partition_date"].to_pylist())
        return days

    def load(
        self, days: list[date], given: Mapping[TableSpec, Input] | None = None
    ) -> dict[str, Input]:
        tables = super().load(days, given)
        last = max(days, default=date.min) + timedelta(days=1)  # later updates cannot name it
        tables[PRODUCT_UPDATES.name] = self.input_rows(
            PRODUCT_UPDATES, self._CATALOG, Compare("event_date", "<=", last)
        )
        return tables

    def load_all(self) -> tuple[dict[str, Input], list[date]]:
        tables, days = super().load_all()
        tables[PRODUCT_UPDATES.name] = self.input_rows(PRODUCT_UPDATES, self._CATALOG)
        return tables, days


class CustomerAnalyticsModel(DerivedModel):
    """gold.daily_customer_analytics: a customer's value to date changes every later day
    they are active, so a step recomputes the touched customers from the earliest day
    touched on, and merges those rows. Its declaration's reads are the activity tables,
    held as day digests of every customer's sessions (the step takes the touched
    customers' rows of them)."""

    uses_local_date = True

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        seen = [self.lineage(spec, ranges, ["user_id", "event_ts"]) for spec, _ in self.decl.reads]
        ids = self.touched_orders(ranges)
        paid = self.store.open(ORDER_PAYMENTS).scan(["user_id", "order_ts"], IsIn("order_id", ids))
        seen.append(paid.select(["user_id", "order_ts"]).rename_columns(["user_id", "event_ts"]))
        touched = pa.concat_tables(seen, promote_options="permissive")
        rows = self.spec.schema.empty_table()
        if touched.num_rows:
            days = _day_set(touched["event_ts"], self.timezone)
            given = self.digested(ranges, tps, self._days_on(min(days), max(days)))
            rows = self.compute(pc.unique(touched["user_id"]), min(days), given)
        return rows, []

    def _days_on(self, first: date, last_touched: date) -> list[date]:
        """The days from ``first`` on a touched customer may have a row on: through the
        later of the last day touched and the table's last day (an event changes the
        customer's value to date on every later day they were active)."""
        later = self.store.open(self.spec).scan(
            ["partition_date"], Compare("partition_date", ">", last_touched)
        )
        last = max([last_touched, *pc.unique(later["partition_date"]).to_pylist()])
        return [first + timedelta(days=k) for k in range((last - first).days + 1)]

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
        """Recompute everyone's rows of ``days`` and replace those days whole."""
        rows = self.compute(None, min(days))
        rows = rows.filter(pc.is_in(rows["partition_date"], value_set=pa.array(days, pa.date32())))
        self.store.replace(self.spec, rows, self.decl.partition, days)
        return int(rows.num_rows)

    def compute(
        self,
        users: pa.Array | None,
        from_day: date | None = None,
        given: Mapping[TableSpec, HeldQuery] | None = None,
    ) -> pa.Table:
        """Rows of ``users`` (None: everyone) for the days from ``from_day`` on; inputs
        ``given`` (digests of those days) are taken the users' rows of."""
        tables: dict[str, Input] = {}
        for spec, columns in self.decl.reads:
            if given and spec in given:
                if users is None:
                    tables[spec.name] = given[spec]
                else:  # the users' rows of the digests the engine holds
                    tables[spec.name] = self.engine.table_over(
                        "SELECT d.* FROM digest d SEMI JOIN users u"
                        " ON d.user_id IS NOT DISTINCT FROM u.user_id",
                        {"digest": given[spec], "users": pa.table({"user_id": users})},
                    )
                continue
            where = all_of(
                None
                if from_day is None
                else Compare("event_date", ">=", from_day - timedelta(days=1)),
                None if users is None else IsIn("user_id", users),
            )
            tables[spec.name] = self._raw(spec, self.input_rows(spec, columns, where))
        tables[ORDER_PAYMENTS.name] = self.input_rows(
            ORDER_PAYMENTS, where=None if users is None else IsIn("user_id", users)
        )
        return self.engine.table_over(
            self.sql,
            {**tables, "rates": self.rates},
            {"now": datetime.now(UTC), "from_day": from_day or date.min},
        )
