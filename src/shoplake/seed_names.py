"""The seed systems' table and column names, as DuckDB views over shoplake's tables.

Teams coming from the seed systems query ``delta.gold.fct_sales_minute`` (seed 000, Trino
over Delta), ``iceberg.silver.page_views`` (seed 002, Spark over Iceberg),
``local.bronze_events`` (seed 001), ``bronze_raw.orders_raw`` and
``silver.orders_clean`` (seed 000), and seed 003's marts. Each such name is a view here:
the shoplake table it maps to (DESIGN.md, "Where the seeds' names map") with every one of
its columns, plus the columns the seed selects under its own names (``SEED_COLUMNS``).
shoplake's own names (``gold.daily_sales_summary``) stay exactly the tables.

Views read shoplake's tables as ``memory.<layer>.<table>``: a view in another catalog
(``delta``, ``iceberg``) would otherwise resolve ``gold.x`` inside its own catalog.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from shoplake.contract.tables import ALL_TABLES
from shoplake.settings import TopicSettings

# Catalogs the seeds put in front of `layer.table`.
CATALOGS = ("delta", "iceberg")

# Columns the seeds select that shoplake names otherwise: (SQL over the table's own
# columns) AS seed name. Meanings are documented in the README ("Coming from …").
_PROCESSING_TIME = "processed_ts AS processing_time"  # when silver wrote the row
SEED_COLUMNS: dict[str, str] = {
    # seed 000 (kafka_timestamp) and seed 002 (processing_time: when bronze took it in)
    "bronze.raw_events": "source_ts AS kafka_timestamp, ingest_ts AS processing_time",
    "silver.page_views": f"{_PROCESSING_TIME}, device AS device_type",
    "silver.cart_events": _PROCESSING_TIME,
    "silver.payments": _PROCESSING_TIME,
    "silver.user_sessions": _PROCESSING_TIME,
    "silver.product_updates": _PROCESSING_TIME,
    # seed 002: a day's transactions are its paid orders (avg_order_value's divisor)
    "gold.daily_sales_summary": "paid_orders AS total_transactions",
}

# Seed 000's silver.orders_clean and seed 002's silver.purchases: each order with
# seed 000's `status` (the status its event carried, else what its payments say) and
# its `items` array, rebuilt from silver.order_items in line order.
_ORDERS = """
SELECT o.*, o.processed_ts AS processing_time,
       coalesce(json_extract_string(o.properties, '$.status'),
                CASE WHEN p.fully_paid THEN 'paid'
                     WHEN p.paid_amount > 0 THEN 'partially_paid'
                     ELSE 'placed' END) AS status,
       coalesce(i.items, []) AS items
FROM memory.silver.orders o
LEFT JOIN memory.silver.order_payments p ON p.order_id = o.order_id
LEFT JOIN (
    SELECT event_id,
           list(struct_pack(product_id := product_id, category := category,
                            quantity := quantity, unit_price := unit_price)
                ORDER BY line_number) AS items
    FROM memory.silver.order_items
    GROUP BY event_id
) i ON i.event_id = o.event_id
"""

# Seed 003's marts. sales_performance: per day (reporting time zone), the day's sales
# from gold.daily_sales_summary with the change against the day before, the running
# total, and the day's busiest minute from gold.fct_sales_minute (whose minutes of a
# day add up to its total_revenue).
_SALES_PERFORMANCE = """
SELECT s.partition_date, s.orders_placed, s.paid_orders, s.gross_revenue, s.total_revenue,
       s.avg_order_value, s.conversion_rate,
       s.total_revenue - lag(s.total_revenue) OVER (ORDER BY s.partition_date)
           AS revenue_change,
       sum(s.total_revenue) OVER (ORDER BY s.partition_date) AS cumulative_revenue,
       m.peak_minute, m.peak_minute_gmv
FROM memory.gold.daily_sales_summary s
LEFT JOIN (
    SELECT local_date(minute_bucket) AS day,
           first(minute_bucket ORDER BY gmv DESC, minute_bucket) AS peak_minute,
           max(gmv) AS peak_minute_gmv
    FROM memory.gold.fct_sales_minute
    GROUP BY 1
) m ON m.day = s.partition_date
"""

# select_sales: one row per line of a paid order, its revenue converted to the reporting
# currency and rounded per line (as gold.category_performance adds it up).
_SELECT_SALES = """
SELECT local_date(p.order_ts) AS sale_date, p.order_ts, p.order_id, p.user_id,
       i.line_number, i.product_id, i.category, i.quantity, i.unit_price, i.currency,
       i.line_amount, CAST(round(i.line_amount * r.to_reporting, 2) AS DECIMAL(18, 2))
           AS revenue
FROM memory.silver.order_payments p
JOIN memory.silver.order_items i ON i.event_id = p.order_event_id
JOIN memory.main.seed_rates r ON r.currency = i.currency
WHERE p.fully_paid
"""


@dataclass(frozen=True)
class SeedView:
    """A seed's name for (a view of) shoplake's tables."""

    name: str  # as the seed writes it, lower case: "iceberg.silver.page_views"
    sql: str  # its SELECT, over memory.<layer>.<table>
    reads: frozenset[str]  # the shoplake tables it needs
    maps_to: str  # the shoplake table (or mart) a user reads about in the README

    @property
    def schema(self) -> str:
        """Its catalog-qualified schema, e.g. "iceberg.silver" or "local"."""
        return self.name.rsplit(".", 1)[0]


def _of(table: str) -> tuple[str, frozenset[str]]:
    extra = SEED_COLUMNS.get(table)
    return f"SELECT *{', ' + extra if extra else ''} FROM memory.{table}", frozenset({table})


@functools.cache
def seed_views(topics: TopicSettings) -> Mapping[str, SeedView]:
    """Every seed name (with and without the seeds' catalogs) → its view; built once per
    topic layout (the only setting they depend on: bronze_raw filters by topic)."""
    plain: dict[str, tuple[str, frozenset[str], str]] = {}  # name → (sql, reads, maps_to)
    for spec in ALL_TABLES:
        plain[spec.qualified] = (*_of(spec.qualified), spec.qualified)
    orders = (_ORDERS, frozenset({"silver.orders", "silver.order_items", "silver.order_payments"}))
    for alias, target in {
        "silver.payments_clean": "silver.payments",
        "silver.order_payments_enriched": "silver.order_payments",
        "gold.items_category_performance": "gold.category_performance",
        "gold.silver_data_quality_report": "gold.data_quality_report",
    }.items():
        plain[alias] = (*_of(target), target)
    plain["silver.orders_clean"] = (*orders, "silver.orders")
    plain["silver.purchases"] = (*orders, "silver.orders")
    plain["silver.orders"] = (*orders, "silver.orders")
    for name, topic, event_type in (
        ("bronze_raw.orders_raw", topics.purchases, "purchase"),
        ("bronze_raw.payments_raw", topics.payments, "payment"),
    ):
        sql, reads = _of("bronze.raw_events")
        # its topic's records; with one topic for all events, that topic's of its type
        quoted = (topics.single or topic).replace("'", "''")
        where = f"topic = '{quoted}'"
        if topics.single:
            where += f" AND event_type = '{event_type}'"
        plain[name] = (f"{sql} WHERE {where}", reads, "bronze.raw_events")
    plain["gold.sales_performance"] = (
        _SALES_PERFORMANCE,
        frozenset({"gold.daily_sales_summary", "gold.fct_sales_minute"}),
        "gold.sales_performance",
    )
    plain["gold.select_sales"] = (
        _SELECT_SALES,
        frozenset({"silver.order_payments", "silver.order_items"}),
        "gold.select_sales",
    )

    views: dict[str, SeedView] = {}
    for name, (sql, reads, maps_to) in plain.items():
        for catalog in CATALOGS:
            views[f"{catalog}.{name}"] = SeedView(f"{catalog}.{name}", sql, reads, maps_to)
        if name not in {s.qualified for s in ALL_TABLES}:  # shoplake's own names stay tables
            views[name] = SeedView(name, sql, reads, maps_to)
    # seed 001's Spark catalog `local`: local.bronze_events, local.silver_page_views, …
    for name, (sql, reads, maps_to) in plain.items():
        layer, table = name.split(".")
        if layer in ("bronze", "silver", "gold"):
            local = (
                "local.bronze_events" if name == "bronze.raw_events" else f"local.{layer}_{table}"
            )
            views.setdefault(local, SeedView(local, sql, reads, maps_to))
    views["local.silver_data_quality_report"] = SeedView(
        "local.silver_data_quality_report", *_of("gold.data_quality_report"),
        "gold.data_quality_report",
    )  # fmt: skip
    return views
