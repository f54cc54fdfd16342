"""Field rules of the event contract, engine-neutral.

The pydantic models in ``events`` validate single events (the gateway's hot path);
these rules are the same contract in a form an engine compiles to vectorised SQL for
silver. ``tests/unit/test_rules_parity.py`` holds the two to the same verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# string: non-empty text; text: any text; money: a JSON number >= 0 (DECIMAL(18,2));
# count: an integer > 0; cents: an integer >= 0; integer: any integer; currency: an
# ISO 4217 code with a rate in settings; country: ISO 3166 alpha-2; timestamp: RFC 3339
# with an offset; enum: one of choices; items: a non-empty array of order lines.
Kind = Literal[
    "string",
    "text",
    "money",
    "count",
    "cents",
    "integer",
    "currency",
    "country",
    "timestamp",
    "enum",
    "items",
]


@dataclass(frozen=True)
class FieldRule:
    name: str
    kind: Kind
    required: bool = True
    choices: tuple[str, ...] = ()


# Reason codes a quarantined record can carry.
REASONS = (
    "invalid_json",
    "unknown_event_type",
    "missing_field",
    "bad_type",
    "bad_value",
    "bad_timestamp",
    "negative_amount",
    "empty_items",
    "unknown_currency",
)

ENVELOPE: tuple[FieldRule, ...] = (
    FieldRule("event_id", "string"),
    FieldRule("timestamp", "timestamp"),
    FieldRule("device", "string", required=False),  # free: seed 004's clients name their own
    FieldRule("country", "country", required=False),
    FieldRule("schema_version", "integer", required=False),
)
USER = FieldRule("user_id", "string")
SESSION = FieldRule("session_id", "string", required=False)

ITEM_RULES: tuple[FieldRule, ...] = (
    FieldRule("product_id", "string"),
    FieldRule("category", "string"),
    FieldRule("quantity", "count"),
    FieldRule("unit_price", "money"),
)

_CART = (
    *ENVELOPE,
    USER,
    SESSION,
    FieldRule("product_id", "string"),
    FieldRule("category", "string"),
    FieldRule("quantity", "count"),
    FieldRule("unit_price", "money"),
    FieldRule("currency", "currency"),
)

RULES: dict[str, tuple[FieldRule, ...]] = {
    "page_view": (
        *ENVELOPE,
        USER,
        SESSION,
        FieldRule(
            "page_type",
            "enum",
            choices=("home", "category", "product", "search", "cart", "checkout"),
        ),
        FieldRule("page_url", "string"),
        FieldRule("product_id", "text", required=False),
        FieldRule("category", "text", required=False),
        FieldRule("referrer", "text", required=False),
        FieldRule(
            "traffic_source", "enum", choices=("direct", "organic", "paid", "email", "social")
        ),
    ),
    "add_to_cart": _CART,
    "remove_from_cart": _CART,
    "purchase": (
        *ENVELOPE,
        USER,
        SESSION,
        FieldRule("order_id", "string"),
        FieldRule("items", "items"),
        FieldRule("total_amount", "money"),
        FieldRule("currency", "currency"),
        FieldRule("payment_method", "string"),
    ),
    "payment": (
        *ENVELOPE,
        USER,
        SESSION,
        FieldRule("payment_id", "string"),
        FieldRule("order_id", "string"),
        FieldRule("amount_cents", "cents"),
        FieldRule("currency", "currency"),
        FieldRule("status", "enum", choices=("authorized", "captured", "failed", "refunded")),
    ),
    "user_session": (
        *ENVELOPE,
        USER,
        FieldRule("session_id", "string"),
        FieldRule("action", "enum", choices=("login", "logout")),
    ),
    "product_update": (
        *ENVELOPE,
        FieldRule("user_id", "text", required=False),
        SESSION,
        FieldRule("product_id", "string"),
        FieldRule("name", "string"),
        FieldRule("category", "string"),
        FieldRule("price", "money"),
        FieldRule("currency", "currency"),
        FieldRule("inventory", "integer"),
        FieldRule(
            "update_type", "enum", choices=("price_change", "inventory_change", "new_product")
        ),
    ),
}
