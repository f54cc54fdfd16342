"""gold.fct_sales_minute on a small dataset whose answer was worked out by hand."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from shoplake.contract.tables import ORDER_PAYMENTS
from shoplake.pipeline.reconcile import current_gold, recomputed_gold
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.tables.delta import DeltaHandle, DeltaStore
from tests.conftest import feed, rows

_ids = iter(range(1, 10_000))


def order(
    order_id: str, ts: str, total: str, currency: str, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"ev-{next(_ids)}",
        "event_type": "purchase",
        "timestamp": ts,
        "user_id": f"user-{order_id}",
        "session_id": f"s-{order_id}",
        "order_id": order_id,
        "items": [
            {"product_id": "P1", "category": "books", "quantity": 1, "unit_price": float(total)}
        ],
        "total_amount": float(total),
        "currency": currency,
        "payment_method": "card",
    }


def payment(
    order_id: str, status: str, cents: int, currency: str, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"ev-{next(_ids)}",
        "event_type": "payment",
        "timestamp": "2026-02-01T11:00:00Z",
        "user_id": f"user-{order_id}",
        "payment_id": f"pay-{order_id}",
        "order_id": order_id,
        "amount_cents": cents,
        "currency": currency,
        "status": status,
    }


FIRST_BATCH: list[Any] = [
    payment("O8", "captured", 4000, "USD"),  # arrives before its order
    order("O1", "2026-02-01T10:00:15Z", "100.00", "USD"),
    payment("O1", "authorized", 10000, "USD"),
    payment("O1", "captured", 10000, "USD"),
    order("O2", "2026-02-01T10:00:40+01:00", "50.00", "EUR"),  # 09:00:40 UTC
    payment("O2", "captured", 5000, "EUR"),
    order("O3", "2026-02-01T10:00:59Z", "1234", "JPY"),
    payment("O3", "captured", 123400, "JPY"),
    order("O4", "2026-02-01T10:01:05Z", "80.00", "GBP"),
    payment("O4", "failed", 8000, "GBP"),
    payment("O4", "captured", 4000, "GBP"),  # half: not paid
    order("O5", "2026-02-01T10:01:30Z", "30.00", "USD"),
    payment("O5", "captured", 3000, "USD"),
    payment("O5", "refunded", 3000, "USD"),  # refunded: not paid
    order("O6", "2026-02-01T10:02:00Z", "20.00", "CAD"),
    payment("O6", "captured", 1999, "CAD"),  # within the cent of tolerance: paid
    order("O7", "2026-02-01T10:02:30Z", "10.00", "USD"),
    payment("O7", "captured", 500, "USD", event_id="dup-pay"),
    payment("O7", "captured", 500, "USD", event_id="dup-pay"),  # the same event twice
    order("O8", "2026-02-01T10:02:45Z", "40.00", "USD"),
    order("O9", "2026-02-01T10:03:00Z", "25.00", "USD", event_id="dup-order"),
    order("O9", "2026-02-01T10:03:00Z", "25.00", "USD", event_id="dup-order"),
    payment("O9", "captured", 2500, "USD"),
    {**order("BAD", "2026-02-01T10:03:30Z", "5.00", "USD"), "total_amount": -5},
    b'{"event_type": "purchase", "order_id": "TRUNC',
]

EXPECTED_FIRST = [
    ("2026-02-01 09:00", Decimal("54.00"), 1),  # 50 EUR × 1.08
    ("2026-02-01 10:00", Decimal("108.27"), 2),  # 100 USD + 1234 JPY × 0.0067 = 8.2678 → 8.27
    ("2026-02-01 10:02", Decimal("54.60"), 2),  # 20 CAD × 0.73 + 40 USD
    ("2026-02-01 10:03", Decimal("25.00"), 1),  # the duplicate order counts once
]

SECOND_BATCH: list[Any] = [
    payment("O4", "captured", 4000, "GBP"),  # now fully paid: 80 GBP × 1.27
    payment("O1", "refunded", 10000, "USD"),  # O1 no longer paid
    payment("O2", "refunded", 5000, "EUR"),  # 09:00 loses its only paid order
]

EXPECTED_SECOND = [
    ("2026-02-01 10:00", Decimal("8.27"), 1),
    ("2026-02-01 10:01", Decimal("101.60"), 1),
    ("2026-02-01 10:02", Decimal("54.60"), 2),
    ("2026-02-01 10:03", Decimal("25.00"), 1),
]


def sales(pipeline: Pipeline) -> list[tuple[str, Decimal, int]]:
    return [
        (r["m"], r["gmv"], r["paid_orders"])
        for r in rows(
            pipeline,
            "SELECT strftime(minute_bucket, '%Y-%m-%d %H:%M') AS m, gmv, paid_orders "
            "FROM gold.fct_sales_minute ORDER BY minute_bucket",
        )
    ]


def test_hand_checked_minutes_then_an_incremental_update(
    settings: Settings, pipeline: Pipeline
) -> None:
    feed(settings, FIRST_BATCH)
    pipeline.run("both", until_idle=True)
    assert sales(pipeline) == EXPECTED_FIRST

    paid = rows(
        pipeline, "SELECT order_id, paid_amount, fully_paid FROM silver.order_payments ORDER BY 1"
    )
    assert {r["order_id"]: (r["paid_amount"], r["fully_paid"]) for r in paid} == {
        "O1": (Decimal("100.00"), True),
        "O2": (Decimal("50.00"), True),
        "O3": (Decimal("1234.00"), True),
        "O4": (Decimal("40.00"), False),
        "O5": (Decimal("0.00"), False),
        "O6": (Decimal("19.99"), True),
        "O7": (Decimal("5.00"), False),
        "O8": (Decimal("40.00"), True),
        "O9": (Decimal("25.00"), True),
    }
    reasons = rows(pipeline, "SELECT reason FROM silver.quarantine ORDER BY reason")
    assert [r["reason"] for r in reasons] == ["invalid_json", "negative_amount"]

    feed(settings, SECOND_BATCH)
    pipeline.run("both", until_idle=True)
    assert sales(pipeline) == EXPECTED_SECOND
    assert current_gold(pipeline.store) == recomputed_gold(pipeline.store, settings.reporting)


def test_replaying_changes_nothing(settings: Settings, pipeline: Pipeline) -> None:
    feed(settings, FIRST_BATCH)
    pipeline.run("both", until_idle=True)
    versions = {t.name: t.version for t in _tables(pipeline)}
    pipeline.run("both", until_idle=True)  # nothing new: no commit anywhere
    assert {t.name: t.version for t in _tables(pipeline)} == versions
    assert sales(pipeline) == EXPECTED_FIRST


def test_reporting_in_another_currency(tmp_path: Any) -> None:
    settings = Settings(home=tmp_path / "eur", reporting={"currency": "EUR"})
    feed(
        settings,
        [
            order("E1", "2026-02-01T10:00:00Z", "10.80", "USD"),
            payment("E1", "captured", 1080, "USD"),
        ],
    )
    p = Pipeline(settings)
    p.run("both", until_idle=True)
    assert sales(p) == [("2026-02-01 10:00", Decimal("10.00"), 1)]  # 10.80 USD / 1.08
    p.close()


def _tables(pipeline: Pipeline) -> list[Any]:
    from shoplake.query import Lakehouse

    return Lakehouse(pipeline.settings, pipeline.store).tables()


def test_a_late_order_beside_todays_reads_only_the_orders_near_each(
    settings: Settings, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A late order from a month ago and one of today, in one round: the models read the
    orders near each (their minutes, their days), not the month of orders between."""
    month = [
        e
        for day in range(1, 29)
        for e in (
            order(f"M{day}", f"2026-02-{day:02d}T12:00:00Z", "10.00", "USD"),
            payment(f"M{day}", "captured", 1000, "USD"),
        )
    ]
    feed(settings, month)
    pipeline.run("both", until_idle=True)
    reads: list[int] = []
    scan, rewrite = DeltaHandle.scan, DeltaStore._rewrite_spans
    writing: list[bool] = []  # the store reading the files it rewrites: no model reads that

    def metered(self: DeltaHandle, columns: Any = None, where: Any = None) -> pa.Table:
        got = scan(self, columns, where)
        if self._spec is ORDER_PAYMENTS and not writing:
            reads.append(got.num_rows)
        return got

    def unmetered(self: DeltaStore, *args: Any) -> None:
        writing.append(True)
        try:
            rewrite(self, *args)
        finally:
            writing.pop()

    monkeypatch.setattr(DeltaHandle, "scan", metered)
    monkeypatch.setattr(DeltaStore, "_rewrite_spans", unmetered)
    feed(settings, [order("LATE", "2026-02-01T12:30:00Z", "7.00", "USD"),
                    payment("LATE", "captured", 700, "USD"),
                    order("NOW", "2026-02-28T12:30:00Z", "9.00", "USD"),
                    payment("NOW", "captured", 900, "USD")])  # fmt: skip
    pipeline.run("both", until_idle=True)
    assert reads and max(reads) <= 8  # the orders of Feb 1-2 and 27-28 at most, of 30
    assert current_gold(pipeline.store) == recomputed_gold(pipeline.store, settings.reporting)
    by_minute = {m: (gmv, n) for m, gmv, n in sales(pipeline)}
    assert by_minute["2026-02-01 12:30"] == (Decimal("7.00"), 1)
    assert by_minute["2026-02-28 12:30"] == (Decimal("9.00"), 1)


def test_an_order_placed_again_earlier_moves_its_row_not_doubles_it(
    settings: Settings, pipeline: Pipeline
) -> None:
    """order_payments is rewritten only near each round's orders (TableSpec.cluster_by).
    An order placed a second time with an earlier timestamp moves its row back in time:
    the row at its old time, in a file of its own, is still replaced, and the minute and
    day it leaves are recomputed too."""
    feed(settings, [order("TWICE", "2026-02-02T00:30:00Z", "10.00", "USD"),
                    payment("TWICE", "captured", 1000, "USD")])  # fmt: skip
    pipeline.run("both", until_idle=True)
    feed(settings, [order("OTHER", "2026-02-01T08:00:00Z", "5.00", "USD")])
    pipeline.run("both", until_idle=True)
    feed(settings, [order("TWICE", "2026-02-01T23:00:00Z", "10.00", "USD")])  # the first wins
    pipeline.run("both", until_idle=True)
    placed = rows(
        pipeline,
        "SELECT order_id, strftime(order_ts, '%d %H:%M') AS at FROM silver.order_payments "
        "ORDER BY 1",
    )
    assert [(r["order_id"], r["at"]) for r in placed] == [
        ("OTHER", "01 08:00"),
        ("TWICE", "01 23:00"),
    ]
    assert sales(pipeline) == [("2026-02-01 23:00", Decimal("10.00"), 1)]  # not 2 Feb too
    days = rows(pipeline, "SELECT partition_date, orders_placed FROM gold.daily_sales_summary")
    assert [(str(r["partition_date"]), r["orders_placed"]) for r in days] == [("2026-02-01", 2)]
    assert current_gold(pipeline.store) == recomputed_gold(pipeline.store, settings.reporting)
