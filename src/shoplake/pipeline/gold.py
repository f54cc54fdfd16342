"""Gold models: silver → gold, recomputing only the keys new input touches.

gold.fct_sales_minute records the bronze positions it has consumed (through
silver.order_payments). A step takes the silver orders and payments in the new
bronze range, finds the minutes of the orders they touch, recomputes exactly those
minutes from silver.order_payments and merges them in; a minute left with no paid
order is deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import FCT_SALES_MINUTE, ORDER_PAYMENTS, TS
from shoplake.engines.duckdb import DuckDB
from shoplake.pipeline.models import load_model
from shoplake.pipeline.positions import to_app_ids
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
            to_app_ids({tp: end for tp, (_, end) in ranges.items()}),
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
        eng = self.engine
        eng.register("order_payments", order_payments)
        eng.register("rates", self.rates)
        eng.register("touched_minutes", pa.table({"minute_bucket": minutes.cast(TS)}))
        try:
            return eng.table(self.sql, {"now": datetime.now(UTC)})
        finally:
            for name in ("order_payments", "rates", "touched_minutes"):
                eng.unregister(name)

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
