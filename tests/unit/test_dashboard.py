"""The dashboard's API on the hand-built shop of test_gold_marts, and on an empty home."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import shoplake.dashboard
from shoplake.gateway.app import create_app
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport import open_transport
from tests.conftest import feed
from tests.unit.test_gold_marts import D1, SHOP


def client_for(settings: Settings) -> Iterator[TestClient]:
    transport, store = open_transport(settings), open_store(settings)
    yield TestClient(create_app(settings, transport, store=store))
    transport.close()
    store.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path_factory.mktemp("dash") / "home")
    feed(settings, SHOP)
    pipeline = Pipeline(settings)
    pipeline.run("both", until_idle=True)
    pipeline.close()
    yield from client_for(settings)


@pytest.fixture
def empty_home(tmp_path: Path) -> Iterator[TestClient]:
    yield from client_for(Settings(home=tmp_path / "home"))


def test_kpis_of_a_day_are_its_gold_figures(shop: TestClient) -> None:
    k = shop.get("/api/kpis", params={"day": D1}).json()
    assert k["day"] == D1 and k["currency"] == "USD" and k["message"] is None
    c = k["current"]
    # amounts and rates are exact decimals, sent as strings
    assert (c["revenue"], c["paid_orders"], c["visitors"]) == ("713.50", 4, 7)
    assert (c["conversion_rate"], c["avg_order_value"]) == ("0.714286", "178.38")
    assert k["previous"] is None  # nothing on the day before


def test_funnel_categories_products_and_segments(shop: TestClient) -> None:
    (f,) = shop.get("/api/funnel", params={"day": D1}).json()["rows"]
    assert (f["sessions"], f["cart_sessions"], f["purchase_sessions"]) == (7, 3, 5)
    cats = shop.get("/api/categories", params={"day": D1}).json()["rows"]
    assert [(c["category"], c["revenue"]) for c in cats] == [
        ("home", "600.00"),
        ("books", "73.50"),
        ("toys", "40.00"),
    ]
    products = shop.get("/api/products", params={"day": D1, "limit": 3}).json()["rows"]
    scores = [float(p["recommendation_score"]) for p in products]
    assert len(products) == 3 and scores == sorted(scores, reverse=True)
    segments = shop.get("/api/segments", params={"day": D1}).json()["rows"]
    assert sum(s["customers"] for s in segments) == 7  # the day's active customers


def test_quality_totals_count_every_record(shop: TestClient) -> None:
    # by day of arrival in the reporting time zone (UTC here), not the machine's local day
    today = datetime.now(UTC).date().isoformat()
    q = shop.get("/api/quality", params={"day": today}).json()
    assert q["totals"] == {
        "rows_in": 42,
        "quarantined": 2,
        "duplicates": 2,
        "late": 1,
        "reasons": {"bad_value": 1, "invalid_json": 1},
    }


def test_a_window_without_orders_is_an_empty_chart_with_a_message(shop: TestClient) -> None:
    gmv = shop.get("/api/gmv", params={"minutes": 60}).json()  # the shop's orders are in March
    assert gmv == {"rows": [], "message": "No paid orders in the last 60 minutes."}


def test_health_reports_commits_and_lag(shop: TestClient) -> None:
    h = shop.get("/api/health").json()
    assert (h["lag"], h["runtime"]) == (0, None)  # all read; no pipeline in this process
    assert set(h["freshness_s"]) == {"bronze", "silver", "gold"}
    # committed by the module's fixture, moments ago (not None, not in the future)
    assert all(0 <= age < 600 for age in h["freshness_s"].values()), h


@pytest.mark.parametrize(
    "path", ["/api/kpis", "/api/gmv", "/api/funnel", "/api/products", "/api/categories",
             "/api/segments", "/api/quality", "/api/health"],
)  # fmt: skip
def test_missing_tables_give_messages_not_errors(empty_home: TestClient, path: str) -> None:
    r = empty_home.get(path)
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    if path == "/api/health":
        nothing = {"bronze": None, "silver": None, "gold": None}
        assert body == {"freshness_s": nothing, "lag": 0, "runtime": None}
    elif path == "/api/kpis":
        today = datetime.now(UTC).date().isoformat()  # the reporting time zone's day
        assert body["message"] == f"No sales for {today} yet." and body["current"] is None
    else:
        assert body["message"] == "No data yet: the pipeline has not written this table."
        assert body["rows"] == []


def test_the_page_and_its_assets_are_served_locally(empty_home: TestClient) -> None:
    page = empty_home.get("/")
    assert page.status_code == 200 and "/static/plotly.min.js" in page.text
    assert "cdn" not in page.text.lower()
    plotly = empty_home.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    static = Path(shoplake.dashboard.__file__).parent / "static"
    for name in ("app.js", "style.css"):  # the files themselves, not just a 200
        asset = empty_home.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.content == (static / name).read_bytes()
    assert empty_home.get("/static/index.html").status_code == 404


@pytest.mark.parametrize("day", ["0", "1700000000", "2026-3-1", "yesterday"])
def test_a_day_is_yyyy_mm_dd_or_422(empty_home: TestClient, day: str) -> None:
    # pydantic alone reads a number as a Unix time: ?day=0 answered for 1970-01-01
    assert empty_home.get("/api/kpis", params={"day": day}).status_code == 422
    assert empty_home.get("/api/kpis", params={"day": "2026-03-01"}).status_code == 200
