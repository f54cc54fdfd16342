"""Reference job for the batch benchmark: shoplake's silver + gold work as one DuckDB script.

    python bench/reference_duckdb.py INPUT.ndjson OUTDIR

Reads an NDJSON file of shop events, validates every record (invalid ones go to a
quarantine table with a reason code), deduplicates valid events on event_id (first
occurrence in the file wins), builds the silver and gold tables of shoplake's DESIGN.md
and writes each as OUTDIR/<layer>/<table>.parquet. The last line of stdout is JSON with
the row count of every table written.

Written independently of shoplake's pipeline code (only duckdb is imported), so that the
benchmark compares shoplake with what one would write by hand. Lineage is the line number
in the file (``line_no``) instead of a log's topic, partition and offset.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
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
RATES = {"USD": 1, "EUR": 1.08, "GBP": 1.27, "CAD": 0.73, "JPY": 0.0067}
FIELDS = sorted({r[0] for rules in RULES.values() for r in rules} | {"event_type"})


def lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def in_list(values: object) -> str:
    return "(" + ", ".join(lit(str(v)) for v in values) + ")"


def problem(reason: str, detail: str) -> str:
    """A quarantine verdict; ``detail`` is SQL."""
    return f"{{'reason': {lit(reason)}, 'detail': {detail}}}"


def checks(value: str, r: Rule) -> list[tuple[str, str]]:
    """(failing condition, verdict) pairs for one field whose JSON value is ``value``."""
    name, kind, required, choices = r
    jtype = f"json_type({value})"
    text = f"({value} ->> '$')"
    shown = f"coalesce(left({text}, 40), '')"
    out = []
    if required:
        out.append(
            (
                f"coalesce({jtype}, 'NULL') = 'NULL'",
                problem("missing_field", lit(f"{name} is missing")),
            )
        )

    def add(cond: str, reason: str, detail: str, show: bool = False) -> None:
        verdict = problem(reason, lit(detail) + (f" || {shown}" if show else ""))
        # A missing optional field breaks no other rule (a required one was caught above).
        guard = "" if required else f"coalesce({jtype}, 'NULL') <> 'NULL' AND "
        out.append((f"{guard}({cond})", verdict))

    integer = "('BIGINT', 'UBIGINT')"
    if kind in ("string", "text", "country", "currency", "timestamp", "enum"):
        add(f"{jtype} <> 'VARCHAR'", "bad_type", f"{name} must be a string")
    if kind == "string":
        add(f"length({text}) = 0", "missing_field", f"{name} is empty")
    elif kind == "integer":
        add(f"{jtype} NOT IN {integer}", "bad_type", f"{name} must be an integer")
        add(f"TRY_CAST({text} AS BIGINT) IS NULL", "bad_value", f"{name} is out of range: ", True)
    elif kind == "count":
        add(f"{jtype} NOT IN {integer}", "bad_type", f"{name} must be an integer")
        add(
            f"coalesce(TRY_CAST({text} AS INTEGER), 0) <= 0",
            "bad_value",
            f"{name} must be > 0, got ",
            True,
        )
    elif kind == "cents":
        add(f"{jtype} NOT IN {integer}", "bad_type", f"{name} must be an integer")
        add(
            f"TRY_CAST({text} AS DECIMAL(18, 0)) IS NULL",
            "bad_value",
            f"{name} is out of range: ",
            True,
        )
        add(
            f"TRY_CAST({text} AS BIGINT) < 0", "negative_amount", f"{name} must be >= 0, got ", True
        )
    elif kind == "money":
        add(
            f"{jtype} NOT IN ('BIGINT', 'UBIGINT', 'DOUBLE')",
            "bad_type",
            f"{name} must be a number",
        )
        add(
            f"TRY_CAST({text} AS DECIMAL(18, 2)) IS NULL",
            "bad_value",
            f"{name} is out of range: ",
            True,
        )
        add(
            f"TRY_CAST({text} AS DOUBLE) < 0", "negative_amount", f"{name} must be >= 0, got ", True
        )
    elif kind == "country":
        add(
            f"NOT regexp_full_match({text}, '[A-Z]{{2}}')",
            "bad_value",
            f"{name} must be ISO 3166 alpha-2: ",
            True,
        )
    elif kind == "currency":
        add(
            f"NOT regexp_full_match({text}, '[A-Z]{{3}}')",
            "bad_value",
            f"{name} must be ISO 4217: ",
            True,
        )
        add(f"{text} NOT IN {in_list(RATES)}", "unknown_currency", f"{name} has no rate: ", True)
    elif kind == "timestamp":
        add(
            f"NOT regexp_matches({text}, {lit(TS_PATTERN)})"
            f" OR TRY_CAST({text} AS TIMESTAMPTZ) IS NULL",
            "bad_timestamp",
            f"{name} is not RFC 3339 with an offset: ",
            True,
        )
    elif kind == "enum":
        add(
            f"{text} NOT IN {in_list(choices)}",
            "bad_value",
            f"{name} must be one of {', '.join(choices)}: ",
            True,
        )
    elif kind == "items":
        add(f"{jtype} <> 'ARRAY'", "bad_type", f"{name} must be an array")
        add(f"json_array_length({value}) = 0", "empty_items", f"{name} is empty")
        # The first broken rule of the first broken line.
        per_line = case(
            [("json_type(x) <> 'OBJECT'", problem("bad_type", lit("each item must be an object")))]
            + [
                c
                for item_rule in ITEM
                for c in checks(f"json_extract(x, '$.{item_rule[0]}')", item_rule)
            ]
        )
        broken = (
            f"list_filter(list_transform(CAST({value} AS JSON[]), lambda x: {per_line}), "
            "lambda p: p IS NOT NULL)"
        )
        out.append((f"coalesce({jtype}, 'NULL') = 'ARRAY' AND len({broken}) > 0", f"{broken}[1]"))
    return out


def case(pairs: list[tuple[str, str]]) -> str:
    return "CASE " + " ".join(f"WHEN {c} THEN {v}" for c, v in pairs) + " END"


def txt(field: str) -> str:
    return f"(f.{field} ->> '$')"


def cast(field: str, sql_type: str) -> str:
    # TRY_CAST: an event may carry, as an unknown extra, a field another type defines.
    return f"TRY_CAST({txt(field)} AS {sql_type})"


MONEY = "DECIMAL(18, 2)"
# The silver columns of every event type, from the fields of a valid event.
TYPED = {
    "event_id": txt("event_id"),
    "event_ts": cast("timestamp", "TIMESTAMPTZ"),
    **{
        c: txt(c)
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
    "quantity": cast("quantity", "INTEGER"),
    "unit_price": cast("unit_price", MONEY),
    "total_amount": cast("total_amount", MONEY),
    "item_count": "CAST(json_array_length(f.items) AS INTEGER)",
    "items": "f.items",
    "amount_cents": cast("amount_cents", "BIGINT"),
    "amount": f"CAST({cast('amount_cents', 'DECIMAL(18, 0)')} * 0.01 AS {MONEY})",
    "price": cast("price", MONEY),
    "inventory": cast("inventory", "BIGINT"),
}


def parse_sql() -> str:
    """Every non-blank line of ``lines`` → line_no, event_type ('unknown' unless known) and
    the verdict (NULL when valid); an invalid line keeps its text, a valid one its fields
    as typed columns (NULL where its type has no such field) and unknown fields as JSON."""
    struct = json.dumps(dict.fromkeys(FIELDS, "JSON"))
    etype = "(f.event_type ->> '$')"
    # The envelope, shared by every type, is checked first, then each type's own fields.
    envelope = case([c for r in ENVELOPE for c in checks(f"f.{r[0]}", r)])
    by_rules: dict[tuple[Rule, ...], list[str]] = {}
    for t, rules in RULES.items():
        by_rules.setdefault(tuple(rules[len(ENVELOPE) :]), []).append(t)
    own = " ".join(
        f"WHEN {etype} IN {in_list(types)} THEN "
        + case([c for r in rules for c in checks(f"f.{r[0]}", r)])
        for rules, types in by_rules.items()
    )
    extra_keys = " ".join(
        f"WHEN {lit(t)} THEN list_filter(json_keys(line), "
        f"lambda k: k NOT IN {in_list(sorted({r[0] for r in rules} | {'event_type'}))})"
        for t, rules in RULES.items()
    )
    table_of = " ".join(f"WHEN {lit(t)} THEN {lit(tbl)}" for t, tbl in TABLE_OF.items())
    unknown = "'unknown event_type: ' || left(" + etype + ", 40)"
    typed = ",\n           ".join(
        f"CASE WHEN problem IS NULL THEN {expr} END AS {name}" for name, expr in TYPED.items()
    )
    return f"""
    CREATE TEMP TABLE parsed AS
    WITH docs AS (
        SELECT rowid + 1 AS line_no, line,
               CASE WHEN json_valid(line) AND json_type(line) = 'OBJECT'
                    THEN json_transform(line, {lit(struct)}) END AS f
        FROM lines
        WHERE regexp_matches(line, '[^ \t\n\r\x0b\x0c]')  -- blank lines are not records
    ),
    judged AS (
        SELECT line_no, line, f,
               CASE WHEN {etype} IN {in_list(RULES)} THEN {etype} ELSE 'unknown' END AS event_type,
               CASE
                 WHEN f IS NULL THEN {problem("invalid_json", lit("payload is not a JSON object"))}
                 WHEN coalesce(json_type(f.event_type), 'NULL') = 'NULL'
                   THEN {problem("missing_field", lit("event_type is missing"))}
                 WHEN {etype} NOT IN {in_list(RULES)}
                   THEN {problem("unknown_event_type", unknown)}
                 ELSE coalesce({envelope}, CASE {own} END)
               END AS problem
        FROM docs
    ),
    keyed AS (
        SELECT *, CASE WHEN problem IS NULL THEN CASE event_type {extra_keys} END END AS extra_keys
        FROM judged
    )
    SELECT line_no, event_type, problem,
           CASE WHEN problem IS NOT NULL THEN line END AS raw_value,
           CASE WHEN problem IS NULL THEN CASE event_type {table_of} END END AS tbl,
           {typed},
           -- valid events keep their unknown fields as JSON
           CASE WHEN problem IS NOT NULL THEN NULL
                WHEN len(extra_keys) = 0 THEN '{{}}'
                ELSE CAST(to_json(map_from_entries(list_transform(extra_keys, lambda k: {{
                    'key': k,
                    'value': json_extract(line, '/' || replace(replace(k, '~', '~0'), '/', '~1'))
                }}))) AS VARCHAR) END AS properties
    FROM keyed
    """


# Valid events, one per event_id within each silver table (the first in the file), with
# the late flag computed over every valid event, duplicates included.
VALID_SQL = f"""
CREATE TEMP TABLE valid AS
WITH firsts AS (  -- windows over narrow rows; the wide ones are joined back after
    SELECT line_no,
           coalesce(event_ts < max(event_ts) OVER (
                        PARTITION BY tbl ORDER BY line_no
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                    - INTERVAL {WATERMARK_MINUTES} MINUTE, false) AS is_late
    FROM parsed
    WHERE problem IS NULL
    QUALIFY row_number() OVER (PARTITION BY tbl, event_id ORDER BY line_no) = 1
)
SELECT p.* EXCLUDE (problem, raw_value), k.is_late
FROM parsed p JOIN firsts k USING (line_no)
"""

ENV = ["user_id", "session_id", "device", "country"]
TAIL = ["properties", "event_ts", "CAST(event_ts AS DATE) AS event_date", "is_late", "line_no"]


def event_table(tbl: str, columns: list[str]) -> str:
    cols = ", ".join(["event_id", *columns, *TAIL])
    return f"SELECT {cols} FROM valid WHERE tbl = {lit(tbl)} ORDER BY line_no"


SILVER: dict[str, str] = {
    "page_views": event_table(
        "page_views",
        [*ENV, "page_type", "page_url", "product_id", "category", "referrer", "traffic_source"],
    ),
    "cart_events": event_table(
        "cart_events",
        ["event_type", *ENV, "product_id", "category", "quantity", "unit_price", "currency"],
    ),
    "orders": event_table(
        "orders", ["order_id", *ENV, "total_amount", "currency", "payment_method", "item_count"]
    ),
    "payments": event_table(
        "payments",
        ["payment_id", "order_id", *ENV, "amount_cents", "amount", "currency", "status"],
    ),
    "user_sessions": event_table("user_sessions", [*ENV, "action"]),
    "product_updates": event_table(
        "product_updates",
        [
            "product_id",
            "name",
            "category",
            "price",
            "currency",
            "inventory",
            "update_type",
            "user_id",
        ],
    ),
    "order_items": """
        WITH lines AS (
            SELECT event_id, line_no, event_ts, order_id, currency,
                   unnest(CAST(items AS JSON[])) AS item,
                   generate_subscripts(CAST(items AS JSON[]), 1) AS line_number
            FROM valid WHERE tbl = 'orders'
        )
        SELECT event_id, order_id, CAST(line_number AS INTEGER) AS line_number,
               item ->> '$.product_id' AS product_id,
               item ->> '$.category' AS category,
               CAST(item ->> '$.quantity' AS INTEGER) AS quantity,
               CAST(item ->> '$.unit_price' AS DECIMAL(18, 2)) AS unit_price,
               TRY_CAST(CAST(item ->> '$.quantity' AS INTEGER)
                        * CAST(item ->> '$.unit_price' AS DECIMAL(18, 2)) AS DECIMAL(18, 2))
                   AS line_amount,
               currency, event_ts, CAST(event_ts AS DATE) AS event_date, line_no
        FROM lines ORDER BY line_no, line_number
    """,
    # paid_amount = captured − refunded, in the order's currency; the first placement of
    # an order_id wins.
    "order_payments": """
        WITH first_orders AS (
            SELECT * FROM orders
            QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY event_ts, event_id) = 1
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
               o.event_ts AS order_ts, p.last_payment_ts, $now AS updated_ts
        FROM first_orders o LEFT JOIN paid p USING (order_id)
    """,
    "quarantine": """
        SELECT raw_value, line_no, event_type, problem.reason AS reason,
               problem.detail AS detail, $now AS quarantined_ts,
               CAST($now AS DATE) AS quarantined_date
        FROM parsed WHERE problem IS NOT NULL
        UNION ALL  -- lines the CSV reader could not decode (not UTF-8)
        SELECT trim(csv_line, chr(10) || chr(13)), CAST(line AS BIGINT), 'unknown', 'invalid_json',
               'unreadable line: ' || left(error_message, 200), $now, CAST($now AS DATE)
        FROM reject_errors
    """,
}

# Gold, for every day of the input (days in UTC). Amounts are converted to USD per order
# (or per order line) and rounded to the cent before they are summed.
GOLD: dict[str, str] = {
    "fct_sales_minute": """
        SELECT date_trunc('minute', op.order_ts) AS minute_bucket,
               CAST(SUM(ROUND(op.total_amount * r.to_reporting, 2)) AS DECIMAL(18, 2)) AS gmv,
               COUNT(*) AS paid_orders, $now AS processed_ts
        FROM order_payments op JOIN rates r USING (currency)
        WHERE op.fully_paid
        GROUP BY 1 ORDER BY 1
    """,
    "daily_sales_summary": """
        WITH placed AS (
            SELECT CAST(op.order_ts AS DATE) AS partition_date, op.user_id, op.fully_paid,
                   ROUND(op.total_amount * r.to_reporting, 2) AS amount
            FROM order_payments op JOIN rates r USING (currency)
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
            SELECT coalesce(s.partition_date, v.partition_date) AS partition_date,
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
               $now AS processed_ts
        FROM days ORDER BY partition_date
    """,
    # A session's source is that of its first page view of the day; orders in a session
    # without a page view that day are 'unknown'.
    "daily_traffic_sources": """
        WITH session_source AS (
            SELECT event_date AS partition_date, session_id, traffic_source
            FROM page_views WHERE session_id IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY event_date, session_id
                                       ORDER BY event_ts, event_id) = 1
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
            SELECT CAST(op.order_ts AS DATE) AS partition_date,
                   coalesce(s.traffic_source, 'unknown') AS traffic_source,
                   op.user_id, op.fully_paid,
                   ROUND(op.total_amount * r.to_reporting, 2) AS amount
            FROM order_payments op
            JOIN rates r USING (currency)
            LEFT JOIN session_source s
                   ON s.partition_date = CAST(op.order_ts AS DATE)
                  AND s.session_id = op.session_id
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
               $now AS processed_ts
        FROM visits v FULL OUTER JOIN sales s USING (partition_date, traffic_source)
        ORDER BY partition_date, traffic_source
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
            SELECT op.user_id, op.order_ts, CAST(op.order_ts AS DATE) AS order_date,
                   ROUND(op.total_amount * r.to_reporting, 2) AS amount
            FROM order_payments op JOIN rates r USING (currency)
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
                         AND CAST(last_order_ts AS DATE) < partition_date - INTERVAL 30 DAY
                        THEN 'At Risk'
                    WHEN lifetime_value >= 500 THEN 'High Value'
                    WHEN paid_orders = 1 THEN 'New'
                    WHEN paid_orders > 1 THEN 'Regular'
                    ELSE 'Prospect' END AS customer_segment,
               $now AS processed_ts
        FROM so_far ORDER BY partition_date, user_id
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
            SELECT CAST(op.order_ts AS DATE) AS partition_date, i.product_id,
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
            SELECT p.partition_date, p.product_id, u.name, u.category
            FROM products p
            JOIN product_updates u
              ON u.product_id = p.product_id AND u.event_date <= p.partition_date
            QUALIFY row_number() OVER (PARTITION BY p.partition_date, p.product_id
                                       ORDER BY u.event_ts DESC, u.event_id DESC) = 1
        ),
        measured AS (
            SELECT p.partition_date, p.product_id, c.name AS product_name,
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
               $now AS processed_ts
        FROM measured ORDER BY partition_date, product_id
    """,
    "category_performance": """
        SELECT CAST(op.order_ts AS DATE) AS partition_date, i.category,
               CAST(COUNT(DISTINCT op.order_id) AS BIGINT) AS orders,
               CAST(SUM(i.quantity) AS BIGINT) AS units_sold,
               CAST(coalesce(SUM(ROUND(i.line_amount * r.to_reporting, 2)), 0)
                    AS DECIMAL(18, 2)) AS revenue,
               $now AS processed_ts
        FROM order_payments op
        JOIN order_items i ON i.event_id = op.order_event_id
        JOIN rates r ON r.currency = i.currency
        WHERE op.fully_paid
        GROUP BY 1, 2 ORDER BY 1, 2
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
               $now AS processed_ts
        FROM days ORDER BY partition_date
    """,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python bench/reference_duckdb.py INPUT.ndjson OUTDIR", file=sys.stderr)
        return 2
    source, outdir = Path(argv[0]), Path(argv[1])
    for layer in ("silver", "gold"):
        (outdir / layer).mkdir(parents=True, exist_ok=True)
    now = {"now": datetime.now(UTC)}
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # event_date and the days of gold are UTC days
    con.execute(
        "CREATE TEMP TABLE rates AS SELECT * FROM (VALUES "
        + ", ".join(f"({lit(c)}, CAST({r} AS DECIMAL(20, 10)))" for c, r in RATES.items())
        + ") t(currency, to_reporting)"
    )
    # 0x1f cannot occur unescaped in valid JSON, so each line is read whole as one
    # column; lines that are not UTF-8 (or longer than 2 MB) land in reject_errors.
    con.execute(
        f"""
        CREATE TEMP TABLE lines AS
        SELECT line
        FROM read_csv({lit(str(source))}, columns = {{'line': 'VARCHAR'}}, header = false,
                      delim = '\\x1f', quote = '', escape = '', auto_detect = false,
                      strict_mode = false, ignore_errors = true, store_rejects = true)
        """
    )
    con.execute(parse_sql())
    con.execute("DROP TABLE lines")
    con.execute(VALID_SQL)

    rows: dict[str, int] = {}

    def write(layer: str, name: str, sql: str) -> None:
        # Silver stays in memory for gold to read; gold goes straight to Parquet.
        if layer == "silver":
            con.execute(f"CREATE TEMP TABLE {name} AS {sql}", now if "$now" in sql else None)
            sql = f"SELECT * FROM {name}"
        target = outdir / layer / f"{name}.parquet"
        copy = f"COPY ({sql}) TO {lit(str(target))} (FORMAT parquet, COMPRESSION zstd)"
        (count,) = con.execute(copy, now if "$now" in sql else None).fetchone() or (0,)
        rows[f"{layer}.{name}"] = int(count)

    for name, sql in SILVER.items():
        write("silver", name, sql)
    for name, sql in GOLD.items():
        write("gold", name, sql)
    print(json.dumps({"engine": f"duckdb {duckdb.__version__}", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
