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

    @property
    def qualified(self) -> str:
        return f"{self.layer}.{self.name}"


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

DAILY_SALES_SUMMARY = TableSpec(
    "gold",
    "daily_sales_summary",
    pa.schema(
        [
            pa.field("partition_date", pa.date32(), nullable=False),
            pa.field("orders_placed", pa.int64(), nullable=False),
            pa.field("gross_revenue", MONEY, nullable=False),
            pa.field("paid_orders", pa.int64(), nullable=False),
            pa.field("total_revenue", MONEY, nullable=False),
            pa.field("visitors", pa.int64(), nullable=False),
            pa.field("purchasers", pa.int64(), nullable=False),
            pa.field("conversion_rate", pa.decimal128(9, 6), nullable=False),
            pa.field("avg_order_value", MONEY, nullable=False),
            pa.field("processed_ts", TS, nullable=False),
        ]
    ),
    partition_by=("partition_date",),
    key=("partition_date",),
    description="One row per day (reporting time zone): orders, revenue, visitors, conversion.",
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
    FCT_SALES_MINUTE,
    DAILY_SALES_SUMMARY,
)

TABLES_BY_NAME: dict[str, TableSpec] = {t.qualified: t for t in ALL_TABLES}
