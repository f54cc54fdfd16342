"""gold.daily_sales_summary on the hand-checked dataset, in two reporting time zones."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shoplake.pipeline.reconcile import current_gold, recomputed_gold
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from tests.conftest import feed, rows
from tests.unit.test_events import event
from tests.unit.test_gold_sales_minute import FIRST_BATCH

VIEWS = [
    event("page_view", event_id="v1", user_id="user-O1", timestamp="2026-02-01T08:00:00Z"),
    event("page_view", event_id="v2", user_id="user-O2", timestamp="2026-02-01T08:05:00Z"),
    event("page_view", event_id="v3", user_id="V1", timestamp="2026-02-01T12:00:00Z"),
    event("page_view", event_id="v4", user_id="V1", timestamp="2026-02-01T12:01:00Z"),
    event("page_view", event_id="v5", user_id="V2", timestamp="2026-02-01T13:00:00Z"),
    # 22:30 UTC: still 1 February in UTC, already 2 February in Tokyo
    event("page_view", event_id="v6", user_id="V3", timestamp="2026-02-02T00:30:00+02:00"),
    event("page_view", event_id="v7", user_id="V4", timestamp="2026-02-02T10:00:00Z"),
]

# Orders O1–O9 (O9 sent twice) are all placed on 1 February, 09:00–10:03 UTC (18:00–19:03
# in Tokyo). Converted and rounded per order: O1 100.00, O2 54.00, O3 8.27, O4 101.60,
# O5 30.00, O6 14.60, O7 10.00, O8 40.00, O9 25.00 → gross 383.47. Paid: O1 O2 O3 O6 O8
# O9 → 241.87, average 241.87 / 6 = 40.3116… → 40.31. Nine different users placed them.
SALES_DAY = {
    "orders_placed": 9,
    "gross_revenue": Decimal("383.47"),
    "paid_orders": 6,
    "total_revenue": Decimal("241.87"),
    "purchasers": 9,
    "avg_order_value": Decimal("40.31"),
}
QUIET_DAY = {
    "orders_placed": 0,
    "gross_revenue": Decimal("0.00"),
    "paid_orders": 0,
    "total_revenue": Decimal("0.00"),
    "purchasers": 0,
    "avg_order_value": Decimal("0.00"),
}


@pytest.mark.parametrize(
    ("timezone", "expected"),
    [
        (
            "UTC",
            {
                "2026-02-01": {**SALES_DAY, "visitors": 5, "conversion_rate": Decimal("1.800000")},
                "2026-02-02": {**QUIET_DAY, "visitors": 1, "conversion_rate": Decimal("0E-6")},
            },
        ),
        (
            "Asia/Tokyo",
            {
                "2026-02-01": {**SALES_DAY, "visitors": 4, "conversion_rate": Decimal("2.250000")},
                "2026-02-02": {**QUIET_DAY, "visitors": 2, "conversion_rate": Decimal("0E-6")},
            },
        ),
    ],
)
def test_daily_sales_summary(tmp_path: Path, timezone: str, expected: dict[str, Any]) -> None:
    settings = Settings(home=tmp_path / "home", reporting={"timezone": timezone})
    feed(settings, [*FIRST_BATCH, *VIEWS])
    pipeline = Pipeline(settings)
    pipeline.run("both", until_idle=True)
    got = {
        str(r.pop("partition_date")): r
        for r in rows(
            pipeline,
            "SELECT * EXCLUDE (processed_ts) FROM gold.daily_sales_summary ORDER BY 1",
        )
    }
    assert got == expected
    assert current_gold(pipeline.store) == recomputed_gold(pipeline.store, settings.reporting)
    pipeline.close()
