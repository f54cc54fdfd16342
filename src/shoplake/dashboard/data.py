"""What the dashboard shows, read from the gold tables (and the pipeline's state).

Every panel is one query; a table that does not exist yet, or has no rows for the day,
gives an empty panel with a message instead of an error.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shoplake.errors import ShoplakeError
from shoplake.pipeline.ingest import bronze_lag
from shoplake.query import Lakehouse
from shoplake.settings import Settings
from shoplake.tables.base import TableStore
from shoplake.transport.base import Transport

Panel = dict[str, Any]


def _panel(rows: list[dict[str, Any]], empty: str, **extra: Any) -> Panel:
    return {"rows": rows, "message": None if rows else empty, **extra}


class DashboardData:
    def __init__(
        self, settings: Settings, store: TableStore, transport: Transport | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        self.lakehouse = Lakehouse(settings, store)
        self.zone = ZoneInfo(settings.reporting.timezone)

    def today(self) -> date:
        return datetime.now(self.zone).date()

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]] | str:
        """Rows of ``sql`` ($day etc. bound as query parameters), or why there are none."""
        try:
            return list(self.lakehouse.query(sql, params=params).to_pylist())
        except ShoplakeError as exc:
            if "unknown table" in str(exc):
                return "No data yet: the pipeline has not written this table."
            raise

    def _panel(self, sql: str, empty: str, **params: Any) -> Panel:
        rows = self._rows(sql, params)
        if isinstance(rows, str):
            return _panel([], rows)
        return _panel(rows, empty)

    # -- panels ----------------------------------------------------------------
    def kpis(self, day: date) -> Panel:
        """Revenue, paid orders, conversion, AOV and visitors of ``day`` and the day before."""
        panel = self._panel(
            """
            SELECT partition_date, total_revenue AS revenue, paid_orders, conversion_rate,
                   avg_order_value, visitors, orders_placed
            FROM gold.daily_sales_summary
            WHERE partition_date IN (CAST($day AS DATE), CAST($day AS DATE) - 1)
            ORDER BY partition_date DESC
            """,
            f"No sales summary for {day} yet.",
            day=day,
        )
        rows = panel["rows"]
        current = next((r for r in rows if r["partition_date"] == day), None)
        previous = next((r for r in rows if r["partition_date"] != day), None)
        return {
            "day": day.isoformat(),
            "currency": self.settings.reporting.currency,
            "current": current,
            "previous": previous,
            "message": None if current else f"No sales for {day} yet.",
        }

    def gmv_per_minute(self, minutes: int = 60) -> Panel:
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        return self._panel(
            """
            SELECT minute_bucket, gmv, paid_orders FROM gold.fct_sales_minute
            WHERE minute_bucket >= CAST($since AS TIMESTAMPTZ) ORDER BY minute_bucket
            """,
            f"No paid orders in the last {minutes} minutes.",
            since=since,
        )

    def funnel(self, day: date) -> Panel:
        return self._panel(
            """
            SELECT sessions, product_view_sessions, cart_sessions, checkout_sessions,
                   purchase_sessions
            FROM gold.funnel_daily WHERE partition_date = CAST($day AS DATE)
            """,
            f"No sessions on {day} yet.",
            day=day,
        )

    def top_products(self, day: date, limit: int = 10) -> Panel:
        return self._panel(
            """
            SELECT product_id, product_name, category, total_views, total_purchases,
                   revenue, recommendation_score
            FROM gold.product_analytics WHERE partition_date = CAST($day AS DATE)
            ORDER BY recommendation_score DESC, revenue DESC, product_id LIMIT $limit
            """,
            f"No product activity on {day} yet.",
            day=day,
            limit=int(limit),
        )

    def categories(self, day: date) -> Panel:
        return self._panel(
            """
            SELECT category, orders, units_sold, revenue FROM gold.category_performance
            WHERE partition_date = CAST($day AS DATE) ORDER BY revenue DESC, category
            """,
            f"No paid orders by category on {day} yet.",
            day=day,
        )

    def segments(self, day: date) -> Panel:
        return self._panel(
            """
            SELECT customer_segment AS segment, count(*) AS customers,
                   sum(total_spent) AS total_spent
            FROM gold.daily_customer_analytics WHERE partition_date = CAST($day AS DATE)
            GROUP BY 1 ORDER BY customers DESC, segment
            """,
            f"No active customers on {day} yet.",
            day=day,
        )

    def quality(self, day: date) -> Panel:
        panel = self._panel(
            """
            SELECT table_name, rows_in, rows_valid, rows_quarantined, quarantine_reasons,
                   duplicates_dropped, late_events
            FROM gold.data_quality_report WHERE partition_date = CAST($day AS DATE)
            ORDER BY table_name
            """,
            f"Nothing arrived on {day} yet.",
            day=day,
        )
        reasons: dict[str, int] = {}
        for row in panel["rows"]:
            for reason, n in json.loads(row["quarantine_reasons"]).items():
                reasons[reason] = reasons.get(reason, 0) + int(n)
        panel["totals"] = {
            "rows_in": sum(r["rows_in"] for r in panel["rows"]),
            "quarantined": sum(r["rows_quarantined"] for r in panel["rows"]),
            "duplicates": sum(r["duplicates_dropped"] for r in panel["rows"]),
            "late": sum(r["late_events"] for r in panel["rows"]),
            "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        }
        return panel

    def freshness(self) -> dict[str, float | None]:
        return self.lakehouse.commit_ages()

    def lag(self) -> int | None:
        """Records in the transport not in bronze yet (None without a transport)."""
        if self.transport is None:
            return None
        ends = self.transport.end_offsets()
        return sum(bronze_lag(self.store, ends, self.settings.pipeline.consumer_group).values())
