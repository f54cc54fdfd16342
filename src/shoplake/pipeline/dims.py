"""The star schema's dimensions: silver.dim_customers, dim_products and dim_date.

dim_customers and dim_products hold one row per key, recomputed from the silver events
for the keys new input touches and merged in; dim_date is a fixed calendar.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import (
    DIM_CUSTOMERS,
    DIM_DATE,
    ORDERS,
    PRODUCT_UPDATES,
    TableSpec,
)
from shoplake.pipeline.gold import DerivedModel
from shoplake.pipeline.positions import LINEAGE, Ranges, in_ranges
from shoplake.tables.base import IsIn, TableStore
from shoplake.transport.base import TopicPartition

if TYPE_CHECKING:
    from shoplake.engines.base import Input


class KeyedModel(DerivedModel):
    """A table of one row per key: a step recomputes the keys the new input touches from
    all of their history and merges them in. Subclasses give the SQL its input tables."""

    touched: ClassVar[str]  # the name the SQL model reads the touched keys under

    @property
    def key(self) -> str:
        (key,) = self.decl.keys
        return key

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        keys = [self.lineage(s, ranges, [self.key])[self.key] for s in self.decl.inputs]
        touched = pc.drop_null(pc.unique(pa.chunked_array(keys, pa.string())))
        return self.compute(touched), []

    def compute(self, keys: pa.Array | None) -> pa.Table:
        """Rows for ``keys`` (None: every key)."""
        raise NotImplementedError

    def _read(self, spec: TableSpec, columns: list[str], keys: pa.Array | None) -> Input:
        return self.input_rows(spec, columns, None if keys is None else IsIn(self.key, keys))

    def _run(self, inputs: dict[str, Input], keys: pa.Array | None, first: str) -> pa.Table:
        """The SQL over ``inputs``, for ``keys`` (None: every key in input ``first``, which
        the SQL then reads as the touched keys too: it reads only their key column)."""
        touched = inputs[first] if keys is None else pa.table({self.key: keys})
        return self.engine.table_over(
            self.sql, {**inputs, self.touched: touched}, {"now": datetime.now(UTC)}
        )


class DimProductsModel(KeyedModel):
    """silver.product_updates → silver.dim_products (current state of each product)."""

    touched = "touched_products"

    def compute(self, keys: pa.Array | None) -> pa.Table:
        updates = self._read(PRODUCT_UPDATES, list(PRODUCT_UPDATES.schema.names), keys)
        return self._run({"product_updates": updates}, keys, "product_updates")


class DimCustomersModel(KeyedModel):
    """Every event of a customer → silver.dim_customers (first/last seen, country, device).

    A step folds its new events into the customers' rows where that is exact (see
    ``fold_customers``); the other customers are recomputed from all of their history, as
    every customer was before: with a few thousand customers each step touches nearly
    all of them, and their history grows without end."""

    touched = "touched_users"
    _SEEN: ClassVar[list[str]] = ["user_id", "event_id", "event_ts", "country", "device"]
    _PLACED: ClassVar[list[str]] = ["user_id", "order_id", "event_ts"]

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        new = {  # the orders' rows read once: they are seen events and placed orders
            s: self.lineage(s, ranges, [*self._SEEN, "order_id"] if s is ORDERS else self._SEEN)
            for s in self.decl.inputs
        }
        seen = pa.concat_tables([rows.select(self._SEEN) for rows in new.values()])
        seen = seen.filter(pc.is_valid(seen["user_id"]))
        placed = new[ORDERS].select(self._PLACED)
        placed = placed.filter(pc.is_valid(placed["user_id"]))
        users = pc.unique(seen["user_id"])
        before = self.store.open(self.spec).scan(where=IsIn("user_id", users))
        folded, redo = fold_customers(
            before, seen, placed, self._placed_again(placed, ranges), datetime.now(UTC)
        )
        if redo:
            redone = self.compute(pa.array(redo, pa.string())).select(folded.column_names)
            folded = pa.concat_tables([folded, redone.cast(folded.schema)])
        return folded, []

    def _placed_again(self, placed: pa.Table, ranges: Ranges) -> set[str]:
        """Customers of the new orders whose order_id has another order event, outside
        ``ranges``: counted already, or to count once."""
        ids = pc.unique(placed["order_id"])
        if len(ids) == 0:
            return set()
        events = self.store.open(ORDERS).scan([*LINEAGE, "order_id"], IsIn("order_id", ids))
        elsewhere = pc.unique(events.filter(pc.invert(in_ranges(events, ranges)))["order_id"])
        again = placed.filter(pc.is_in(placed["order_id"], value_set=elsewhere))
        return set(again["user_id"].to_pylist())

    def compute(self, keys: pa.Array | None) -> pa.Table:
        seen = [self._read(s, self._SEEN, keys) for s in self.decl.inputs]
        orders = self._read(ORDERS, self._PLACED, keys)
        return self._run({"seen": seen, "orders": orders}, keys, "seen")


def fold_customers(
    before: pa.Table, seen: pa.Table, placed: pa.Table, again: set[str], now: datetime
) -> tuple[pa.Table, list[str]]:
    """dim_customers rows ``before`` with new events ``seen`` (user_id, event_id, event_ts,
    country, device) and new orders ``placed`` (user_id, order_id, event_ts) folded in,
    and the customers whose rows cannot be, to recompute:

    - those in ``again`` (a new order's id was placed before: it must count once);
    - those with a new order at or before their row's last_seen_ts (a recompute may have
      read it already, beyond the ranges it consumed);
    - those with a new event at or before last_seen_ts that carries another country or
      device than the row's (it may or may not be later than the event that set it).

    Every other new event is later than anything in the row, or changes nothing in it."""
    rows = {r["user_id"]: r for r in before.to_pylist()}
    redo = set(again) | _late(placed, before) | _late(seen, before, contradicting=True)
    spans = seen.group_by("user_id").aggregate([("event_ts", "min"), ("event_ts", "max")])
    latest = {c: _latest(seen, c) for c in ("country", "device")}
    orders = {
        r["user_id"]: r
        for r in placed.group_by("user_id")
        .aggregate([("order_id", "count_distinct"), ("event_ts", "min"), ("event_ts", "max")])
        .to_pylist()
    }
    folded = []
    for span in spans.to_pylist():
        user = span["user_id"]
        if user in redo:
            continue
        old = rows.get(user)
        row = old or {
            "user_id": user, "country": None, "device": None, "first_seen_ts": span["event_ts_min"],
            "last_seen_ts": span["event_ts_max"], "orders_placed": 0, "first_order_ts": None,
            "last_order_ts": None,
        }  # fmt: skip
        later = span["event_ts_max"] > row["last_seen_ts"]
        row["first_seen_ts"] = min(row["first_seen_ts"], span["event_ts_min"])
        row["last_seen_ts"] = max(row["last_seen_ts"], span["event_ts_max"])
        for column, values in latest.items():
            if later or old is None:  # else the new ones agree with the row (see above)
                row[column] = values.get(user, row[column])
        new = orders.get(user)
        if new is not None:  # later than any order in the row
            row["orders_placed"] += new["order_id_count_distinct"]
            row["first_order_ts"] = row["first_order_ts"] or new["event_ts_min"]
            row["last_order_ts"] = new["event_ts_max"]
        row["updated_ts"] = now
        folded.append(row)
    return pa.Table.from_pylist(folded, schema=DIM_CUSTOMERS.schema), sorted(redo)


def _late(events: pa.Table, before: pa.Table, *, contradicting: bool = False) -> set[str]:
    """Customers with one of ``events`` at or before their row's last_seen_ts (with
    ``contradicting``: only such events carrying another country or device)."""
    rows = before.select(["user_id", "last_seen_ts", "country", "device"]).rename_columns(
        ["user_id", "row_last_seen", "row_country", "row_device"]
    )
    late = events.join(rows, "user_id", join_type="inner")
    late = late.filter(pc.less_equal(late["event_ts"], late["row_last_seen"]))
    if contradicting:
        other = [
            pc.and_(
                pc.is_valid(late[c]),
                pc.fill_null(pc.not_equal(late[c], late[f"row_{c}"]), True),
            )
            for c in ("country", "device")
        ]
        late = late.filter(pc.or_(*other))
    return set(late["user_id"].to_pylist())


def _latest(seen: pa.Table, column: str) -> dict[str, str]:
    """Each customer's ``column`` on their latest event that carries one (latest by
    event_ts, then event_id, as the SQL orders them)."""
    carrying = seen.filter(pc.is_valid(seen[column])).sort_by(
        [("user_id", "ascending"), ("event_ts", "descending"), ("event_id", "descending")]
    )
    firsts = carrying.group_by("user_id", use_threads=False).aggregate([(column, "first")])
    return dict(
        zip(firsts["user_id"].to_pylist(), firsts[f"{column}_first"].to_pylist(), strict=True)
    )


# dim_date spans these years: wide enough for any shop's history and plans.
CALENDAR_YEARS = (2000, 2049)


def calendar_rows(first: date, last: date) -> pa.Table:
    """dim_date rows from ``first`` to ``last`` inclusive (ISO weeks, Monday = 1)."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    iso = [d.isocalendar() for d in days]
    return pa.table(
        {
            "date_key": [d.year * 10000 + d.month * 100 + d.day for d in days],
            "date": days,
            "year": [d.year for d in days],
            "quarter": [(d.month - 1) // 3 + 1 for d in days],
            "month": [d.month for d in days],
            "month_name": [calendar.month_name[d.month] for d in days],
            "day_of_month": [d.day for d in days],
            "day_of_week": [c.weekday for c in iso],
            "day_name": [calendar.day_name[d.weekday()] for d in days],
            "iso_week": [c.week for c in iso],
            "is_weekend": [c.weekday >= 6 for c in iso],
        }
    ).cast(DIM_DATE.schema)


def ensure_dim_date(store: TableStore) -> None:
    """Create silver.dim_date with the calendar, once."""
    if store.exists(DIM_DATE) and store.open(DIM_DATE).count() > 0:
        return
    store.ensure(DIM_DATE)
    first, last = CALENDAR_YEARS
    store.append(DIM_DATE, calendar_rows(date(first, 1, 1), date(last, 12, 31)))
