"""Table schemas: the one source (Arrow) every table adapter derives its schema from."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(18, 2)

PROPERTIES = pa.field("properties", pa.string())  # unknown extra fields, as JSON
EVENT_TIME = [
    pa.field("event_ts", TS, nullable=False),
    pa.field("event_date", pa.date32(), nullable=False),
]
ENVELOPE = [
    pa.field("user_id", pa.string()),
    pa.field("session_id", pa.string()),
    pa.field("device", pa.string()),
    pa.field("country", pa.string()),
]

LINEAGE = [
    pa.field("topic", pa.string(), nullable=False),
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
]


@dataclass(frozen=True)
class TableSpec:
    """A table: where it lives (layer.name), its columns, partitioning and key."""

    layer: str
    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    description: str = ""
    # Columns of unique payloads: written without dictionary encoding or statistics,
    # which would cost time and buy nothing.
    payload_columns: tuple[str, ...] = ()
    # A column a row keeps for life, that new rows arrive in order of (a timestamp): the
    # files are kept sorted by it, so an upsert rewrites only the files near its rows
    # (see TableStore.upsert's ``located``).
    cluster_by: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def stats_columns(self) -> tuple[str, ...]:
        """The columns whose min and max each data file records in the table's log: its
        key, cluster_by and those of ``SKIPPING_COLUMNS`` it has (not the partition
        columns: a file's partition values say more)."""
        wanted = {*SKIPPING_COLUMNS, *self.key, *((self.cluster_by,) if self.cluster_by else ())}
        return tuple(n for n in self.schema.names if n in wanted and n not in self.partition_by)


# The columns the pipeline's scans, merges and deletes filter on (lineage, ids, times).
# Statistics of the others (text, JSON, categories, amounts) would prune nothing, and
# every reader that lists a table's files pays for them: deltalake builds a pyarrow
# expression per file and column (37 → 8 ms for 40 files of silver.page_views at 5
# columns instead of 19).
SKIPPING_COLUMNS = frozenset(
    {
        *("topic", "partition", "offset"),
        *("event_id", "order_id", "user_id", "product_id"),
        *("event_ts", "ingest_ts", "order_ts", "minute_bucket", "updated_ts"),
        "paid_orders",  # fct_sales_minute deletes its minutes left with none
    }
)


RAW_EVENTS = TableSpec(
    "bronze",
    "raw_events",
    pa.schema(
        [
            pa.field("raw_key", pa.string()),
            pa.field("raw_value", pa.string(), nullable=False),
            *LINEAGE,
            pa.field("source_ts", TS),
            pa.field("ingest_ts", TS, nullable=False),
            pa.field("event_type", pa.string(), nullable=False),
            pa.field("ingest_date", pa.date32(), nullable=False),
        ]
    ),
    partition_by=("ingest_date", "event_type"),
    key=("topic", "partition", "offset"),
    description="Every record read from the transport, verbatim, exactly once.",
    payload_columns=("raw_value",),
)


def _event_table(name: str, columns: list[pa.Field], description: str) -> TableSpec:
    """A silver table of one row per valid event, deduplicated on event_id."""
    return TableSpec(
        "silver",
        name,
        pa.schema(
            [
                pa.field("event_id", pa.string(), nullable=False),
                *columns,
                PROPERTIES,
                *EVENT_TIME,
                # behind the watermark of its topic partition when it arrived
                pa.field("is_late", pa.bool_(), nullable=False),
                # when silver wrote the row (seeds: processing_time); NULL in rows written
                # before the column existed
                pa.field("processed_ts", TS),
                *LINEAGE,
            ]
        ),
        partition_by=("event_date",),
        key=("event_id",),
        description=description,
    )


PAGE_VIEWS = _event_table(
    "page_views",
    [
        *ENVELOPE,
        pa.field("page_type", pa.string(), nullable=False),
        pa.field("page_url", pa.string(), nullable=False),
        pa.field("product_id", pa.string()),
        pa.field("category", pa.string()),
        pa.field("referrer", pa.string()),
        pa.field("traffic_source", pa.string(), nullable=False),
    ],
    "One row per page view.",
)

CART_EVENTS = _event_table(
    "cart_events",
    [
        pa.field("event_type", pa.string(), nullable=False),
        *ENVELOPE,
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("quantity", pa.int32(), nullable=False),
        pa.field("unit_price", MONEY, nullable=False),
        pa.field("currency", pa.string(), nullable=False),
    ],
    "One row per add_to_cart or remove_from_cart event.",
)

ORDERS = _event_table(
    "orders",
    [
        pa.field("order_id", pa.string(), nullable=False),
        *ENVELOPE,
        pa.field("total_amount", MONEY, nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("payment_method", pa.string(), nullable=False),
        pa.field("item_count", pa.int32(), nullable=False),
    ],
    "One row per order placed (purchase event), deduplicated on event_id.",
)

PAYMENTS = _event_table(
    "payments",
    [
        pa.field("payment_id", pa.string(), nullable=False),
        pa.field("order_id", pa.string(), nullable=False),
        *ENVELOPE,
        pa.field("amount_cents", pa.int64(), nullable=False),
        pa.field("amount", MONEY, nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
    ],
    "One row per payment event (authorized, captured, failed, refunded).",
)

USER_SESSIONS = _event_table(
    "user_sessions",
    [*ENVELOPE, pa.field("action", pa.string(), nullable=False)],
    "One row per login or logout.",
)

PRODUCT_UPDATES = _event_table(
    "product_updates",
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("price", MONEY, nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("inventory", pa.int64(), nullable=False),
        pa.field("update_type", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
    ],
    "One row per catalog change (price, inventory, new product).",
)

ORDER_ITEMS = TableSpec(
    "silver",
    "order_items",
    pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("order_id", pa.string(), nullable=False),
            pa.field("line_number", pa.int32(), nullable=False),
            pa.field("product_id", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("quantity", pa.int32(), nullable=False),
            pa.field("unit_price", MONEY, nullable=False),
            pa.field("line_amount", MONEY),  # NULL only if quantity × price overflows
            pa.field("currency", pa.string(), nullable=False),
            pa.field("event_ts", TS, nullable=False),
            pa.field("event_date", pa.date32(), nullable=False),
            *LINEAGE,
        ]
    ),
    partition_by=("event_date",),
    key=("event_id", "line_number"),
    description="One row per line of an order.",
)

ORDER_PAYMENTS = TableSpec(
    "silver",
    "order_payments",
    pa.schema(
        [
            pa.field("order_id", pa.string(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("session_id", pa.string()),
            pa.field("order_event_id", pa.string(), nullable=False),  # its lines: order_items
            pa.field("total_amount", MONEY, nullable=False),
            pa.field("paid_amount", MONEY, nullable=False),
            pa.field("currency", pa.string(), nullable=False),
            pa.field("fully_paid", pa.bool_(), nullable=False),
            pa.field("order_ts", TS, nullable=False),
            pa.field("last_payment_ts", TS),
            pa.field("updated_ts", TS, nullable=False),
        ]
    ),
    key=("order_id",),
    description="Each order with what has been paid for it: captured − refunded, order currency.",
    cluster_by="order_ts",  # payments come soon after their order: a round touches recent files
)

QUARANTINE = TableSpec(
    "silver",
    "quarantine",
    pa.schema(
        [
            pa.field("raw_value", pa.string(), nullable=False),
            *LINEAGE,
            pa.field("event_type", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("detail", pa.string(), nullable=False),
            pa.field("quarantined_ts", TS, nullable=False),
            pa.field("quarantined_date", pa.date32(), nullable=False),
        ]
    ),
    partition_by=("quarantined_date",),
    key=("topic", "partition", "offset"),
    description="Records that failed validation: raw payload, lineage and a reason code.",
    payload_columns=("raw_value",),
)

FCT_SALES_MINUTE = TableSpec(
    "gold",
    "fct_sales_minute",
    pa.schema(
        [
            pa.field("minute_bucket", TS, nullable=False),
            pa.field("gmv", MONEY, nullable=False),
            pa.field("paid_orders", pa.int64(), nullable=False),
            pa.field("processed_ts", TS, nullable=False),
        ]
    ),
    key=("minute_bucket",),
    description="Paid orders by the minute they were placed; gmv in the reporting currency.",
)

RATE = pa.decimal128(9, 6)  # a share between 0 and 1, to 6 places
PROCESSED_TS = pa.field("processed_ts", TS, nullable=False)


def _daily(name: str, columns: list[pa.Field], key: tuple[str, ...], description: str) -> TableSpec:
    """A gold table of rows per day (reporting time zone), rebuilt by day."""
    return TableSpec(
        "gold",
        name,
        pa.schema(
            [pa.field("partition_date", pa.date32(), nullable=False), *columns, PROCESSED_TS]
        ),
        partition_by=("partition_date",),
        key=("partition_date", *key),
        description=description,
    )


def _counts(*names: str) -> list[pa.Field]:
    return [pa.field(n, pa.int64(), nullable=False) for n in names]


DAILY_SALES_SUMMARY = _daily(
    "daily_sales_summary",
    [
        *_counts("orders_placed"),
        pa.field("gross_revenue", MONEY, nullable=False),
        *_counts("paid_orders"),
        pa.field("total_revenue", MONEY, nullable=False),
        *_counts("visitors", "purchasers"),
        pa.field("conversion_rate", RATE, nullable=False),
        pa.field("avg_order_value", MONEY, nullable=False),
    ],
    (),
    "One row per day: orders, revenue, visitors, conversion.",
)

DAILY_TRAFFIC_SOURCES = _daily(
    "daily_traffic_sources",
    [
        pa.field("traffic_source", pa.string(), nullable=False),
        *_counts("sessions", "visitors", "purchasers", "orders_placed", "paid_orders"),
        pa.field("revenue", MONEY, nullable=False),
        pa.field("conversion_rate", RATE, nullable=False),
    ],
    ("traffic_source",),
    "Per day and traffic source (the first of each session that day): visitors, buyers, revenue.",
)

FUNNEL_DAILY = _daily(
    "funnel_daily",
    [
        *_counts(
            "sessions",
            "product_view_sessions",
            "cart_sessions",
            "checkout_sessions",
            "purchase_sessions",
        ),
        *[
            pa.field(n, RATE, nullable=False)
            for n in ("product_view_rate", "cart_rate", "checkout_rate", "purchase_rate")
        ],
    ],
    (),
    "Per day: sessions reaching each funnel step, and each step's share of sessions.",
)

CATEGORY_PERFORMANCE = _daily(
    "category_performance",
    [
        pa.field("category", pa.string(), nullable=False),
        *_counts("orders", "units_sold"),
        pa.field("revenue", MONEY, nullable=False),
    ],
    ("category",),
    "Per day and category: paid orders containing it, units and revenue of their lines.",
)

PRODUCT_ANALYTICS = _daily(
    "product_analytics",
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("product_name", pa.string()),
        pa.field("category", pa.string()),
        *_counts("total_views", "cart_adds", "cart_removes", "total_purchases", "units_sold"),
        pa.field("revenue", MONEY, nullable=False),
        pa.field("conversion_rate", pa.decimal128(12, 6), nullable=False),
        pa.field("recommendation_score", pa.decimal128(18, 6), nullable=False),
    ],
    ("product_id",),
    "Per day and product: views, cart moves, orders, units, revenue, recommendation score.",
)

DAILY_CUSTOMER_ANALYTICS = _daily(
    "daily_customer_analytics",
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("lifetime_value", MONEY, nullable=False),
        *_counts("paid_orders"),
        pa.field("total_spent", MONEY, nullable=False),
        *_counts("sessions", "page_views", "cart_adds"),
        pa.field("avg_order_value", MONEY, nullable=False),
        pa.field("first_order_ts", TS),
        pa.field("last_order_ts", TS),
        pa.field("customer_segment", pa.string(), nullable=False),
    ],
    ("user_id",),
    "Per day and active customer: value to date, the day's activity, segment.",
)

DATA_QUALITY_REPORT = _daily(
    "data_quality_report",
    [
        pa.field("table_name", pa.string(), nullable=False),
        *_counts("rows_in", "rows_valid", "rows_quarantined"),
        pa.field("quarantine_reasons", pa.string(), nullable=False),
        *_counts("duplicates_dropped", "late_events"),
        pa.field("freshness_s", pa.float64(), nullable=False),
    ],
    ("table_name",),
    "Per day of arrival and silver table: records in, valid, quarantined, duplicates, late.",
)

DUPLICATES = TableSpec(
    "silver",
    "duplicates",
    pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("event_type", pa.string(), nullable=False),
            pa.field("table_name", pa.string(), nullable=False),
            *EVENT_TIME,
            *LINEAGE,
            pa.field("detected_ts", TS, nullable=False),
        ]
    ),
    partition_by=("event_date",),
    key=("topic", "partition", "offset"),
    description="Valid events dropped because their event_id was already in silver.",
)

DIM_CUSTOMERS = TableSpec(
    "silver",
    "dim_customers",
    pa.schema(
        [
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("country", pa.string()),
            pa.field("device", pa.string()),
            pa.field("first_seen_ts", TS, nullable=False),
            pa.field("last_seen_ts", TS, nullable=False),
            pa.field("orders_placed", pa.int64(), nullable=False),
            pa.field("first_order_ts", TS),
            pa.field("last_order_ts", TS),
            pa.field("updated_ts", TS, nullable=False),
        ]
    ),
    key=("user_id",),
    description="One row per customer: latest country and device, first and last seen.",
)

DIM_PRODUCTS = TableSpec(
    "silver",
    "dim_products",
    pa.schema(
        [
            pa.field("product_id", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("price", MONEY, nullable=False),
            pa.field("currency", pa.string(), nullable=False),
            pa.field("inventory", pa.int64(), nullable=False),
            pa.field("last_update_type", pa.string(), nullable=False),
            pa.field("first_seen_ts", TS, nullable=False),
            pa.field("last_updated_ts", TS, nullable=False),
            pa.field("updated_ts", TS, nullable=False),
        ]
    ),
    key=("product_id",),
    description="One row per product: its current name, category, price and inventory.",
)

DIM_DATE = TableSpec(
    "silver",
    "dim_date",
    pa.schema(
        [
            pa.field("date_key", pa.int32(), nullable=False),
            pa.field("date", pa.date32(), nullable=False),
            pa.field("year", pa.int16(), nullable=False),
            pa.field("quarter", pa.int8(), nullable=False),
            pa.field("month", pa.int8(), nullable=False),
            pa.field("month_name", pa.string(), nullable=False),
            pa.field("day_of_month", pa.int8(), nullable=False),
            pa.field("day_of_week", pa.int8(), nullable=False),
            pa.field("day_name", pa.string(), nullable=False),
            pa.field("iso_week", pa.int8(), nullable=False),
            pa.field("is_weekend", pa.bool_(), nullable=False),
        ]
    ),
    key=("date",),
    description="The calendar: date_key YYYYMMDD, ISO week, weekday (1 = Monday).",
)

ALL_TABLES: tuple[TableSpec, ...] = (
    RAW_EVENTS,
    PAGE_VIEWS,
    CART_EVENTS,
    ORDERS,
    ORDER_ITEMS,
    PAYMENTS,
    USER_SESSIONS,
    PRODUCT_UPDATES,
    ORDER_PAYMENTS,
    QUARANTINE,
    DUPLICATES,
    DIM_CUSTOMERS,
    DIM_PRODUCTS,
    DIM_DATE,
    FCT_SALES_MINUTE,
    DAILY_SALES_SUMMARY,
    DAILY_TRAFFIC_SOURCES,
    DAILY_CUSTOMER_ANALYTICS,
    PRODUCT_ANALYTICS,
    CATEGORY_PERFORMANCE,
    FUNNEL_DAILY,
    DATA_QUALITY_REPORT,
)

TABLES_BY_NAME: dict[str, TableSpec] = {t.qualified: t for t in ALL_TABLES}

# The silver table each valid event type lands in.
EVENT_TABLES: dict[str, TableSpec] = {
    "page_view": PAGE_VIEWS,
    "add_to_cart": CART_EVENTS,
    "remove_from_cart": CART_EVENTS,
    "purchase": ORDERS,
    "payment": PAYMENTS,
    "user_session": USER_SESSIONS,
    "product_update": PRODUCT_UPDATES,
}
