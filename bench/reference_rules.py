"""The event contract as the two reference jobs of bench_batch.py check it: written once
for both (and independently of shoplake's own code, which they are compared with)."""

from __future__ import annotations

# An event behind the newest earlier event of its topic by more than this is late.
WATERMARK_MINUTES = 10
TS_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"

# A field rule: (name, kind, required, allowed values). Kinds: string (non-empty text),
# text, integer, count (integer > 0), cents (integer >= 0), money (number >= 0),
# currency (ISO 4217 with a rate), country (ISO 3166 alpha-2), timestamp (RFC 3339 with
# an offset), enum, items (non-empty array of order lines). Checked in this order; the
# first broken rule names the reason.
Rule = tuple[str, str, bool, tuple[str, ...]]


def rule(name: str, kind: str, required: bool = True, choices: tuple[str, ...] = ()) -> Rule:
    return (name, kind, required, choices)


ENVELOPE = [
    rule("event_id", "string"),
    rule("timestamp", "timestamp"),
    rule("device", "enum", False, ("desktop", "mobile", "tablet")),
    rule("country", "country", False),
    rule("schema_version", "integer", False),
]
USER = rule("user_id", "string")
SESSION = rule("session_id", "string", False)
CART = [
    *ENVELOPE,
    USER,
    SESSION,
    rule("product_id", "string"),
    rule("category", "string"),
    rule("quantity", "count"),
    rule("unit_price", "money"),
    rule("currency", "currency"),
]
ITEM = [
    rule("product_id", "string"),
    rule("category", "string"),
    rule("quantity", "count"),
    rule("unit_price", "money"),
]
RULES: dict[str, list[Rule]] = {
    "page_view": [
        *ENVELOPE,
        USER,
        SESSION,
        rule(
            "page_type", "enum", True, ("home", "category", "product", "search", "cart", "checkout")
        ),
        rule("page_url", "string"),
        rule("product_id", "text", False),
        rule("category", "text", False),
        rule("referrer", "text", False),
        rule("traffic_source", "enum", True, ("direct", "organic", "paid", "email", "social")),
    ],
    "add_to_cart": CART,
    "remove_from_cart": CART,
    "purchase": [
        *ENVELOPE,
        USER,
        SESSION,
        rule("order_id", "string"),
        rule("items", "items"),
        rule("total_amount", "money"),
        rule("currency", "currency"),
        rule("payment_method", "string"),
    ],
    "payment": [
        *ENVELOPE,
        USER,
        SESSION,
        rule("payment_id", "string"),
        rule("order_id", "string"),
        rule("amount_cents", "cents"),
        rule("currency", "currency"),
        rule("status", "enum", True, ("authorized", "captured", "failed", "refunded")),
    ],
    "user_session": [
        *ENVELOPE,
        USER,
        rule("session_id", "string"),
        rule("action", "enum", True, ("login", "logout")),
    ],
    "product_update": [
        *ENVELOPE,
        rule("user_id", "text", False),
        SESSION,
        rule("product_id", "string"),
        rule("name", "string"),
        rule("category", "string"),
        rule("price", "money"),
        rule("currency", "currency"),
        rule("inventory", "integer"),
        rule("update_type", "enum", True, ("price_change", "inventory_change", "new_product")),
    ],
}
# The silver table (and topic) of each event type.
TABLE_OF = {
    "page_view": "page_views",
    "add_to_cart": "cart_events",
    "remove_from_cart": "cart_events",
    "purchase": "orders",
    "payment": "payments",
    "user_session": "user_sessions",
    "product_update": "product_updates",
}
