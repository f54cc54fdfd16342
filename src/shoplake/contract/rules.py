"""Field rules of the event contract, engine-neutral.

The pydantic models in ``events`` validate single events (the gateway's hot path);
these rules are the same contract in a form an engine compiles to vectorised SQL for
silver. ``tests/unit/test_rules_parity.py`` holds the two to the same verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["string", "money", "count", "cents", "currency", "timestamp", "enum", "items"]


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
    FieldRule("device", "enum", required=False, choices=("desktop", "mobile", "tablet")),
)

ITEM_RULES: tuple[FieldRule, ...] = (
    FieldRule("product_id", "string"),
    FieldRule("category", "string"),
    FieldRule("quantity", "count"),
    FieldRule("unit_price", "money"),
)

RULES: dict[str, tuple[FieldRule, ...]] = {
    "purchase": (
        *ENVELOPE,
        FieldRule("user_id", "string"),
        FieldRule("order_id", "string"),
        FieldRule("items", "items"),
        FieldRule("total_amount", "money"),
        FieldRule("currency", "currency"),
        FieldRule("payment_method", "string"),
    ),
    "payment": (
        *ENVELOPE,
        FieldRule("user_id", "string"),
        FieldRule("payment_id", "string"),
        FieldRule("order_id", "string"),
        FieldRule("amount_cents", "cents"),
        FieldRule("currency", "currency"),
        FieldRule("status", "enum", choices=("authorized", "captured", "failed", "refunded")),
    ),
}
