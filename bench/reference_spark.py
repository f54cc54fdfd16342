"""Reference job for the batch benchmark: shoplake's silver + gold work as a PySpark job.

    python bench/reference_spark.py INPUT.ndjson OUTDIR

The seeds' engine, in local mode: reads an NDJSON file of shop events with
``spark.read.text``, parses each line with ``from_json``, validates every record (invalid
ones go to a quarantine table with a reason code), deduplicates valid events on event_id
(first occurrence in the file wins), builds the silver and gold tables of shoplake's
DESIGN.md and writes each as OUTDIR/<layer>/<table>.parquet (a Spark output directory).
The last line of stdout is JSON with the row count of every table written.

Written independently of shoplake's pipeline code. Lineage is the position in the file
(``line_no``, from monotonically_increasing_id: in file order, not contiguous).

Each line is parsed once into MAP<STRING, STRING>, Spark's usual way to read JSON of
several shapes. A map keeps every field's text but not its JSON type, so a number sent as
a string (``"amount_cents": "12"``) passes here where shoplake quarantines it as bad_type;
malformed JSON, missing fields, bad values and wrong types that do not parse are caught.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from reference_rules import (
    ENVELOPE,
    ITEM,
    RULES,
    TABLE_OF,
    TS_PATTERN,
    WATERMARK_MINUTES,
    Rule,
)

# USD per unit of each currency; the reporting currency is USD.
RATES = {"USD": "1", "EUR": "1.08", "GBP": "1.27", "CAD": "0.73", "JPY": "0.0067"}
NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
INTEGER = r"^-?[0-9]+$"


def lit(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def in_list(values: object) -> str:
    return "(" + ", ".join(lit(str(v)) for v in values) + ")"


def problem(reason: str, detail: str) -> str:
    """A quarantine verdict; ``detail`` is SQL."""
    return f"named_struct('reason', {lit(reason)}, 'detail', {detail})"


def case(pairs: list[tuple[str, str]]) -> str:
    return "CASE " + " ".join(f"WHEN {c} THEN {v}" for c, v in pairs) + " END"


def checks(value: str, r: Rule, items: str = "items") -> list[tuple[str, str]]:
    """(failing condition, verdict) pairs for one field whose text is ``value`` (NULL when
    absent or JSON null); ``items`` is the parsed order lines, for the items rule."""
    name, kind, required, choices = r
    shown = f"coalesce(left({value}, 40), '')"
    out = []
    if required:
        out.append((f"{value} IS NULL", problem("missing_field", lit(f"{name} is missing"))))

    def add(cond: str, reason: str, detail: str, show: bool = False) -> None:
        verdict = problem(reason, lit(detail) + (f" || {shown}" if show else ""))
        out.append((f"{value} IS NOT NULL AND ({cond})", verdict))

    if kind == "string":
        add(f"length({value}) = 0", "missing_field", f"{name} is empty")
    elif kind == "integer":
        add(f"NOT {value} RLIKE {lit(INTEGER)}", "bad_type", f"{name} must be an integer")
        add(f"try_cast({value} AS BIGINT) IS NULL", "bad_value", f"{name} is out of range: ", True)
    elif kind == "count":
        add(f"NOT {value} RLIKE {lit(INTEGER)}", "bad_type", f"{name} must be an integer")
        add(
            f"coalesce(try_cast({value} AS INT), 0) <= 0",
            "bad_value",
            f"{name} must be > 0, got ",
            True,
        )
    elif kind == "cents":
        add(f"NOT {value} RLIKE {lit(INTEGER)}", "bad_type", f"{name} must be an integer")
        add(
            f"try_cast({value} AS DECIMAL(18, 0)) IS NULL",
            "bad_value",
            f"{name} is out of range: ",
            True,
        )
        add(
            f"try_cast({value} AS BIGINT) < 0",
            "negative_amount",
            f"{name} must be >= 0, got ",
            True,
        )
    elif kind == "money":
        add(f"NOT {value} RLIKE {lit(NUMBER)}", "bad_type", f"{name} must be a number")
        add(
            f"try_cast({value} AS DECIMAL(18, 2)) IS NULL",
            "bad_value",
            f"{name} is out of range: ",
            True,
        )
        add(
            f"try_cast({value} AS DOUBLE) < 0",
            "negative_amount",
            f"{name} must be >= 0, got ",
            True,
        )
    elif kind == "country":
        add(f"NOT {value} RLIKE '^[A-Z]{{2}}$'", "bad_value", f"{name} must be ISO 3166: ", True)
    elif kind == "currency":
        add(f"NOT {value} RLIKE '^[A-Z]{{3}}$'", "bad_value", f"{name} must be ISO 4217: ", True)
        add(f"{value} NOT IN {in_list(RATES)}", "unknown_currency", f"{name} has no rate: ", True)
    elif kind == "timestamp":
        add(
            f"NOT {value} RLIKE {lit(TS_PATTERN)} OR try_cast({value} AS TIMESTAMP) IS NULL",
            "bad_timestamp",
            f"{name} is not RFC 3339 with an offset: ",
            True,
        )
    elif kind == "enum":
        add(
            f"{value} NOT IN {in_list(choices)}",
            "bad_value",
            f"{name} must be one of {', '.join(choices)}: ",
            True,
        )
    elif kind == "items":
        add(f"{items} IS NULL", "bad_type", f"{name} must be an array of objects")
        add(f"size({items}) = 0", "empty_items", f"{name} is empty")
        # The first broken rule of the first broken line.
        per_line = case(
            [("x IS NULL", problem("bad_type", lit("each item must be an object")))]
            + [c for item_rule in ITEM for c in checks(f"x['{item_rule[0]}']", item_rule)]
        )
        broken = f"filter(transform({items}, x -> {per_line}), p -> p IS NOT NULL)"
        out.append((f"size({broken}) > 0", f"element_at({broken}, 1)"))
    return out


def verdict_sql() -> str:
    """The verdict of a line parsed into map ``m``: NULL when valid. The envelope, shared
    by every type, is checked first, then each type's own fields (one branch per set of
    rules: a smaller expression for Spark to compile)."""
    etype = "m['event_type']"
    envelope = [c for r in ENVELOPE for c in checks(f"m[{lit(r[0])}]", r)]
    by_rules: dict[tuple[Rule, ...], list[str]] = {}
    for t, rules in RULES.items():
        by_rules.setdefault(tuple(rules[len(ENVELOPE) :]), []).append(t)
    own = " ".join(
        f"WHEN {etype} IN {in_list(types)} THEN "
        + case([c for r in rules for c in checks(f"m[{lit(r[0])}]", r)])
        for rules, types in by_rules.items()
    )
    unknown = "'unknown event_type: ' || left(" + etype + ", 40)"
    return f"""CASE
        WHEN m IS NULL THEN {problem("invalid_json", lit("payload is not a JSON object"))}
        WHEN {etype} IS NULL THEN {problem("missing_field", lit("event_type is missing"))}
        WHEN {etype} NOT IN {in_list(RULES)} THEN {problem("unknown_event_type", unknown)}
        ELSE coalesce({case(envelope)}, CASE {own} END)
    END"""


def properties_sql() -> str:
    """The fields a valid event's type does not name, as JSON."""
    by_type = " ".join(
        f"WHEN {lit(t)} THEN to_json(map_filter(m, (k, v) -> "
        f"k NOT IN {in_list(sorted({r[0] for r in rules} | {'event_type'}))}))"
        for t, rules in RULES.items()
    )
    return f"CASE event_type {by_type} END"


def text(field: str) -> str:
    return f"m[{lit(field)}]"


MONEY = "DECIMAL(18, 2)"
# The silver columns of every event type, from the fields of a valid event. try_cast: an
# event may carry, as an unknown extra, a field another type defines.
TYPED = {
    "event_id": text("event_id"),
    "event_ts": f"try_cast({text('timestamp')} AS TIMESTAMP)",
    **{
        c: text(c)
        for c in (
            "user_id",
            "session_id",
            "device",
            "country",
            "page_type",
            "page_url",
            "product_id",
            "category",
            "referrer",
            "traffic_source",
            "currency",
            "order_id",
            "payment_method",
            "payment_id",
            "status",
            "action",
            "name",
            "update_type",
        )
    },
    "quantity": f"try_cast({text('quantity')} AS INT)",
    "unit_price": f"try_cast({text('unit_price')} AS {MONEY})",
    "total_amount": f"try_cast({text('total_amount')} AS {MONEY})",
    "item_count": "size(items)",
    "items": "items",
    "amount_cents": f"try_cast({text('amount_cents')} AS BIGINT)",
    "amount": f"CAST(try_cast({text('amount_cents')} AS DECIMAL(18, 0)) * 0.01 AS {MONEY})",
    "price": f"try_cast({text('price')} AS {MONEY})",
    "inventory": f"try_cast({text('inventory')} AS BIGINT)",
}

ENV = ["user_id", "session_id", "device", "country"]
TAIL = ["properties", "event_ts", "to_date(event_ts) AS event_date", "is_late", "line_no"]
EVENT_TABLES = {
    "page_views": [
        *ENV,
        "page_type",
        "page_url",
        "product_id",
        "category",
        "referrer",
        "traffic_source",
    ],
    "cart_events": [
        "event_type",
        *ENV,
        "product_id",
        "category",
        "quantity",
        "unit_price",
        "currency",
    ],
    "orders": ["order_id", *ENV, "total_amount", "currency", "payment_method", "item_count"],
    "payments": ["payment_id", "order_id", *ENV, "amount_cents", "amount", "currency", "status"],
    "user_sessions": [*ENV, "action"],
    "product_updates": [
        "product_id",
        "name",
        "category",
        "price",
        "currency",
        "inventory",
        "update_type",
        "user_id",
    ],
}

ORDER_ITEMS_SQL = """
SELECT event_id, order_id, CAST(pos + 1 AS INT) AS line_number,
       item['product_id'] AS product_id,
       item['category'] AS category,
       CAST(item['quantity'] AS INT) AS quantity,
       CAST(item['unit_price'] AS DECIMAL(18, 2)) AS unit_price,
       try_cast(CAST(item['quantity'] AS INT) * CAST(item['unit_price'] AS DECIMAL(18, 2))
                AS DECIMAL(18, 2)) AS line_amount,
       currency, event_ts, to_date(event_ts) AS event_date, line_no
FROM (SELECT *, posexplode(items) AS (pos, item) FROM valid WHERE tbl = 'orders')
"""

# paid_amount = captured − refunded, in the order's currency; the first placement of an
# order_id wins.
ORDER_PAYMENTS_SQL = """
WITH first_orders AS (
    SELECT * FROM (
        SELECT *, row_number() OVER (PARTITION BY order_id ORDER BY event_ts, event_id) AS rn
        FROM orders
    ) WHERE rn = 1
),
paid AS (
    SELECT order_id,
           SUM(CASE status WHEN 'captured' THEN amount WHEN 'refunded' THEN -amount
                           ELSE 0 END) AS paid_amount,
           MAX(event_ts) AS last_payment_ts
    FROM payments GROUP BY order_id
)
SELECT o.order_id, o.user_id, o.session_id, o.event_id AS order_event_id,
       o.total_amount,
       CAST(coalesce(p.paid_amount, 0) AS DECIMAL(18, 2)) AS paid_amount,
       o.currency,
       coalesce(p.paid_amount, 0) >= o.total_amount - 0.01 AS fully_paid,
       o.event_ts AS order_ts, p.last_payment_ts, current_timestamp() AS updated_ts
FROM first_orders o LEFT JOIN paid p ON p.order_id = o.order_id
"""

# Gold, for every day of the input (days in UTC: the session time zone). Amounts are
# converted to USD per order (or per order line) and rounded to the cent before summing.
GOLD: dict[str, str] = {
    "fct_sales_minute": """
        SELECT date_trunc('MINUTE', op.order_ts) AS minute_bucket,
               CAST(SUM(ROUND(op.total_amount * r.to_reporting, 2)) AS DECIMAL(18, 2)) AS gmv,
               COUNT(*) AS paid_orders, current_timestamp() AS processed_ts
        FROM order_payments op JOIN rates r ON r.currency = op.currency
        WHERE op.fully_paid
        GROUP BY 1
    """,
    "daily_sales_summary": """
        WITH placed AS (
            SELECT to_date(op.order_ts) AS partition_date, op.user_id, op.fully_paid,
                   ROUND(op.total_amount * r.to_reporting, 2) AS amount
            FROM order_payments op JOIN rates r ON r.currency = op.currency
        ),
        sales AS (
            SELECT partition_date, COUNT(*) AS orders_placed, SUM(amount) AS gross_revenue,
                   SUM(CASE WHEN fully_paid THEN 1 ELSE 0 END) AS paid_orders,
                   SUM(CASE WHEN fully_paid THEN amount ELSE 0 END) AS total_revenue,
                   COUNT(DISTINCT user_id) AS purchasers
            FROM placed GROUP BY partition_date
        ),
        visits AS (
            SELECT event_date AS partition_date, COUNT(DISTINCT user_id) AS visitors
            FROM page_views GROUP BY event_date
        ),
        days AS (
            SELECT partition_date,
                   coalesce(s.orders_placed, 0) AS orders_placed,
                   coalesce(s.gross_revenue, 0) AS gross_revenue,
                   coalesce(s.paid_orders, 0) AS paid_orders,
                   coalesce(s.total_revenue, 0) AS total_revenue,
                   coalesce(v.visitors, 0) AS visitors,
                   coalesce(s.purchasers, 0) AS purchasers
            FROM sales s FULL OUTER JOIN visits v USING (partition_date)
        )
        SELECT partition_date,
               CAST(orders_placed AS BIGINT) AS orders_placed,
               CAST(gross_revenue AS DECIMAL(18, 2)) AS gross_revenue,
               CAST(paid_orders AS BIGINT) AS paid_orders,
               CAST(total_revenue AS DECIMAL(18, 2)) AS total_revenue,
               CAST(visitors AS BIGINT) AS visitors,
               CAST(purchasers AS BIGINT) AS purchasers,
               CAST(CASE WHEN visitors = 0 THEN 0
                         ELSE ROUND(purchasers / visitors, 6) END AS DECIMAL(9, 6))
                   AS conversion_rate,
               CAST(CASE WHEN paid_orders = 0 THEN 0
                         ELSE ROUND(CAST(total_revenue AS DOUBLE) / paid_orders, 2) END
                    AS DECIMAL(18, 2)) AS avg_order_value,
               current_timestamp() AS processed_ts
        FROM days
    """,
    # A session's source is that of its first page view of the day; orders in a session
    # without a page view that day are 'unknown'.
    "daily_traffic_sources": """
        WITH session_source AS (
            SELECT partition_date, session_id, traffic_source FROM (
                SELECT event_date AS partition_date, session_id, traffic_source,
                       row_number() OVER (PARTITION BY event_date, session_id
                                          ORDER BY event_ts, event_id) AS rn
                FROM page_views WHERE session_id IS NOT NULL
            ) WHERE rn = 1
        ),
        visits AS (
            SELECT v.event_date AS partition_date,
                   coalesce(s.traffic_source, v.traffic_source) AS traffic_source,
                   COUNT(DISTINCT v.session_id) AS sessions,
                   COUNT(DISTINCT v.user_id) AS visitors
            FROM page_views v
            LEFT JOIN session_source s
                   ON s.partition_date = v.event_date AND s.session_id = v.session_id
            GROUP BY 1, 2
        ),
        placed AS (
            SELECT to_date(op.order_ts) AS partition_date,
                   coalesce(s.traffic_source, 'unknown') AS traffic_source,
                   op.user_id, op.fully_paid,
                   ROUND(op.total_amount * r.to_reporting, 2) AS amount
            FROM order_payments op
            JOIN rates r ON r.currency = op.currency
            LEFT JOIN session_source s
                   ON s.partition_date = to_date(op.order_ts) AND s.session_id = op.session_id
        ),
        sales AS (
            SELECT partition_date, traffic_source,
                   COUNT(DISTINCT user_id) AS purchasers, COUNT(*) AS orders_placed,
                   SUM(CASE WHEN fully_paid THEN 1 ELSE 0 END) AS paid_orders,
                   SUM(CASE WHEN fully_paid THEN amount ELSE 0 END) AS revenue
            FROM placed GROUP BY 1, 2
        )
        SELECT partition_date, traffic_source,
               CAST(coalesce(v.sessions, 0) AS BIGINT) AS sessions,
               CAST(coalesce(v.visitors, 0) AS BIGINT) AS visitors,
               CAST(coalesce(s.purchasers, 0) AS BIGINT) AS purchasers,
               CAST(coalesce(s.orders_placed, 0) AS BIGINT) AS orders_placed,
               CAST(coalesce(s.paid_orders, 0) AS BIGINT) AS paid_orders,
               CAST(coalesce(s.revenue, 0) AS DECIMAL(18, 2)) AS revenue,
               CAST(CASE WHEN coalesce(v.visitors, 0) = 0 THEN 0
                         ELSE ROUND(coalesce(s.purchasers, 0) / v.visitors, 6) END
                    AS DECIMAL(9, 6)) AS conversion_rate,
               current_timestamp() AS processed_ts
        FROM visits v FULL OUTER JOIN sales s USING (partition_date, traffic_source)
    """,
    # Per customer and day they were active; value to date counts paid orders placed on
    # or before the day. Segments, first match: At Risk, High Value, New, Regular, Prospect.
    "daily_customer_analytics": """
        WITH activity AS (
            SELECT event_date AS partition_date, user_id, session_id,
                   1 AS page_view, 0 AS cart_add
            FROM page_views
            UNION ALL
            SELECT event_date, user_id, session_id, 0,
                   CASE WHEN event_type = 'add_to_cart' THEN 1 ELSE 0 END
            FROM cart_events
            UNION ALL
            SELECT event_date, user_id, session_id, 0, 0 FROM orders
        ),
        active AS (
            SELECT partition_date, user_id, COUNT(DISTINCT session_id) AS sessions,
                   SUM(page_view) AS page_views, SUM(cart_add) AS cart_adds
            FROM activity WHERE user_id IS NOT NULL
            GROUP BY partition_date, user_id
        ),
        paid AS (
            SELECT op.user_id, op.order_ts, to_date(op.order_ts) AS order_date,
                   ROUND(op.total_amount * r.to_reporting, 2) AS amount
            FROM order_payments op JOIN rates r ON r.currency = op.currency
            WHERE op.fully_paid
        ),
        so_far AS (
            SELECT a.partition_date, a.user_id, a.sessions, a.page_views, a.cart_adds,
                   COUNT(p.order_ts) AS paid_orders,
                   coalesce(SUM(p.amount), 0) AS lifetime_value,
                   coalesce(SUM(CASE WHEN p.order_date = a.partition_date THEN p.amount END), 0)
                       AS total_spent,
                   MIN(p.order_ts) AS first_order_ts, MAX(p.order_ts) AS last_order_ts
            FROM active a
            LEFT JOIN paid p ON p.user_id = a.user_id AND p.order_date <= a.partition_date
            GROUP BY a.partition_date, a.user_id, a.sessions, a.page_views, a.cart_adds
        )
        SELECT partition_date, user_id,
               CAST(lifetime_value AS DECIMAL(18, 2)) AS lifetime_value,
               CAST(paid_orders AS BIGINT) AS paid_orders,
               CAST(total_spent AS DECIMAL(18, 2)) AS total_spent,
               CAST(sessions AS BIGINT) AS sessions,
               CAST(page_views AS BIGINT) AS page_views,
               CAST(cart_adds AS BIGINT) AS cart_adds,
               CAST(CASE WHEN paid_orders = 0 THEN 0
                         ELSE ROUND(CAST(lifetime_value AS DOUBLE) / paid_orders, 2) END
                    AS DECIMAL(18, 2)) AS avg_order_value,
               first_order_ts, last_order_ts,
               CASE WHEN paid_orders > 0
                         AND to_date(last_order_ts) < date_sub(partition_date, 30)
                        THEN 'At Risk'
                    WHEN lifetime_value >= 500 THEN 'High Value'
                    WHEN paid_orders = 1 THEN 'New'
                    WHEN paid_orders > 1 THEN 'Regular'
                    ELSE 'Prospect' END AS customer_segment,
               current_timestamp() AS processed_ts
        FROM so_far
    """,
    # total_purchases counts orders placed containing the product; units and revenue
    # count paid orders only. Name and category: the latest update by the end of the day.
    "product_analytics": """
        WITH views AS (
            SELECT event_date AS partition_date, product_id,
                   COUNT(*) AS total_views, MIN(category) AS category
            FROM page_views WHERE product_id IS NOT NULL
            GROUP BY 1, 2
        ),
        carts AS (
            SELECT event_date AS partition_date, product_id,
                   SUM(CASE WHEN event_type = 'add_to_cart' THEN 1 ELSE 0 END) AS cart_adds,
                   SUM(CASE WHEN event_type = 'remove_from_cart' THEN 1 ELSE 0 END)
                       AS cart_removes,
                   MIN(category) AS category
            FROM cart_events GROUP BY 1, 2
        ),
        sold AS (
            SELECT to_date(op.order_ts) AS partition_date, i.product_id,
                   COUNT(DISTINCT op.order_id) AS total_purchases,
                   SUM(CASE WHEN op.fully_paid THEN i.quantity ELSE 0 END) AS units_sold,
                   SUM(CASE WHEN op.fully_paid THEN ROUND(i.line_amount * r.to_reporting, 2)
                            ELSE 0 END) AS revenue,
                   MIN(i.category) AS category
            FROM order_payments op
            JOIN order_items i ON i.event_id = op.order_event_id
            JOIN rates r ON r.currency = i.currency
            GROUP BY 1, 2
        ),
        products AS (
            SELECT partition_date, product_id FROM views
            UNION SELECT partition_date, product_id FROM carts
            UNION SELECT partition_date, product_id FROM sold
        ),
        catalog AS (
            SELECT partition_date, product_id, name, category FROM (
                SELECT p.partition_date, p.product_id, u.name, u.category,
                       row_number() OVER (PARTITION BY p.partition_date, p.product_id
                                          ORDER BY u.event_ts DESC, u.event_id DESC) AS rn
                FROM products p
                JOIN product_updates u
                  ON u.product_id = p.product_id AND u.event_date <= p.partition_date
            ) WHERE rn = 1
        ),
        measured AS (
            SELECT partition_date, product_id, c.name AS product_name,
                   coalesce(c.category, s.category, v.category, k.category) AS category,
                   coalesce(v.total_views, 0) AS total_views,
                   coalesce(k.cart_adds, 0) AS cart_adds,
                   coalesce(k.cart_removes, 0) AS cart_removes,
                   coalesce(s.total_purchases, 0) AS total_purchases,
                   coalesce(s.units_sold, 0) AS units_sold,
                   coalesce(s.revenue, 0) AS revenue
            FROM products p
            LEFT JOIN views v USING (partition_date, product_id)
            LEFT JOIN carts k USING (partition_date, product_id)
            LEFT JOIN sold s USING (partition_date, product_id)
            LEFT JOIN catalog c USING (partition_date, product_id)
        )
        SELECT partition_date, product_id, product_name, category,
               CAST(total_views AS BIGINT) AS total_views,
               CAST(cart_adds AS BIGINT) AS cart_adds,
               CAST(cart_removes AS BIGINT) AS cart_removes,
               CAST(total_purchases AS BIGINT) AS total_purchases,
               CAST(units_sold AS BIGINT) AS units_sold,
               CAST(revenue AS DECIMAL(18, 2)) AS revenue,
               CAST(CASE WHEN total_views = 0 THEN 0
                         ELSE ROUND(total_purchases / total_views, 6) END AS DECIMAL(12, 6))
                   AS conversion_rate,
               CAST(ROUND((total_purchases + 1) / (total_views + 10)
                          * ln(1 + CAST(revenue AS DOUBLE)), 6) AS DECIMAL(18, 6))
                   AS recommendation_score,
               current_timestamp() AS processed_ts
        FROM measured
    """,
    "category_performance": """
        SELECT to_date(op.order_ts) AS partition_date, i.category,
               CAST(COUNT(DISTINCT op.order_id) AS BIGINT) AS orders,
               CAST(SUM(i.quantity) AS BIGINT) AS units_sold,
               CAST(coalesce(SUM(ROUND(i.line_amount * r.to_reporting, 2)), 0)
                    AS DECIMAL(18, 2)) AS revenue,
               current_timestamp() AS processed_ts
        FROM order_payments op
        JOIN order_items i ON i.event_id = op.order_event_id
        JOIN rates r ON r.currency = i.currency
        WHERE op.fully_paid
        GROUP BY 1, 2
    """,
    # A session counts once per day and reaches a step if it had that event that day.
    "funnel_daily": """
        WITH steps AS (
            SELECT event_date AS partition_date, session_id,
                   CASE WHEN page_type = 'product' THEN 1 ELSE 0 END AS product_view, 0 AS cart,
                   CASE WHEN page_type = 'checkout' THEN 1 ELSE 0 END AS checkout, 0 AS purchase
            FROM page_views
            UNION ALL
            SELECT event_date, session_id, 0,
                   CASE WHEN event_type = 'add_to_cart' THEN 1 ELSE 0 END, 0, 0
            FROM cart_events
            UNION ALL
            SELECT event_date, session_id, 0, 0, 0, 1 FROM orders
        ),
        sessions AS (
            SELECT partition_date, session_id, MAX(product_view) AS product_view,
                   MAX(cart) AS cart, MAX(checkout) AS checkout, MAX(purchase) AS purchase
            FROM steps WHERE session_id IS NOT NULL
            GROUP BY 1, 2
        ),
        days AS (
            SELECT partition_date, COUNT(*) AS sessions,
                   SUM(product_view) AS product_view_sessions, SUM(cart) AS cart_sessions,
                   SUM(checkout) AS checkout_sessions, SUM(purchase) AS purchase_sessions
            FROM sessions GROUP BY 1
        )
        SELECT partition_date,
               CAST(sessions AS BIGINT) AS sessions,
               CAST(product_view_sessions AS BIGINT) AS product_view_sessions,
               CAST(cart_sessions AS BIGINT) AS cart_sessions,
               CAST(checkout_sessions AS BIGINT) AS checkout_sessions,
               CAST(purchase_sessions AS BIGINT) AS purchase_sessions,
               CAST(ROUND(product_view_sessions / sessions, 6) AS DECIMAL(9, 6))
                   AS product_view_rate,
               CAST(ROUND(cart_sessions / sessions, 6) AS DECIMAL(9, 6)) AS cart_rate,
               CAST(ROUND(checkout_sessions / sessions, 6) AS DECIMAL(9, 6)) AS checkout_rate,
               CAST(ROUND(purchase_sessions / sessions, 6) AS DECIMAL(9, 6)) AS purchase_rate,
               current_timestamp() AS processed_ts
        FROM days
    """,
}


def session() -> SparkSession:
    spark = (
        SparkSession.builder.master("local[*]")
        .appName("shoplake-reference")
        .config("spark.driver.memory", "8g")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")  # event_date and gold days are UTC
        # The validation expression compiles to methods too big for HotSpot's JIT (8000
        # bytes of bytecode); past that, Spark's docs advise leaving whole-stage codegen.
        .config("spark.sql.codegen.hugeMethodLimit", "8000")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def parse(spark: SparkSession, source: Path) -> DataFrame:
    """Every non-blank line → line_no, event_type ('unknown' unless known) and the verdict
    (NULL when valid); an invalid line keeps its text, a valid one its fields as typed
    columns (NULL where its type has no such field) and unknown fields as JSON."""
    lines = (
        spark.read.text(str(source))
        .select(F.monotonically_increasing_id().alias("line_no"), F.col("value").alias("line"))
        .where(F.col("line").rlike(r"[^ \t\n\r\x0B\f]"))  # blank lines are not records
    )
    docs = lines.selectExpr(
        "line_no", "line", "from_json(line, 'MAP<STRING, STRING>') AS m"
    ).selectExpr(
        "*",
        "from_json(m['items'], 'ARRAY<MAP<STRING, STRING>>') AS items",
        f"CASE WHEN m['event_type'] IN {in_list(RULES)} THEN m['event_type'] "
        "ELSE 'unknown' END AS event_type",
    )
    judged = docs.selectExpr("*", f"{verdict_sql()} AS problem")
    table_of = " ".join(f"WHEN {lit(t)} THEN {lit(tbl)}" for t, tbl in TABLE_OF.items())
    return judged.selectExpr(
        "line_no",
        "event_type",
        "problem",
        "CASE WHEN problem IS NOT NULL THEN line END AS raw_value",
        f"CASE WHEN problem IS NULL THEN CASE event_type {table_of} END END AS tbl",
        f"CASE WHEN problem IS NULL THEN {properties_sql()} END AS properties",
        *(f"CASE WHEN problem IS NULL THEN {expr} END AS {name}" for name, expr in TYPED.items()),
    )


def first_valid(parsed: DataFrame) -> DataFrame:
    """Valid events, one per event_id within each silver table (the first in the file),
    with the late flag computed over every valid event, duplicates included. The windows
    run over narrow rows; the wide ones are joined back after."""
    valid = parsed.where("problem IS NULL")
    firsts = valid.selectExpr(
        "line_no",
        f"""coalesce(event_ts < max(event_ts) OVER (
                PARTITION BY tbl ORDER BY line_no
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
            - INTERVAL {WATERMARK_MINUTES} MINUTES, false) AS is_late""",
        "row_number() OVER (PARTITION BY tbl, event_id ORDER BY line_no) AS rn",
    ).where("rn = 1")
    return valid.drop("problem", "raw_value").join(firsts.drop("rn"), "line_no")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python bench/reference_spark.py INPUT.ndjson OUTDIR", file=sys.stderr)
        return 2
    source, outdir = Path(argv[0]), Path(argv[1])
    spark = session()
    rows: dict[str, int] = {}

    def write(layer: str, name: str, df: DataFrame) -> DataFrame:
        """Write ``df``; return it read back from Parquet, for the next layer."""
        path = str(outdir / layer / f"{name}.parquet")
        df.write.mode("overwrite").parquet(path)
        written = spark.read.parquet(path)
        rows[f"{layer}.{name}"] = written.count()  # from the Parquet footers
        written.createOrReplaceTempView(name)
        return written

    # Parsed once, read by the quarantine and by silver.
    parsed = parse(spark, source).persist(StorageLevel.MEMORY_AND_DISK)
    valid = first_valid(parsed).persist(StorageLevel.MEMORY_AND_DISK)
    valid.createOrReplaceTempView("valid")
    for name, columns in EVENT_TABLES.items():
        cols = ["event_id", *columns, *TAIL]
        write("silver", name, valid.where(F.col("tbl") == name).selectExpr(*cols))
    write("silver", "order_items", spark.sql(ORDER_ITEMS_SQL))
    quarantine = parsed.where("problem IS NOT NULL").selectExpr(
        "raw_value",
        "line_no",
        "event_type",
        "problem.reason AS reason",
        "problem.detail AS detail",
        "current_timestamp() AS quarantined_ts",
        "current_date() AS quarantined_date",
    )
    write("silver", "quarantine", quarantine)
    valid.unpersist()
    parsed.unpersist()
    write("silver", "order_payments", spark.sql(ORDER_PAYMENTS_SQL))

    spark.createDataFrame(
        [(c, Decimal(r)) for c, r in RATES.items()], "currency STRING, to_reporting DECIMAL(20, 10)"
    ).createOrReplaceTempView("rates")
    for name, sql in GOLD.items():
        write("gold", name, spark.sql(sql))
    print(json.dumps({"engine": f"pyspark {spark.version} local[*]", "rows": rows}))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
