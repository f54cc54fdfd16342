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

from shoplake.contract.tables import DIM_DATE, ORDERS, PRODUCT_UPDATES, TableSpec
from shoplake.pipeline.gold import DerivedModel
from shoplake.pipeline.positions import Ranges
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
    """Every event of a customer → silver.dim_customers (first/last seen, country, device)."""

    touched = "touched_users"
    _SEEN: ClassVar[list[str]] = ["user_id", "event_id", "event_ts", "country", "device"]

    def compute(self, keys: pa.Array | None) -> pa.Table:
        seen = [self._read(s, self._SEEN, keys) for s in self.decl.inputs]
        orders = self._read(ORDERS, ["user_id", "order_id", "event_ts"], keys)
        return self._run({"seen": seen, "orders": orders}, keys, "seen")


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
