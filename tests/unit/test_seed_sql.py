"""Every query printed in the seeds (000: Trino over Delta; 001 and 002: Spark over
Iceberg) runs verbatim through `shoplake query`, with rows that mean what the seed says.
Plus the query command's ways in: a file, stdin, a leading `--` comment, a dialect."""

# ruff: noqa: E501, W291  (the seeds' queries, verbatim: long lines, trailing spaces)
from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from shoplake.cli import QUERY_DIALECTS, cli
from shoplake.contract.tables import ALL_TABLES
from shoplake.errors import QueryError
from shoplake.query import DIALECTS, Lakehouse
from shoplake.seed_names import SEED_COLUMNS
from shoplake.settings import Settings
from tests.conftest import SHOPLAKE

# (seed, the query as the seed prints it, trailing spaces and all)
SEED_QUERIES = {
    # seed 000: Trino CLI
    "000-recent-sales": "SELECT * FROM delta.gold.fct_sales_minute ORDER BY minute_bucket DESC LIMIT 10;",
    "000-payment-status": """-- Check order payment status
SELECT order_id, total_amount, paid_amount, fully_paid 
FROM delta.silver.order_payments_enriched 
WHERE fully_paid = true;""",
    # seed 001: spark.sql(...) in a Spark shell
    "001-show-tables": "SHOW TABLES IN local",
    "001-bronze-count": "SELECT COUNT(*) FROM local.bronze_events",
    "001-page-view-count": "SELECT COUNT(*) FROM local.silver_page_views",
    # seed 002: spark.sql(...) in a Spark shell
    "002-show-bronze": "SHOW TABLES IN iceberg.bronze",
    "002-events-by-type": "SELECT event_type, COUNT(*) as count FROM iceberg.bronze.raw_events GROUP BY event_type",
    "002-bronze-sample": "SELECT * FROM iceberg.bronze.raw_events LIMIT 3",
    "002-show-silver": "SHOW TABLES IN iceberg.silver",
    "002-page-views": "SELECT COUNT(*) as page_views FROM iceberg.silver.page_views",
    "002-purchases": "SELECT COUNT(*) as purchases FROM iceberg.silver.purchases",
    "002-cart-events": "SELECT COUNT(*) as cart_events FROM iceberg.silver.cart_events",
    "002-user-sessions": "SELECT COUNT(*) as user_sessions FROM iceberg.silver.user_sessions",
    "002-product-updates": "SELECT COUNT(*) as product_updates FROM iceberg.silver.product_updates",
    "002-page-view-sample": "SELECT user_id, page_type, device_type FROM iceberg.silver.page_views LIMIT 5",
    "002-purchase-sample": "SELECT user_id, total_amount, payment_method FROM iceberg.silver.purchases LIMIT 5",
    "002-customer-analytics": """-- Connect to Spark and query (using new table structure):
SELECT
    customer_segment,
    COUNT(*) as customer_count,
    AVG(lifetime_value) as avg_ltv,
    AVG(total_spent) as avg_spent
FROM iceberg.gold.daily_customer_analytics
WHERE partition_date = CURRENT_DATE
GROUP BY customer_segment;""",
    "002-sales-summary": """SELECT
    partition_date,
    total_revenue,
    total_transactions,
    conversion_rate,
    avg_order_value
FROM iceberg.gold.daily_sales_summary
ORDER BY partition_date DESC
LIMIT 7;""",
    "002-product-analytics": """SELECT
    product_id,
    product_name,
    total_views,
    total_purchases,
    conversion_rate,
    recommendation_score
FROM iceberg.gold.product_analytics
WHERE partition_date = CURRENT_DATE
ORDER BY recommendation_score DESC
LIMIT 10;""",
    "002-lineage": """-- Verify medallion architecture data flow:

-- Bronze → Silver data lineage
SELECT
    'bronze' as layer,
    event_type,
    COUNT(*) as record_count,
    MAX(processing_time) as latest_processing
FROM iceberg.bronze.raw_events
GROUP BY event_type

UNION ALL

SELECT
    'silver' as layer,
    'page_view' as event_type,
    COUNT(*) as record_count,
    MAX(processing_time) as latest_processing
FROM iceberg.silver.page_views

UNION ALL

SELECT
    'silver' as layer,
    'purchase' as event_type,
    COUNT(*) as record_count,
    MAX(processing_time) as latest_processing
FROM iceberg.silver.purchases;""",
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shop whose simulated day is today (the seeds filter on CURRENT_DATE), processed."""
    home = tmp_path_factory.mktemp("seed-sql") / "home"
    env = {"SHOPLAKE_HOME": str(home), "PATH": "/usr/bin:/bin"}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for args in (
        ["generate", "-n", "6000", "--seed", "4", "--start", today, "--to", "embedded"],
        ["run", "--until-idle"],
    ):
        subprocess.run([*SHOPLAKE, *args], env=env, check=True, capture_output=True)
    return home


def query(home: Path, *args: str, stdin: str | None = None) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["--home", str(home), "query", "--json", *args], input=stdin)
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.output.splitlines()]


def dec(number: float | str) -> Decimal:
    """A money figure of the JSON output, exactly as printed."""
    return Decimal(str(number))


def lake(home: Path, sql: str) -> list[dict[str, Any]]:
    return Lakehouse(Settings(home=home)).query(sql).to_pylist()


@pytest.mark.parametrize("name", SEED_QUERIES)
def test_every_seed_query_runs_verbatim(home: Path, name: str) -> None:
    rows = query(home, SEED_QUERIES[name])
    assert rows, f"{name} returned no rows"
    check = SENSIBLE.get(name)
    if check:
        check(home, rows)


def _counts_are(table: str) -> Any:
    def check(home: Path, rows: list[dict[str, Any]]) -> None:
        (count,) = rows[0].values()
        assert count == lake(home, f"SELECT count(*) AS n FROM {table}")[0]["n"] > 0

    return check


def _recent_sales(home: Path, rows: list[dict[str, Any]]) -> None:
    ours = lake(home, "SELECT * FROM gold.fct_sales_minute ORDER BY minute_bucket DESC LIMIT 10")
    assert [r["minute_bucket"] for r in rows] == [r["minute_bucket"].isoformat() for r in ours]
    assert [dec(r["gmv"]) for r in rows] == [r["gmv"] for r in ours]


def _payment_status(home: Path, rows: list[dict[str, Any]]) -> None:
    assert all(r["fully_paid"] for r in rows)
    assert (
        len(rows)
        == lake(home, "SELECT count(*) n FROM silver.order_payments WHERE fully_paid")[0]["n"]
    )


def _show_local(home: Path, rows: list[dict[str, Any]]) -> None:
    names = {r["tableName"] for r in rows}
    assert {"bronze_events", "silver_page_views", "silver_purchases"} <= names
    assert {"gold_daily_sales_summary", "gold_product_analytics"} <= names
    assert {r["namespace"] for r in rows} == {"local"}


def _show(layer: str, expected: set[str]) -> Any:
    def check(home: Path, rows: list[dict[str, Any]]) -> None:
        assert expected <= {r["tableName"] for r in rows}
        assert {r["namespace"] for r in rows} == {f"iceberg.{layer}"}

    return check


def _events_by_type(home: Path, rows: list[dict[str, Any]]) -> None:
    ours = lake(home, "SELECT event_type, count(*) AS n FROM bronze.raw_events GROUP BY 1")
    assert {r["event_type"]: r["count"] for r in rows} == {r["event_type"]: r["n"] for r in ours}


def _bronze_sample(home: Path, rows: list[dict[str, Any]]) -> None:
    assert len(rows) == 3
    assert {"raw_value", "topic", "offset", "processing_time"} <= rows[0].keys()
    assert all(r["processing_time"] == r["ingest_ts"] for r in rows)


def _page_view_sample(home: Path, rows: list[dict[str, Any]]) -> None:
    assert len(rows) == 5
    assert all(r["device_type"] in ("desktop", "mobile", "tablet") for r in rows)
    assert all(r["page_type"] and r["user_id"] for r in rows)


def _purchase_sample(home: Path, rows: list[dict[str, Any]]) -> None:
    assert len(rows) == 5
    assert all(dec(r["total_amount"]) >= 0 and r["payment_method"] for r in rows)


def _customer_analytics(home: Path, rows: list[dict[str, Any]]) -> None:
    segments = {"At Risk", "High Value", "New", "Regular", "Prospect"}
    assert {r["customer_segment"] for r in rows} <= segments
    ours = lake(
        home,
        "SELECT count(*) AS n FROM gold.daily_customer_analytics "
        "WHERE partition_date = CURRENT_DATE",
    )
    assert sum(r["customer_count"] for r in rows) == ours[0]["n"] > 0
    # total_spent: that day's paid revenue, never more than the value to date
    assert all(dec(r["avg_spent"]) <= dec(r["avg_ltv"]) for r in rows)


def _sales_summary(home: Path, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        # total_transactions: the paid orders avg_order_value divides by
        if r["total_transactions"]:
            aov = dec(r["total_revenue"]) / r["total_transactions"]
            assert abs(aov - dec(r["avg_order_value"])) < Decimal("0.01")
    assert [r["partition_date"] for r in rows] == sorted(
        (r["partition_date"] for r in rows), reverse=True
    )


def _product_analytics(home: Path, rows: list[dict[str, Any]]) -> None:
    scores = [float(r["recommendation_score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and len(rows) <= 10
    assert all(r["product_name"] for r in rows)


def _lineage(home: Path, rows: list[dict[str, Any]]) -> None:
    silver = {r["event_type"]: r for r in rows if r["layer"] == "silver"}
    assert (
        silver["page_view"]["record_count"]
        == lake(home, "SELECT count(*) n FROM silver.page_views")[0]["n"]
    )
    assert (
        silver["purchase"]["record_count"]
        == lake(home, "SELECT count(*) n FROM silver.orders")[0]["n"]
    )
    bronze = [r for r in rows if r["layer"] == "bronze"]
    # silver writes after bronze took the records in
    assert silver["page_view"]["latest_processing"] >= min(r["latest_processing"] for r in bronze)


SENSIBLE = {
    "000-recent-sales": _recent_sales,
    "000-payment-status": _payment_status,
    "001-show-tables": _show_local,
    "001-bronze-count": _counts_are("bronze.raw_events"),
    "001-page-view-count": _counts_are("silver.page_views"),
    "002-show-bronze": _show("bronze", {"raw_events"}),
    "002-events-by-type": _events_by_type,
    "002-bronze-sample": _bronze_sample,
    "002-show-silver": _show(
        "silver",
        {"page_views", "purchases", "cart_events", "user_sessions", "product_updates"},
    ),
    "002-page-views": _counts_are("silver.page_views"),
    "002-purchases": _counts_are("silver.orders"),
    "002-cart-events": _counts_are("silver.cart_events"),
    "002-user-sessions": _counts_are("silver.user_sessions"),
    "002-product-updates": _counts_are("silver.product_updates"),
    "002-page-view-sample": _page_view_sample,
    "002-purchase-sample": _purchase_sample,
    "002-customer-analytics": _customer_analytics,
    "002-sales-summary": _sales_summary,
    "002-product-analytics": _product_analytics,
    "002-lineage": _lineage,
}


def test_the_seed_names_carry_the_seed_columns(home: Path) -> None:
    # seed 000's orders_clean: the items array rebuilt from order_items, and a status
    orders = lake(
        home,
        "SELECT o.order_id, o.status, o.items, o.item_count, p.fully_paid "
        "FROM silver.orders_clean o JOIN silver.order_payments p USING (order_id)",
    )
    assert orders
    for o in orders:
        assert len(o["items"]) == o["item_count"]
        assert o["status"] == "paid" if o["fully_paid"] else o["status"] != "paid"
    lines = lake(home, "SELECT count(*) n, sum(quantity) q FROM silver.order_items")[0]
    flat = lake(home, "SELECT count(*) n, sum(i.quantity) q FROM (SELECT unnest(items) i "
                "FROM delta.silver.orders_clean)")[0]  # fmt: skip
    assert flat == lines
    # seed 000's bronze_raw: one topic's records each
    raw = lake(home, "SELECT DISTINCT topic FROM bronze_raw.payments_raw")
    assert raw == [{"topic": "payments"}]
    # shoplake's own names stay exactly the tables
    with pytest.raises(QueryError, match="device_type"):
        lake(home, "SELECT device_type FROM silver.page_views")


def test_seed_003_marts_add_up_to_gold(home: Path) -> None:
    perf = lake(home, "SELECT * FROM gold.sales_performance ORDER BY partition_date")
    summary = lake(home, "SELECT * FROM gold.daily_sales_summary ORDER BY partition_date")
    assert [p["total_revenue"] for p in perf] == [s["total_revenue"] for s in summary]
    assert perf[-1]["cumulative_revenue"] == sum(s["total_revenue"] for s in summary)
    # the day's minutes in fct_sales_minute add up to the day's revenue; the peak is one
    for p in perf:
        if p["paid_orders"]:
            assert p["peak_minute_gmv"] <= p["total_revenue"]
    minutes = lake(home, "SELECT sum(gmv) s FROM gold.fct_sales_minute")[0]["s"]
    assert minutes == sum(s["total_revenue"] for s in summary)
    sales = lake(
        home,
        "SELECT sale_date, category, sum(revenue) r, sum(quantity) q FROM gold.select_sales "
        "GROUP BY ALL ORDER BY ALL",
    )
    cats = lake(
        home,
        "SELECT partition_date, category, revenue r, units_sold q FROM gold.category_performance "
        "ORDER BY ALL",
    )
    assert [(s["sale_date"], s["category"], s["r"], s["q"]) for s in sales] == [
        (c["partition_date"], c["category"], c["r"], c["q"]) for c in cats
    ]


def test_sql_from_a_file_stdin_or_with_a_leading_comment(home: Path, tmp_path: Path) -> None:
    sql = "-- paid minutes\nSELECT count(*) AS n FROM gold.fct_sales_minute"
    expected = lake(home, sql)
    path = tmp_path / "q.sql"
    path.write_text(sql)
    assert query(home, sql) == expected
    assert query(home, "-f", str(path)) == expected
    assert query(home, "-", stdin=sql) == expected
    assert query(home, "-f", "-", stdin=sql) == expected


def test_spark_and_trino_sql_is_transpiled(home: Path) -> None:
    # Spark's backticks and date_format; Trino's double-quoted identifiers and date_trunc
    spark = query(
        home,
        "--dialect", "spark",
        "SELECT date_format(`minute_bucket`, 'yyyy-MM-dd') AS d, SUM(gmv) AS g "
        "FROM delta.gold.fct_sales_minute GROUP BY 1 ORDER BY 1",
    )  # fmt: skip
    trino = query(
        home,
        "--dialect", "trino",
        'SELECT CAST(date_trunc(\'day\', "minute_bucket") AS DATE) AS d, SUM(gmv) AS g '
        "FROM delta.gold.fct_sales_minute GROUP BY 1 ORDER BY 1",
    )  # fmt: skip
    assert [r["g"] for r in spark] == [r["g"] for r in trino] and spark
    assert [r["d"] for r in spark] == [str(r["d"]) for r in trino]
    # auto: what DuckDB cannot parse is read as Spark SQL
    assert query(home, "SELECT `gmv` FROM gold.fct_sales_minute LIMIT 1")


def test_query_errors_are_clear(home: Path) -> None:
    runner = CliRunner()

    def fails(*args: str) -> str:
        result = runner.invoke(cli, ["--home", str(home), "query", *args])
        assert result.exit_code != 0
        return result.output

    assert "unknown table iceberg.gold.nope" in fails("SELECT * FROM iceberg.gold.nope")
    assert "unknown namespace iceberg.platinum" in fails("SHOW TABLES IN iceberg.platinum")
    assert "not valid trino SQL" in fails("--dialect", "trino", "SELECT (1")
    assert "no such option: --jsn" in fails("--jsn", "SELECT 1")
    assert "no SQL" in fails()
    assert "not both" in fails("SELECT 1", "-f", "-")


def test_a_seed_view_over_a_table_not_built_yet_says_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    subprocess.run(
        [*SHOPLAKE, "--home", str(home), "generate", "-n", "50", "--to", "embedded"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*SHOPLAKE, "--home", str(home), "run", "--job", "ingestion", "--until-idle"],
        check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(
        QueryError, match=r"silver\.orders_clean reads .*silver\.orders\b.*run the pipeline first"
    ):
        lake(home, "SELECT * FROM silver.orders_clean")
    assert lake(home, "SELECT count(*) AS n FROM bronze_raw.orders_raw")[0]["n"] >= 0


def test_the_cli_offers_the_query_dialects() -> None:
    assert QUERY_DIALECTS == DIALECTS


def test_seed_columns_never_shadow_a_column() -> None:
    for table, extra in SEED_COLUMNS.items():
        spec = next(s for s in ALL_TABLES if s.qualified == table)
        added = [part.rsplit(" AS ", 1)[1].strip() for part in extra.split(",")]
        assert not set(added) & set(spec.schema.names), table
