"""The typed columns of each event silver table, declared once for every engine.

A column is ``(name, kind, field)``: which JSON field of a valid event it reads and how
it is typed. ``columns_sql`` spells the kinds in an engine's SQL from the few pieces
its ``ColumnDialect`` gives, so ``duckdb_silver`` and ``spark_silver`` cannot drift apart
on a table's layout; the columns around them (event_id, properties, event_ts, lineage)
and order_items are each engine's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

from shoplake.contract.tables import (
    CART_EVENTS,
    ORDERS,
    PAGE_VIEWS,
    PAYMENTS,
    PRODUCT_UPDATES,
    USER_SESSIONS,
)

Kind = Literal[
    "text",  # the field as text
    "int",  # the field as a 32-bit integer
    "bigint",  # the field as a 64-bit integer
    "money",  # the field as DECIMAL(18, 2)
    "cents",  # an integer count of cents as DECIMAL(18, 2) money
    "count",  # the length of the array field, as a 32-bit integer
    "row",  # a column the parsed row already holds, as it is
]

Column = tuple[str, Kind, str]


class EventTable(NamedTuple):
    event_types: tuple[str, ...]
    columns: list[Column]


# Every event carries these (a product update has only user_id, placed in its own order).
_ENVELOPE: list[Column] = [
    ("user_id", "text", "user_id"),
    ("session_id", "text", "session_id"),
    ("device", "text", "device"),
    ("country", "text", "country"),
]

EVENT_TABLES: dict[str, EventTable] = {
    PAGE_VIEWS.name: EventTable(
        ("page_view",),
        [
            *_ENVELOPE,
            ("page_type", "text", "page_type"),
            ("page_url", "text", "page_url"),
            ("product_id", "text", "product_id"),
            ("category", "text", "category"),
            ("referrer", "text", "referrer"),
            ("traffic_source", "text", "traffic_source"),
        ],
    ),
    CART_EVENTS.name: EventTable(
        ("add_to_cart", "remove_from_cart"),
        [
            ("event_type", "row", "event_type"),
            *_ENVELOPE,
            ("product_id", "text", "product_id"),
            ("category", "text", "category"),
            ("quantity", "int", "quantity"),
            ("unit_price", "money", "unit_price"),
            ("currency", "text", "currency"),
        ],
    ),
    ORDERS.name: EventTable(
        ("purchase",),
        [
            ("order_id", "text", "order_id"),
            *_ENVELOPE,
            ("total_amount", "money", "total_amount"),
            ("currency", "text", "currency"),
            ("payment_method", "text", "payment_method"),
            ("item_count", "count", "items"),
        ],
    ),
    PAYMENTS.name: EventTable(
        ("payment",),
        [
            ("payment_id", "text", "payment_id"),
            ("order_id", "text", "order_id"),
            *_ENVELOPE,
            ("amount_cents", "bigint", "amount_cents"),
            ("amount", "cents", "amount_cents"),
            ("currency", "text", "currency"),
            ("status", "text", "status"),
        ],
    ),
    USER_SESSIONS.name: EventTable(
        ("user_session",),
        [*_ENVELOPE, ("action", "text", "action")],
    ),
    PRODUCT_UPDATES.name: EventTable(
        ("product_update",),
        [
            ("product_id", "text", "product_id"),
            ("name", "text", "name"),
            ("category", "text", "category"),
            ("price", "money", "price"),
            ("currency", "text", "currency"),
            ("inventory", "bigint", "inventory"),
            ("update_type", "text", "update_type"),
            ("user_id", "text", "user_id"),
        ],
    ),
}


class ColumnDialect(NamedTuple):
    """How one engine's SQL spells the few pieces the kinds are made of."""

    int_type: str  # a 32-bit integer type name
    text: Callable[[str], str]  # a top-level field of the record as text
    cast: Callable[[str, str], str]  # (SQL text, SQL type) → the typed value
    array_length: Callable[[str], str]  # the length of a top-level array field


def columns_sql(d: ColumnDialect, columns: list[Column]) -> list[tuple[str, str]]:
    """``columns`` as (name, SQL expression) in ``d``'s SQL."""

    def typed(field: str, sql_type: str) -> str:
        return d.cast(d.text(field), sql_type)

    spell: dict[Kind, Callable[[str], str]] = {
        "text": d.text,
        "int": lambda field: typed(field, d.int_type),
        "bigint": lambda field: typed(field, "BIGINT"),
        "money": lambda field: typed(field, "DECIMAL(18, 2)"),
        # Cents are exact: a whole DECIMAL times 0.01, never a binary float.
        "cents": lambda field: f"CAST({typed(field, 'DECIMAL(18, 0)')} * 0.01 AS DECIMAL(18, 2))",
        "count": lambda field: f"CAST({d.array_length(field)} AS {d.int_type})",
        "row": lambda field: field,
    }
    return [(name, spell[kind](field)) for name, kind, field in columns]
