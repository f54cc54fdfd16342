"""Every gold mart and dimension on one small shop whose answers were worked out by hand.

Reporting in USD (EUR 1.08, GBP 1.27), days in UTC. The day is 10 March 2026; Bob's only
order was on 15 January. Customers: Alice (High Value), Bob (At Risk), Carol (New), Dan
(Regular), Erin (failed payment), Frank (refunded) and Grace (only browsing) are Prospects
when they have no paid order.
"""

from __future__ import annotations

import os
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shoplake.pipeline.reconcile import current_gold, recomputed_gold
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from tests.conftest import SHOPLAKE, feed, rows
from tests.unit.test_events import event

D1 = "2026-03-10"
D0 = "2026-01-15"
_ids = iter(range(1, 10_000))


def _event(kind: str, ts: str, user: str | None, session: str | None, **fields: Any) -> Any:
    return event(
        kind,
        event_id=fields.pop("event_id", f"{kind}-{next(_ids)}"),
        timestamp=ts,
        user_id=user,
        session_id=session,
        device="desktop",
        country="US",
        **fields,
    )


def view(
    ts: str,
    user: str,
    page_type: str,
    source: str,
    product: str | None = None,
    session: str | None = None,
) -> Any:
    return _event(
        "page_view",
        ts,
        user,
        session or f"s-{user}",
        page_type=page_type,
        page_url=f"/{page_type}",
        product_id=product,
        category={"P1": "books", "P2": "home", "P3": "toys"}.get(product or ""),
        traffic_source=source,
    )


def cart(ts: str, user: str, kind: str, product: str, qty: int, price: float) -> Any:
    category = {"P1": "books", "P2": "home", "P3": "toys"}[product]
    return _event(
        kind,
        ts,
        user,
        f"s-{user}",
        product_id=product,
        category=category,
        quantity=qty,
        unit_price=price,
        currency="USD",
    )


def purchase(
    ts: str,
    user: str,
    order_id: str,
    lines: list[tuple[str, int, float]],
    cur: str,
    session: str | None = None,
    event_id: str | None = None,
) -> Any:
    categories = {"P1": "books", "P2": "home", "P3": "toys"}
    items = [
        {"product_id": p, "category": categories[p], "quantity": q, "unit_price": u}
        for p, q, u in lines
    ]
    return _event(
        "purchase",
        ts,
        user,
        session or f"s-{user}",
        event_id=event_id or f"purchase-{order_id}",
        order_id=order_id,
        items=items,
        total_amount=sum(q * u for _, q, u in lines),
        currency=cur,
        payment_method="card",
    )


def pay(ts: str, user: str, order_id: str, status: str, cents: int, cur: str) -> Any:
    return _event(
        "payment",
        ts,
        user,
        None,
        payment_id=f"pay-{order_id}",
        order_id=order_id,
        amount_cents=cents,
        currency=cur,
        status=status,
    )


def catalog(ts: str, product: str, name: str, category: str, kind: str) -> Any:
    return _event(
        "product_update",
        ts,
        None,
        None,
        product_id=product,
        name=name,
        category=category,
        price=10.0,
        currency="USD",
        inventory=100,
        update_type=kind,
    )


def t(clock: str, day: str = D1) -> str:
    return f"{day}T{clock}:00Z"


IN_ORDER: list[Any] = [
    # Bob, 15 January: one order of 100 EUR, paid
    view(t("11:50", D0), "bob", "product", "email", "P1", session="s-bob0"),
    purchase(t("12:00", D0), "bob", "B0", [("P1", 10, 10.0)], "EUR", session="s-bob0"),
    pay(t("12:01", D0), "bob", "B0", "captured", 10000, "EUR"),
    catalog(t("08:00", "2026-03-01"), "P1", "Atlas", "books", "new_product"),
    catalog(t("08:00", "2026-03-01"), "P2", "Lamp", "home", "new_product"),
    view(t("09:00"), "bob", "product", "email", "P1"),
    _event("user_session", t("09:59"), "alice", "s-alice", action="login"),
    view(t("10:00"), "alice", "home", "paid"),
    view(t("10:02"), "alice", "product", "organic", "P2"),
    cart(t("10:03"), "alice", "add_to_cart", "P2", 24, 25.0),
    view(t("10:04"), "alice", "checkout", "direct"),
    purchase(t("10:05"), "alice", "A1", [("P2", 24, 25.0)], "USD"),
    pay(t("10:06"), "alice", "A1", "captured", 60000, "USD"),
    view(t("10:50"), "carol", "product", "social", "P1"),
    view(t("10:55"), "carol", "checkout", "social"),
    purchase(t("11:00"), "carol", "C1", [("P1", 5, 10.0)], "GBP", event_id="c1"),
    purchase(t("11:00"), "carol", "C1", [("P1", 5, 10.0)], "GBP", event_id="c1"),  # again
    pay(t("11:01"), "carol", "C1", "captured", 5000, "GBP"),
    view(t("11:50"), "dan", "product", "organic", "P3"),
    cart(t("11:55"), "dan", "add_to_cart", "P3", 2, 10.0),
    purchase(t("12:00"), "dan", "D1a", [("P3", 2, 10.0)], "USD"),
    catalog(t("12:00"), "P1", "Atlas 2nd ed", "books", "price_change"),
    pay(t("12:01"), "dan", "D1a", "captured", 2000, "USD"),
    view(t("12:20"), "dan", "checkout", "organic"),
    purchase(t("12:30"), "dan", "D1b", [("P1", 1, 10.0), ("P3", 2, 10.0)], "USD"),
    pay(t("12:31"), "dan", "D1b", "captured", 3000, "USD"),
    view(t("12:50"), "erin", "product", "direct", "P2"),
    cart(t("12:52"), "erin", "add_to_cart", "P2", 1, 80.0),
    cart(t("12:53"), "erin", "remove_from_cart", "P2", 1, 80.0),
    cart(t("12:54"), "erin", "add_to_cart", "P2", 1, 80.0),
    purchase(t("13:00"), "erin", "E1", [("P2", 1, 80.0)], "USD"),
    pay(t("13:01"), "erin", "E1", "failed", 8000, "USD"),
    view(t("13:50"), "frank", "product", "paid", "P1"),
    purchase(t("14:00"), "frank", "F1", [("P1", 4, 10.0)], "USD"),
    pay(t("14:01"), "frank", "F1", "captured", 4000, "USD"),
    pay(t("14:30"), "frank", "F1", "refunded", 4000, "USD"),
    {**view(t("15:00"), "grace", "home", "direct"), "event_id": "grace-1"},
    {**view(t("15:00"), "grace", "home", "direct"), "event_id": "grace-1"},  # again
    catalog(t("08:00", "2026-03-11"), "P2", "Lamp Pro", "home", "price_change"),
]
# Sent after everything: 14 minutes and more behind its partition, so late.
LATE = [view(t("09:50"), "alice", "home", "paid")]
BAD = [
    {**view(t("16:00"), "zed", "home", "direct"), "country": "Narnia"},
    b"not json at all",
]
SHOP = [*IN_ORDER, *LATE, *BAD]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = Settings(home=tmp_path_factory.mktemp("shop") / "home")
    feed(settings, SHOP)
    pipeline = Pipeline(settings)
    pipeline.run("both", until_idle=True)
    yield pipeline
    pipeline.close()


def table(pipeline: Pipeline, name: str, order: str) -> list[dict[str, Any]]:
    volatile = "processed_ts" if name.startswith("gold.") else "updated_ts"
    found = rows(pipeline, f"SELECT * EXCLUDE ({volatile}) FROM {name} ORDER BY {order}")
    for r in found:
        if "partition_date" in r:
            r["partition_date"] = str(r["partition_date"])
    return found


def test_daily_sales_summary(shop: Pipeline) -> None:
    assert table(shop, "gold.daily_sales_summary", "partition_date") == [
        {
            "partition_date": D0,
            "orders_placed": 1,
            "gross_revenue": Decimal("108.00"),
            "paid_orders": 1,
            "total_revenue": Decimal("108.00"),
            "visitors": 1,
            "purchasers": 1,
            "conversion_rate": Decimal("1.000000"),
            "avg_order_value": Decimal("108.00"),
        },
        {
            "partition_date": D1,
            "orders_placed": 6,
            "gross_revenue": Decimal("833.50"),  # 600 + 50 GBP→63.50 + 20 + 30 + 80 + 40
            "paid_orders": 4,  # A1 C1 D1a D1b: E1 failed, F1 refunded
            "total_revenue": Decimal("713.50"),
            "visitors": 7,  # zed's view was quarantined
            "purchasers": 5,
            "conversion_rate": Decimal("0.714286"),
            "avg_order_value": Decimal("178.38"),  # 713.50 / 4 = 178.375
        },
    ]


def _source(name: str, *counts: int, revenue: str, rate: str, day: str = D1) -> dict[str, Any]:
    keys = ("sessions", "visitors", "purchasers", "orders_placed", "paid_orders")
    return {
        "partition_date": day,
        "traffic_source": name,
        **dict(zip(keys, counts, strict=True)),
        "revenue": Decimal(revenue),
        "conversion_rate": Decimal(rate),
    }


def test_daily_traffic_sources(shop: Pipeline) -> None:
    # A session's source is its first view of the day: Alice's late 09:50 view ('paid').
    assert table(shop, "gold.daily_traffic_sources", "partition_date, traffic_source") == [
        _source("email", 1, 1, 1, 1, 1, revenue="108.00", rate="1.000000", day=D0),
        _source("direct", 2, 2, 1, 1, 0, revenue="0.00", rate="0.500000"),  # Erin, Grace
        _source("email", 1, 1, 0, 0, 0, revenue="0.00", rate="0E-6"),  # Bob browsing
        _source("organic", 1, 1, 1, 2, 2, revenue="50.00", rate="1.000000"),  # Dan
        _source("paid", 2, 2, 2, 2, 1, revenue="600.00", rate="1.000000"),  # Alice, Frank
        _source("social", 1, 1, 1, 1, 1, revenue="63.50", rate="1.000000"),  # Carol
    ]


def test_funnel_daily(shop: Pipeline) -> None:
    assert table(shop, "gold.funnel_daily", "partition_date") == [
        {
            "partition_date": D0,
            "sessions": 1,
            "product_view_sessions": 1,
            "cart_sessions": 0,
            "checkout_sessions": 0,
            "purchase_sessions": 1,
            "product_view_rate": Decimal("1.000000"),
            "cart_rate": Decimal("0E-6"),
            "checkout_rate": Decimal("0E-6"),
            "purchase_rate": Decimal("1.000000"),
        },
        {
            "partition_date": D1,
            "sessions": 7,
            "product_view_sessions": 6,  # all but Grace's
            "cart_sessions": 3,  # Alice, Dan, Erin
            "checkout_sessions": 3,  # Alice, Carol, Dan
            "purchase_sessions": 5,
            "product_view_rate": Decimal("0.857143"),
            "cart_rate": Decimal("0.428571"),
            "checkout_rate": Decimal("0.428571"),
            "purchase_rate": Decimal("0.714286"),
        },
    ]


def test_category_performance(shop: Pipeline) -> None:
    got = table(shop, "gold.category_performance", "partition_date, category")
    assert [
        (r["partition_date"], r["category"], r["orders"], r["units_sold"], r["revenue"])
        for r in got
    ] == [
        (D0, "books", 1, 10, Decimal("108.00")),
        (D1, "books", 2, 6, Decimal("73.50")),  # C1 5 × 10 GBP → 63.50, D1b 10.00
        (D1, "home", 1, 24, Decimal("600.00")),  # A1 (E1 was not paid)
        (D1, "toys", 2, 4, Decimal("40.00")),  # D1a, D1b
    ]


def test_product_analytics(shop: Pipeline) -> None:
    got = table(shop, "gold.product_analytics", "partition_date, product_id")
    columns = (
        "product_name", "category", "total_views", "cart_adds", "cart_removes",
        "total_purchases", "units_sold", "revenue", "conversion_rate", "recommendation_score",
    )  # fmt: skip
    assert [(r["partition_date"], r["product_id"], *(r[c] for c in columns)) for r in got] == [
        # no catalog entry yet on 15 January; 2/11 × ln(109)
        (D0, "P1", None, "books", 1, 0, 0, 1, 10, Decimal("108.00"), Decimal("1.000000"),
         Decimal("0.852972")),
        # renamed at noon that day; 4/13 × ln(74.50)
        (D1, "P1", "Atlas 2nd ed", "books", 3, 0, 0, 3, 6, Decimal("73.50"), Decimal("1.000000"),
         Decimal("1.326400")),
        # renamed the next day, which does not reach back; 3/12 × ln(601)
        (D1, "P2", "Lamp", "home", 2, 3, 1, 2, 24, Decimal("600.00"), Decimal("1.000000"),
         Decimal("1.599649")),
        # never in the catalog; 3/11 × ln(41)
        (D1, "P3", None, "toys", 1, 1, 0, 2, 4, Decimal("40.00"), Decimal("2.000000"),
         Decimal("1.012792")),
    ]  # fmt: skip


def test_daily_customer_analytics(shop: Pipeline) -> None:
    got = table(shop, "gold.daily_customer_analytics", "partition_date, user_id")
    columns = (
        "customer_segment", "lifetime_value", "paid_orders", "total_spent", "sessions",
        "page_views", "cart_adds", "avg_order_value",
    )  # fmt: skip
    assert [(r["partition_date"], r["user_id"], *(r[c] for c in columns)) for r in got] == [
        (D0, "bob", "New", Decimal("108.00"), 1, Decimal("108.00"), 1, 1, 0, Decimal("108.00")),
        (D1, "alice", "High Value", Decimal("600.00"), 1, Decimal("600.00"), 1, 4, 1,
         Decimal("600.00")),
        (D1, "bob", "At Risk", Decimal("108.00"), 1, Decimal("0.00"), 1, 1, 0, Decimal("108.00")),
        (D1, "carol", "New", Decimal("63.50"), 1, Decimal("63.50"), 1, 2, 0, Decimal("63.50")),
        (D1, "dan", "Regular", Decimal("50.00"), 2, Decimal("50.00"), 1, 2, 1, Decimal("25.00")),
        (D1, "erin", "Prospect", Decimal("0.00"), 0, Decimal("0.00"), 1, 1, 2, Decimal("0.00")),
        (D1, "frank", "Prospect", Decimal("0.00"), 0, Decimal("0.00"), 1, 1, 0, Decimal("0.00")),
        (D1, "grace", "Prospect", Decimal("0.00"), 0, Decimal("0.00"), 1, 1, 0, Decimal("0.00")),
    ]  # fmt: skip
    dan = next(r for r in got if r["user_id"] == "dan")
    assert (dan["first_order_ts"].isoformat(), dan["last_order_ts"].isoformat()) == (
        "2026-03-10T12:00:00+00:00",
        "2026-03-10T12:30:00+00:00",
    )


def test_dimensions(shop: Pipeline) -> None:
    products = table(shop, "silver.dim_products", "product_id")
    columns = ("product_id", "name", "category", "last_update_type")
    assert [tuple(p[c] for c in columns) for p in products] == [
        ("P1", "Atlas 2nd ed", "books", "price_change"),
        ("P2", "Lamp Pro", "home", "price_change"),
    ]  # fmt: skip
    customers = {c["user_id"]: c for c in table(shop, "silver.dim_customers", "user_id")}
    assert sorted(customers) == ["alice", "bob", "carol", "dan", "erin", "frank", "grace"]
    alice = customers["alice"]
    assert alice["first_seen_ts"].isoformat() == "2026-03-10T09:50:00+00:00"  # the late view
    assert alice["last_seen_ts"].isoformat() == "2026-03-10T10:05:00+00:00"
    assert (alice["country"], alice["device"], alice["orders_placed"]) == ("US", "desktop", 1)
    assert customers["bob"]["last_order_ts"].isoformat() == "2026-01-15T12:00:00+00:00"
    day = rows(shop, "SELECT * FROM silver.dim_date WHERE date = DATE '2026-03-10'")
    assert day == [
        {
            "date_key": 20260310, "date": day[0]["date"], "year": 2026, "quarter": 1,
            "month": 3, "month_name": "March", "day_of_month": 10, "day_of_week": 2,
            "day_name": "Tuesday", "iso_week": 11, "is_weekend": False,
        }
    ]  # fmt: skip
    assert rows(shop, "SELECT count(*) AS n FROM silver.dim_date") == [{"n": 18263}]


def test_data_quality_report(shop: Pipeline) -> None:
    # Everything arrived today: sum over days in case the test straddles midnight.
    got = rows(
        shop,
        "SELECT table_name, sum(rows_in) AS rows_in, sum(rows_valid) AS valid, "
        "sum(rows_quarantined) AS quarantined, max(quarantine_reasons) AS reasons, "
        "sum(duplicates_dropped) AS duplicates, sum(late_events) AS late "
        "FROM gold.data_quality_report GROUP BY table_name ORDER BY table_name",
    )
    as_tuples = [tuple(r.values()) for r in got]
    assert as_tuples == [
        ("cart_events", 5, 5, 0, "{}", 0, 0),
        ("orders", 8, 7, 0, "{}", 1, 0),
        ("page_views", 15, 13, 1, '{"bad_value": 1}', 1, 1),
        ("payments", 8, 8, 0, "{}", 0, 0),
        ("product_updates", 4, 4, 0, "{}", 0, 0),
        ("unknown", 1, 0, 1, '{"invalid_json": 1}', 0, 0),
        ("user_sessions", 1, 1, 0, "{}", 0, 0),
    ]
    late = rows(shop, "SELECT event_ts FROM silver.page_views WHERE is_late")
    assert [r["event_ts"].isoformat() for r in late] == ["2026-03-10T09:50:00+00:00"]


def test_reconciliation(shop: Pipeline) -> None:
    """Checks a user can run: gold agrees with silver, and every bronze record is accounted for."""
    [gmv] = rows(shop, "SELECT sum(gmv) AS v FROM gold.fct_sales_minute")
    [paid] = rows(
        shop,
        "SELECT sum(round(total_amount * CASE currency WHEN 'EUR' THEN 1.08 "
        "WHEN 'GBP' THEN 1.27 ELSE 1 END, 2)) AS v FROM silver.order_payments WHERE fully_paid",
    )
    assert gmv["v"] == paid["v"] == Decimal("821.50")
    [counts] = rows(
        shop,
        "SELECT (SELECT count(*) FROM bronze.raw_events) AS bronze, "
        "(SELECT count(*) FROM silver.page_views) + (SELECT count(*) FROM silver.cart_events)"
        " + (SELECT count(*) FROM silver.orders) + (SELECT count(*) FROM silver.payments)"
        " + (SELECT count(*) FROM silver.user_sessions)"
        " + (SELECT count(*) FROM silver.product_updates) AS valid, "
        "(SELECT count(*) FROM silver.quarantine) AS quarantined, "
        "(SELECT count(*) FROM silver.duplicates) AS duplicates",
    )
    assert counts == {"bronze": 42, "valid": 38, "quarantined": 2, "duplicates": 2}
    assert current_gold(shop.store) == recomputed_gold(shop.store, shop.settings.reporting)


def test_rebuilding_a_day_in_another_currency(tmp_path: Path) -> None:
    """`run --job gold --date` recomputes that day from silver and leaves the others."""
    home = tmp_path / "home"
    feed(Settings(home=home), SHOP)
    env = {**os.environ, "SHOPLAKE_HOME": str(home)}
    subprocess.run([*SHOPLAKE, "run", "--until-idle"], env=env, check=True, capture_output=True)
    eur = {**env, "SHOPLAKE_REPORTING__CURRENCY": "EUR"}
    done = subprocess.run(
        [*SHOPLAKE, "run", "--job", "gold", "--date", D1],
        env=eur,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "rebuilt 1 day(s)" in done.stderr
    wrong = subprocess.run(
        [*SHOPLAKE, "run", "--date", D1], env=env, capture_output=True, text=True
    )
    assert wrong.returncode == 2 and "--job gold" in wrong.stderr
    p = Pipeline(Settings(home=home))
    got = rows(p, "SELECT partition_date, total_revenue FROM gold.daily_sales_summary ORDER BY 1")
    p.close()
    # per order: 600/1.08 = 555.56, 50 GBP × 1.27/1.08 = 58.80, 20/1.08 = 18.52, 30/1.08 = 27.78
    assert [(str(r["partition_date"]), r["total_revenue"]) for r in got] == [
        (D0, Decimal("108.00")),  # untouched: still USD
        (D1, Decimal("660.66")),
    ]


def test_a_late_order_after_a_restart_updates_the_customers_later_days(tmp_path: Path) -> None:
    """A process that holds no digests yet takes a step with only a late paid order of a
    day before: the customer's value to date changes on their later active days too."""
    settings = Settings(home=tmp_path / "home")
    d2 = "2026-03-11"
    feed(settings, [view(t("09:00", day), "hal", "home", "direct") for day in (D1, d2)])
    first = Pipeline(settings)
    first.run("both", until_idle=True)
    first.close()
    late = [purchase(t("10:00"), "hal", "H1", [("P1", 3, 10.0)], "USD"),
            pay(t("10:01"), "hal", "H1", "captured", 3000, "USD")]  # fmt: skip
    feed(settings, late)
    again = Pipeline(settings)  # a new process: nothing held
    again.run("both", until_idle=True)
    got = table(again, "gold.daily_customer_analytics", "partition_date")
    assert [(r["partition_date"], r["lifetime_value"], r["paid_orders"]) for r in got] == [
        (D1, Decimal("30.00"), 1),
        (d2, Decimal("30.00"), 1),
    ]
    assert current_gold(again.store) == recomputed_gold(again.store, again.settings.reporting)
    again.close()
