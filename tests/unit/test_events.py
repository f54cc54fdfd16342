import re
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from shoplake.contract.events import (
    EVENT_ADAPTER,
    EVENT_TYPES,
    TIMESTAMP_PATTERN,
    json_schema,
    key_for,
    topic_for,
)
from shoplake.settings import TopicSettings

ENVELOPE = {
    "event_id": "e-1",
    "timestamp": "2026-03-01T10:00:00+01:00",
    "user_id": "U1",
    "session_id": "S1",
    "device": "mobile",
    "country": "DE",
}
VALID: dict[str, dict[str, Any]] = {
    "page_view": {
        "page_type": "product",
        "page_url": "/p/1",
        "product_id": "P1",
        "traffic_source": "organic",
    },
    "add_to_cart": {
        "product_id": "P1",
        "category": "books",
        "quantity": 2,
        "unit_price": 9.99,
        "currency": "EUR",
    },
    "remove_from_cart": {
        "product_id": "P1",
        "category": "books",
        "quantity": 1,
        "unit_price": 9.99,
        "currency": "EUR",
    },
    "purchase": {
        "order_id": "O1",
        "items": [{"product_id": "P1", "category": "books", "quantity": 2, "unit_price": 9.99}],
        "total_amount": 19.98,
        "currency": "EUR",
        "payment_method": "card",
    },
    "payment": {
        "payment_id": "PAY1",
        "order_id": "O1",
        "amount_cents": 1998,
        "currency": "EUR",
        "status": "captured",
    },
    "user_session": {"action": "login"},
    "product_update": {
        "product_id": "P1",
        "name": "Atlas",
        "category": "books",
        "price": 12.5,
        "currency": "USD",
        "inventory": 40,
        "update_type": "price_change",
    },
}


def event(kind: str, **changes: Any) -> dict[str, Any]:
    e = {**ENVELOPE, "event_type": kind, **VALID[kind], **changes}
    return {k: v for k, v in e.items() if v is not None}


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_event_type_validates(kind: str) -> None:
    parsed = EVENT_ADAPTER.validate_python(event(kind))
    assert parsed.event_type == kind
    assert parsed.event_ts.utcoffset() is not None


def test_unknown_fields_are_kept() -> None:
    parsed = EVENT_ADAPTER.validate_python(event("page_view", ab_test="B"))
    assert parsed.model_extra == {"ab_test": "B"}


@pytest.mark.parametrize(
    ("kind", "changes", "field"),
    [
        ("purchase", {"items": []}, "items"),
        ("purchase", {"total_amount": -1}, "total_amount"),
        ("add_to_cart", {"quantity": 0}, "quantity"),
        ("payment", {"amount_cents": -5}, "amount_cents"),
        ("payment", {"status": "stolen"}, "status"),
        ("page_view", {"timestamp": "2026-03-01T10:00:00"}, "timestamp"),  # no offset
        ("page_view", {"device": ""}, "device"),  # free text, but not empty
        ("page_view", {"device": 3}, "device"),
        ("page_view", {"country": "Germany"}, "country"),
        ("purchase", {"currency": "euro"}, "currency"),
        ("page_view", {"user_id": None}, "user_id"),
        ("user_session", {"session_id": None}, "session_id"),
    ],
)
def test_contract_rules_reject(kind: str, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        EVENT_ADAPTER.validate_python(event(kind, **changes))
    assert field in str(info.value)


def test_the_timestamp_pattern_holds_the_gregorian_calendar() -> None:
    """Every day of a whole 400-year cycle and the years around it (and no day 0, 29-31
    past a month's end, month 0 or 13, year 0) — as Python's calendar has them."""
    pattern = re.compile(TIMESTAMP_PATTERN)
    days = {
        f"{year:04d}-{month:02d}-{day:02d}"
        for year in [*range(1, 30), *range(1599, 2001), *range(9990, 10000), 0]
        for month in range(14)
        for day in range(33)
    }
    wrong = [d for d in sorted(days) if bool(pattern.match(f"{d}T10:00:00Z")) != _is_date(d)]
    assert not wrong
    assert _is_date("2000-02-29") and not _is_date("1900-02-29")  # the reference is right


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def test_seed_004_events_pass_with_their_location_and_device() -> None:
    # a device of the client's own naming; `location` is an extra field, kept
    seen = EVENT_ADAPTER.validate_python(
        event("page_view", device="smart-tv", location={"city": "Lyon", "country": "FR"})
    )
    assert seen.device == "smart-tv"
    assert seen.model_extra == {"location": {"city": "Lyon", "country": "FR"}}


def test_unknown_event_type_is_rejected() -> None:
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python({**ENVELOPE, "event_type": "teleport"})


def test_json_schema_covers_every_type() -> None:
    schema = json_schema()
    text = str(schema)
    for kind in EVENT_TYPES:
        assert kind in text
    assert schema["discriminator"]["propertyName"] == "event_type"


def test_routing_and_keys() -> None:
    topics = TopicSettings()
    assert topic_for("add_to_cart", topics) == "cart-events"
    assert topic_for("remove_from_cart", topics) == "cart-events"
    assert topic_for("payment", topics) == "payments"
    assert topic_for("nope", topics) is None
    assert key_for(event("payment")) == "O1"
    assert key_for(event("page_view")) == "S1"
    assert key_for(event("product_update")) == "P1"
