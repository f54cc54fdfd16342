"""Event models: the contract on the wire, with DESIGN.md's validation rules.

Unknown extra fields are allowed and kept. These models are the reference the
gateway validates against and the JSON Schema that ``shoplake schema`` exports.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shoplake.settings import TopicSettings

PageType = Literal["home", "category", "product", "search", "cart", "checkout"]
TrafficSource = Literal["direct", "organic", "paid", "email", "social"]
PaymentStatus = Literal["authorized", "captured", "failed", "refunded"]
SessionAction = Literal["login", "logout"]
UpdateType = Literal["price_change", "inventory_change", "new_product"]

# RFC 3339 with an offset; the silver SQL applies the same pattern. Dates of the Gregorian
# calendar from 0001 (February 29 in leap years only), hours 00-23, minutes and seconds
# 00-59, offsets within ±18:00: the range every engine's timestamp type and Python's
# datetime accept alike (DuckDB alone takes 24:00:00 and +23:59; Spark does not). The
# calendar is in the pattern so that every validator checks it in its regex engine, the
# gateway's msgspec types included, with no per-event Python call. Digits are [0-9]: in
# Python's and pydantic's regexes \d is any Unicode digit, in the engines' only ASCII.
_YEAR = r"([1-9][0-9]{3}|0[1-9][0-9][0-9]|00[1-9][0-9]|000[1-9])"  # the usual first
_LEAP_YEAR = r"([0-9][0-9](0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"({_YEAR}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    rf"|02-(0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
TIMESTAMP_PATTERN = (
    rf"^{_DATE}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
    r"(Z|[+-]((0[0-9]|1[0-7]):[0-5][0-9]|18:00))$"
)

NonEmpty = Annotated[str, Field(strict=True, min_length=1)]
Text = Annotated[str, Field(strict=True)]
CountryCode = Annotated[str, Field(strict=True, pattern=r"^[A-Z]{2}$")]
CurrencyCode = Annotated[str, Field(strict=True, pattern=r"^[A-Z]{3}$")]
Timestamp = Annotated[str, Field(strict=True, pattern=TIMESTAMP_PATTERN)]
# Bounds are the storage types': INTEGER, BIGINT, DECIMAL(18, 0) and DECIMAL(18, 2).
Quantity = Annotated[int, Field(strict=True, gt=0, le=2**31 - 1)]
Integer = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]
Cents = Annotated[int, Field(strict=True, ge=0, le=10**18 - 1)]
# A JSON number (strict: no strings, no booleans); validated without a Python callback.
Money = Annotated[float, Field(strict=True, ge=0, lt=1e16)]


class _Envelope(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: NonEmpty
    timestamp: Timestamp
    device: NonEmpty | None = None  # free text: desktop, mobile, tablet, or a client's own
    country: CountryCode | None = None
    schema_version: Integer = 1

    @property
    def event_ts(self) -> datetime:
        """The timestamp as an aware datetime (silver stores it in UTC)."""
        return datetime.fromisoformat(self.timestamp.replace("Z", "+00:00"))


class _UserEvent(_Envelope):
    user_id: NonEmpty
    session_id: NonEmpty | None = None


class PageView(_UserEvent):
    event_type: Literal["page_view"]
    page_type: PageType
    page_url: NonEmpty
    product_id: Text | None = None
    category: Text | None = None
    referrer: Text | None = None
    traffic_source: TrafficSource


class CartEvent(_UserEvent):
    event_type: Literal["add_to_cart", "remove_from_cart"]
    product_id: NonEmpty
    category: NonEmpty
    quantity: Quantity
    unit_price: Money
    currency: CurrencyCode


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    product_id: NonEmpty
    category: NonEmpty
    quantity: Quantity
    unit_price: Money


class Purchase(_UserEvent):
    """An order placed."""

    event_type: Literal["purchase"]
    order_id: NonEmpty
    items: Annotated[list[OrderItem], Field(min_length=1)]
    total_amount: Money
    currency: CurrencyCode
    payment_method: NonEmpty


class Payment(_UserEvent):
    event_type: Literal["payment"]
    payment_id: NonEmpty
    order_id: NonEmpty
    amount_cents: Cents
    currency: CurrencyCode
    status: PaymentStatus


class UserSession(_UserEvent):
    event_type: Literal["user_session"]
    action: SessionAction
    session_id: NonEmpty  # required here, optional on other events


class ProductUpdate(_Envelope):
    event_type: Literal["product_update"]
    user_id: Text | None = None
    session_id: NonEmpty | None = None
    product_id: NonEmpty
    name: NonEmpty
    category: NonEmpty
    price: Money
    currency: CurrencyCode
    inventory: Integer
    update_type: UpdateType


Event = Annotated[
    PageView | CartEvent | Purchase | Payment | UserSession | ProductUpdate,
    Field(discriminator="event_type"),
]
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "payment",
    "user_session",
    "product_update",
)

_TOPIC_FIELD = {
    "page_view": "page_views",
    "add_to_cart": "cart_events",
    "remove_from_cart": "cart_events",
    "purchase": "purchases",
    "payment": "payments",
    "user_session": "user_sessions",
    "product_update": "product_updates",
}


def topic_for(event_type: str, topics: TopicSettings) -> str | None:
    """The topic an event type is routed to (the single topic, when there is one), or None
    for an unknown type."""
    attr = _TOPIC_FIELD.get(event_type)
    if attr is None:
        return None
    return topics.single or str(getattr(topics, attr))


def key_for(event: dict[str, Any]) -> str | None:
    """The partition key of an event as a dict."""
    return partition_key(event.get("event_type"), event.get)


def key_fields(event_type: object) -> tuple[str, ...]:
    """The fields an event's partition key is read from, the first one set: order_id for
    payments, product_id for catalog updates, else session (or user)."""
    if event_type == "payment":
        return ("order_id",)
    if event_type == "product_update":
        return ("product_id",)
    return ("session_id", "user_id")


def partition_key(event_type: object, field: Callable[[str], Any]) -> str | None:
    """The partition key (``key_fields``); ``field`` gives a field's value by name, None
    when absent."""
    value = None
    for name in key_fields(event_type):
        if value := field(name):
            break
    return value if isinstance(value, str) else None


def json_schema() -> dict[str, Any]:
    """JSON Schema of one event (a discriminated union on event_type)."""
    schema: dict[str, Any] = EVENT_ADAPTER.json_schema()
    schema["title"] = "shoplake event"
    return schema
