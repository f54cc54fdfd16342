import itertools
from collections import Counter

import orjson

from shoplake.contract.events import EVENT_ADAPTER, EVENT_TYPES
from shoplake.simulator import ShopSimulator


def lines(seed: int, n: int, bad_ratio: float = 0.0) -> list[bytes]:
    return [e.value for e in itertools.islice(ShopSimulator(seed, bad_ratio=bad_ratio).stream(), n)]


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    assert lines(7, 3000, 0.05) == lines(7, 3000, 0.05)
    assert lines(7, 3000) != lines(8, 3000)


def test_every_clean_event_satisfies_the_contract() -> None:
    for raw in lines(3, 5000):
        EVENT_ADAPTER.validate_json(raw)


def test_counts_by_type_are_realistic() -> None:
    counts = Counter(orjson.loads(raw)["event_type"] for raw in lines(11, 30000))
    share = {k: v / 30000 for k, v in counts.items()}
    assert set(counts) == set(EVENT_TYPES)  # every type of the contract, nothing else
    assert 0.55 < share["page_view"] < 0.85  # browsing dominates
    assert share["add_to_cart"] > share["purchase"] > 0.01  # a funnel narrows
    assert share["remove_from_cart"] < share["add_to_cart"]
    assert counts["payment"] > counts["purchase"]  # authorise + capture, retries, refunds
    assert share["product_update"] < 0.01


def test_payments_cover_every_outcome_and_currencies_vary() -> None:
    events = [orjson.loads(raw) for raw in lines(5, 40000)]
    statuses = Counter(e["status"] for e in events if e["event_type"] == "payment")
    assert {"authorized", "captured", "failed", "refunded"} <= set(statuses)
    orders = {e["order_id"]: e for e in events if e["event_type"] == "purchase"}
    captured: Counter[str] = Counter()
    for e in events:
        if e["event_type"] == "payment" and e["status"] == "captured":
            captured[e["order_id"]] += e["amount_cents"]
    partial = [o for o, c in captured.items() if c < round(orders[o]["total_amount"] * 100)]
    assert partial, "some orders are only partly paid"
    assert len({e["currency"] for e in orders.values()}) >= 4
    assert len({e["device"] for e in events if "device" in e}) == 3
    assert {e["traffic_source"] for e in events if e["event_type"] == "page_view"} == {
        "direct",
        "organic",
        "paid",
        "email",
        "social",
    }


def test_bad_ratio_injects_each_kind_of_bad_input() -> None:
    emitted = list(itertools.islice(ShopSimulator(1, bad_ratio=0.2).stream(), 5000))
    kinds = Counter(e.kind for e in emitted)
    assert {"ok", "duplicate", "malformed", "invalid", "late"} <= set(kinds)
    malformed = [e.value for e in emitted if e.kind == "malformed"]
    for raw in malformed:
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        raise AssertionError(f"malformed line parsed: {raw!r}")
    ids = Counter(orjson.loads(e.value)["event_id"] for e in emitted if e.kind == "duplicate")
    assert any(n >= 2 for n in ids.values()), "duplicates repeat an event_id"
