"""Shopper sessions that follow a realistic funnel, interleaved in time.

Everything comes from one ``random.Random(seed)``, so a seed always yields the same
events. In simulated time (the default) timestamps advance from ``start``; in real
time (``--continuous``) each event is stamped with the wall clock as it is emitted.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from shoplake.simulator.catalog import (
    DEVICES,
    MARKETS,
    PAYMENT_METHODS,
    REFERRERS,
    TRAFFIC_SOURCES,
    Product,
    build_catalog,
    weighted,
)

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

Event = dict[str, Any]


@dataclass(frozen=True)
class Emitted:
    """One line the simulator sends: the event (None if garbled) and its JSON bytes."""

    event: Event | None
    value: bytes
    kind: str  # "ok", "duplicate", "malformed", "invalid", "late"
    event_type: str  # the type the shop meant to send (routes even a garbled line)


def _ts(moment: datetime, offset: str) -> str:
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    local = moment.astimezone(tz)
    return local.isoformat(timespec="milliseconds")


class ShopSimulator:
    """An endless, seeded stream of shop events."""

    def __init__(
        self,
        seed: int = 42,
        *,
        start: datetime | None = None,
        realtime: bool = False,
        bad_ratio: float = 0.0,
        users: int = 5000,
    ) -> None:
        if not 0.0 <= bad_ratio <= 1.0:
            raise ValueError("bad_ratio must be between 0 and 1")
        self.rng = random.Random(seed)
        self.realtime = realtime
        self.bad_ratio = bad_ratio
        self.clock = start or DEFAULT_START
        self.catalog: list[Product] = build_catalog(self.rng)
        self.users = [f"U{i + 1:06d}" for i in range(users)]
        self._queue: list[tuple[datetime, int, Event, Iterator[tuple[datetime, Event]]]] = []
        self._seq = 0
        self._orders = 0
        self._pending_dupes: list[tuple[int, int, bytes, Event]] = []  # heap by due
        self._emitted = 0

    # -- identifiers ----------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # -- scheduling -----------------------------------------------------------
    def _schedule(self, gen: Iterator[tuple[datetime, Event]]) -> None:
        nxt = next(gen, None)
        if nxt is not None:
            self._seq += 1
            heapq.heappush(self._queue, (nxt[0], self._seq, nxt[1], gen))

    def events(self) -> Iterator[Event]:
        """Valid events in timestamp order, forever: first the catalog as it stands (one
        ``new_product`` update per product, so names are known), then the shop."""
        for product in self.catalog:
            listing = self._catalog_event(product, "new_product", self.clock)
            self._schedule(iter([(self.clock, listing)]))
        next_session = self.clock
        next_catalog = self.clock + timedelta(minutes=2)
        while True:
            while not self._queue or next_session <= self._queue[0][0]:
                self._schedule(self._session(next_session))
                next_session += timedelta(seconds=self.rng.expovariate(1 / 1.5))
            if next_catalog <= self._queue[0][0]:
                self._schedule(self._catalog_update(next_catalog))
                next_catalog += timedelta(seconds=self.rng.expovariate(1 / 90))
                continue
            moment, _, event, gen = heapq.heappop(self._queue)
            self.clock = moment
            self._schedule(gen)
            yield event

    def stream(self) -> Iterator[Emitted]:
        """Lines to send: valid events plus, at ``bad_ratio``, duplicates, malformed JSON,
        invalid fields and late events."""
        for event in self.events():
            event = dict(event)  # the session generator still holds the original
            meant = str(event["event_type"])
            if self.realtime:
                event["timestamp"] = _ts(datetime.now(UTC), "+00:00")
            kind = "ok"
            if self.bad_ratio and self.rng.random() < self.bad_ratio:
                kind = weighted(
                    self.rng,
                    (("duplicate", 40), ("malformed", 15), ("invalid", 25), ("late", 20)),
                )
                if kind == "invalid":
                    self._invalidate(event)
                elif kind == "late":
                    moment = datetime.fromisoformat(event["timestamp"])
                    late_by = timedelta(minutes=self.rng.randint(15, 120))
                    event["timestamp"] = _ts(moment - late_by, event["timestamp"][-6:])
            value = orjson.dumps(event)
            if kind == "malformed":
                yield Emitted(None, value[: max(1, len(value) // 2)], kind, meant)
            else:
                yield Emitted(event, value, kind, meant)
                if kind == "duplicate":  # the same bytes again, a few events later
                    due = self._emitted + self.rng.randint(1, 50)
                    heapq.heappush(self._pending_dupes, (due, self._emitted, value, event))
            self._emitted += 1
            while self._pending_dupes and self._pending_dupes[0][0] <= self._emitted:
                _, _, dup, original = heapq.heappop(self._pending_dupes)
                yield Emitted(original, dup, "duplicate", str(original["event_type"]))

    def _invalidate(self, event: Event) -> None:
        """Break one contract rule, the way buggy clients do."""
        choice = self.rng.randrange(6)
        if choice == 0:
            event.pop("user_id" if "user_id" in event else "event_id", None)
        elif choice == 1:
            event["timestamp"] = "yesterday at noon"
        elif choice == 2:
            event["event_type"] = "page_vieww"
        elif choice == 3 and "total_amount" in event:
            event["total_amount"] = -abs(event["total_amount"]) - 1
        elif choice == 3 and "amount_cents" in event:
            event["amount_cents"] = "lots"
        elif choice == 4 and "items" in event:
            event["items"] = []
        elif choice == 4 and "quantity" in event:
            event["quantity"] = 0
        else:
            event["currency" if "currency" in event else "country"] = "???"

    # -- the funnel -----------------------------------------------------------
    def _session(self, start: datetime) -> Iterator[tuple[datetime, Event]]:
        rng = self.rng
        user = rng.choice(self.users)
        session_id = self._uuid()
        country, currency, offset, _ = rng.choices(MARKETS, weights=[m[3] for m in MARKETS])[0]
        device = weighted(rng, DEVICES)
        source = weighted(rng, TRAFFIC_SOURCES)
        t = start

        def base(event_type: str) -> Event:
            return {
                "event_id": self._uuid(),
                "event_type": event_type,
                "timestamp": _ts(t, offset),
                "user_id": user,
                "session_id": session_id,
                "device": device,
                "country": country,
                "schema_version": 1,
            }

        def page(page_type: str, product: Product | None = None) -> Event:
            e = base("page_view")
            e["page_type"] = page_type
            e["page_url"] = f"/{page_type}" + (f"/{product.product_id}" if product else "")
            if product is not None:
                e["product_id"] = product.product_id
                e["category"] = product.category
            e["referrer"] = REFERRERS[source]
            e["traffic_source"] = source
            return e

        def later(lo: float, hi: float) -> datetime:
            return t + timedelta(seconds=rng.uniform(lo, hi))

        logged_in = rng.random() < 0.35
        if logged_in:
            e = base("user_session")
            e["action"] = "login"
            yield t, e
            t = later(1, 5)
        yield t, page(rng.choices(("home", "category", "search"), weights=(5, 3, 2))[0])
        cart: dict[str, tuple[Product, int]] = {}
        for _ in range(min(12, int(rng.expovariate(1 / 3.0)) + 1)):
            t = later(3, 45)
            product = rng.choice(self.catalog)
            if rng.random() < 0.3:
                yield t, page("category")
                t = later(2, 20)
            yield t, page("product", product)
            if rng.random() < 0.25:
                t = later(2, 30)
                qty = rng.choices((1, 2, 3), weights=(80, 15, 5))[0]
                e = base("add_to_cart")
                e.update(self._line(product, qty, currency))
                yield t, e
                held = cart.get(product.product_id)
                cart[product.product_id] = (product, qty + (held[1] if held else 0))
        if cart and rng.random() < 0.15:
            t = later(2, 20)
            pid = rng.choice(sorted(cart))
            product, qty = cart.pop(pid)
            e = base("remove_from_cart")
            e.update(self._line(product, qty, currency))
            yield t, e
        if cart and rng.random() < 0.8:
            t = later(2, 30)
            yield t, page("cart")
            if rng.random() < 0.65:
                t = later(5, 60)
                yield t, page("checkout")
                if rng.random() < 0.8:
                    t = later(10, 90)
                    order = self._order(base("purchase"), cart, currency)
                    yield t, order
                    yield from self._payments(order, t, offset, base)
        if logged_in and rng.random() < 0.3:
            t = later(5, 120)
            e = base("user_session")
            e["action"] = "logout"
            yield t, e

    def _line(self, product: Product, qty: int, currency: str) -> Event:
        return {
            "product_id": product.product_id,
            "category": product.category,
            "quantity": qty,
            "unit_price": product.price_cents(currency) / 100,
            "currency": currency,
        }

    def _order(self, event: Event, cart: dict[str, tuple[Product, int]], currency: str) -> Event:
        self._orders += 1
        items = []
        total = 0
        for pid in sorted(cart):
            product, qty = cart[pid]
            cents = product.price_cents(currency)
            total += cents * qty
            items.append(
                {
                    "product_id": pid,
                    "category": product.category,
                    "quantity": qty,
                    "unit_price": cents / 100,
                }
            )
        event.update(
            {
                "order_id": f"O{self._orders:08d}-{self.rng.randrange(16**4):04x}",
                "items": items,
                "total_amount": total / 100,
                "currency": currency,
                "payment_method": weighted(self.rng, PAYMENT_METHODS),
            }
        )
        return event

    def _payments(
        self, order: Event, placed: datetime, offset: str, base: Callable[[str], Event]
    ) -> Iterator[tuple[datetime, Event]]:
        """Authorized then captured (most), failed (some retried), partial, refunded, pending."""
        rng = self.rng
        total_cents = round(order["total_amount"] * 100)
        t = placed

        def pay(status: str, cents: int, payment_id: str) -> Event:
            e = base("payment")
            e["timestamp"] = _ts(t, offset)
            e.update(
                payment_id=payment_id,
                order_id=order["order_id"],
                amount_cents=cents,
                currency=order["currency"],
                status=status,
            )
            return e

        outcome = rng.choices(
            ("paid", "failed", "failed_retry", "partial", "refunded", "pending"),
            weights=(78, 4, 4, 5, 5, 4),
        )[0]
        payment_id = self._uuid()
        t = placed + timedelta(seconds=rng.uniform(1, 10))
        if outcome in ("failed", "failed_retry"):
            yield t, pay("failed", total_cents, payment_id)
            if outcome == "failed":
                return
            payment_id = self._uuid()
            t += timedelta(seconds=rng.uniform(20, 120))
        yield t, pay("authorized", total_cents, payment_id)
        if outcome == "pending":
            return
        t += timedelta(seconds=rng.uniform(1, 30))
        captured = total_cents if outcome != "partial" else total_cents * rng.randint(3, 9) // 10
        yield t, pay("captured", captured, payment_id)
        if outcome == "refunded":
            t += timedelta(minutes=rng.uniform(5, 90))
            yield t, pay("refunded", total_cents, payment_id)

    def _catalog_update(self, start: datetime) -> Iterator[tuple[datetime, Event]]:
        rng = self.rng
        kind = rng.choices(("price_change", "inventory_change", "new_product"), weights=(4, 5, 1))[
            0
        ]
        if kind == "new_product":
            product = build_catalog(rng, len(self.catalog) + 1)[-1]
            self.catalog.append(product)
        else:
            product = rng.choice(self.catalog)
            if kind == "price_change":
                factor = rng.choice((0.8, 0.9, 1.1, 1.2))
                product.price_usd_cents = max(99, round(product.price_usd_cents * factor))
            else:
                product.inventory = max(0, product.inventory + rng.randint(-50, 200))
        yield start, self._catalog_event(product, kind, start)

    def _catalog_event(self, product: Product, kind: str, at: datetime) -> Event:
        return {
            "event_id": self._uuid(),
            "event_type": "product_update",
            "timestamp": _ts(at, "+00:00"),
            "product_id": product.product_id,
            "name": product.name,
            "category": product.category,
            "price": product.price_usd_cents / 100,
            "currency": "USD",
            "inventory": product.inventory,
            "update_type": kind,
            "schema_version": 1,
        }
