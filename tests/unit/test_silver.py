"""Silver: typing, quarantine with reason codes, deduplication, nothing lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from shoplake.contract.tables import ORDERS, PAGE_VIEWS
from shoplake.pipeline.runner import Pipeline
from shoplake.pipeline.silver import ONE_ROW_PER_EVENT
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.tables.base import AllOf, Predicate
from shoplake.tables.delta import DeltaHandle, DeltaStore
from tests.conftest import feed, rows
from tests.unit.test_gold_sales_minute import order, payment


def good_order(**changes: Any) -> dict[str, Any]:
    return {**order("Q1", "2026-02-01T10:00:00Z", "10.00", "USD"), **changes}


def good_payment(**changes: Any) -> dict[str, Any]:
    return {**payment("Q1", "captured", 1000, "USD"), **changes}


CASES: list[tuple[bytes | dict[str, Any], str]] = [
    (b"not json at all", "invalid_json"),
    (b"\xff\xfe binary \x00 poison", "invalid_json"),
    (b"[1, 2, 3]", "invalid_json"),
    ({"event_id": "x", "timestamp": "2026-02-01T10:00:00Z"}, "missing_field"),
    (
        {"event_id": "x", "event_type": "teleport", "timestamp": "2026-02-01T10:00:00Z"},
        "unknown_event_type",
    ),
    (good_order(user_id=None), "missing_field"),
    (good_order(order_id=""), "missing_field"),
    (good_order(total_amount="12.50"), "bad_type"),
    (good_order(total_amount=-1), "negative_amount"),
    (good_order(total_amount=1e30), "bad_value"),
    (good_order(items=[]), "empty_items"),
    (good_order(items="P1"), "bad_type"),
    (
        good_order(items=[{"product_id": "P1", "category": "c", "quantity": 0, "unit_price": 1}]),
        "bad_value",
    ),
    (
        good_order(items=[{"product_id": "P1", "category": "c", "quantity": 1, "unit_price": -1}]),
        "negative_amount",
    ),
    (good_order(items=[7]), "bad_type"),
    (good_order(timestamp="yesterday"), "bad_timestamp"),
    (good_order(timestamp="2026-02-01T10:00:00"), "bad_timestamp"),
    (good_order(currency="usd"), "bad_value"),
    (good_order(currency="CHF"), "unknown_currency"),
    (good_order(country="France"), "bad_value"),
    (good_payment(amount_cents=10.5), "bad_type"),
    (good_payment(amount_cents=-100), "negative_amount"),
    (good_payment(status="stolen"), "bad_value"),
    (good_payment(payment_id=None), "missing_field"),
]


@pytest.mark.parametrize(("record", "reason"), CASES)
def test_each_invalid_kind_is_quarantined_with_its_reason(
    settings: Settings, pipeline: Pipeline, record: bytes | dict[str, Any], reason: str
) -> None:
    feed(settings, [record])
    pipeline.run("both", until_idle=True)
    got = rows(pipeline, "SELECT reason, detail, raw_value, topic FROM silver.quarantine")
    assert len(got) == 1
    assert got[0]["reason"] == reason
    assert got[0]["detail"]
    assert rows(pipeline, "SELECT count(*) AS n FROM silver.orders")[0]["n"] == 0
    assert rows(pipeline, "SELECT count(*) AS n FROM silver.payments")[0]["n"] == 0


def test_valid_records_are_typed_and_nothing_is_lost(
    settings: Settings, pipeline: Pipeline
) -> None:
    records = [good_order(), good_payment(), *(r for r, _ in CASES)]
    feed(settings, records)
    pipeline.run("both", until_idle=True)
    bronze = rows(pipeline, "SELECT count(*) AS n FROM bronze.raw_events")[0]["n"]
    quarantined = rows(pipeline, "SELECT count(*) AS n FROM silver.quarantine")[0]["n"]
    assert bronze == len(records)
    assert quarantined == len(CASES)
    (o,) = rows(pipeline, "SELECT * FROM silver.orders")
    assert str(o["total_amount"]) == "10.00" and o["item_count"] == 1
    assert o["event_ts"].isoformat() == "2026-02-01T10:00:00+00:00"
    (p,) = rows(pipeline, "SELECT * FROM silver.payments")
    assert str(p["amount"]) == "10.00" and p["status"] == "captured"
    poison = rows(
        pipeline, "SELECT raw_value FROM bronze.raw_events WHERE raw_value LIKE '%poison%'"
    )
    assert poison[0]["raw_value"] == "\\xff\\xfe binary \x00 poison"  # bytes kept, escaped


def test_duplicates_are_dropped_across_batches(settings: Settings, pipeline: Pipeline) -> None:
    first = good_order(event_id="same")
    feed(settings, [first, first])
    pipeline.run("both", until_idle=True)
    feed(settings, [first, good_payment(event_id="p"), good_payment(event_id="p")])
    stats = pipeline.run("both", until_idle=True)
    assert rows(pipeline, "SELECT count(*) AS n FROM silver.orders")[0]["n"] == 1
    assert rows(pipeline, "SELECT count(*) AS n FROM silver.order_items")[0]["n"] == 1
    assert rows(pipeline, "SELECT count(*) AS n FROM silver.payments")[0]["n"] == 1
    assert stats.duplicates_dropped == 2  # the order again, the payment's twin


def test_a_record_fixed_at_the_source_is_accepted(settings: Settings, pipeline: Pipeline) -> None:
    feed(settings, [good_order(total_amount=-10)])
    pipeline.run("both", until_idle=True)
    feed(settings, [good_order(event_id="fixed")])
    pipeline.run("both", until_idle=True)
    assert rows(pipeline, "SELECT count(*) AS n FROM silver.quarantine")[0]["n"] == 1
    assert rows(pipeline, "SELECT order_id FROM silver.orders") == [{"order_id": "Q1"}]


def test_every_event_type_has_its_table_and_unknown_fields_are_kept(
    settings: Settings, pipeline: Pipeline
) -> None:
    from tests.unit.test_events import event

    feed(
        settings,
        [
            event("page_view", ab_test="B", nested={"k": [1, 2]}),
            event("add_to_cart", event_id="c1"),
            event("remove_from_cart", event_id="c2"),
            event("user_session", event_id="s1"),
            event("product_update", event_id="u1"),
        ],
    )
    pipeline.run("both", until_idle=True)
    (pv,) = rows(pipeline, "SELECT * FROM silver.page_views")
    assert pv["page_type"] == "product" and pv["traffic_source"] == "organic"
    assert pv["event_ts"].isoformat() == "2026-03-01T09:00:00+00:00"  # +01:00 → UTC
    assert json.loads(pv["properties"]) == {"ab_test": "B", "nested": {"k": [1, 2]}}
    carts = rows(
        pipeline, "SELECT event_type, quantity, unit_price FROM silver.cart_events ORDER BY 1"
    )
    assert [(c["event_type"], c["quantity"], str(c["unit_price"])) for c in carts] == [
        ("add_to_cart", 2, "9.99"),
        ("remove_from_cart", 1, "9.99"),
    ]
    assert rows(pipeline, "SELECT action FROM silver.user_sessions") == [{"action": "login"}]
    (pu,) = rows(pipeline, "SELECT * FROM silver.product_updates")
    assert (pu["product_id"], str(pu["price"]), pu["inventory"]) == ("P1", "12.50", 40)
    assert json.loads(pu["properties"]) == {}


def test_bronze_reconciles_with_silver_quarantine_and_duplicates(
    settings: Settings, pipeline: Pipeline
) -> None:
    import itertools

    from shoplake.simulator import ShopSimulator

    lines = [e.value for e in itertools.islice(ShopSimulator(12, bad_ratio=0.1).stream(), 4000)]
    feed(settings, lines)
    stats = pipeline.run("both", until_idle=True)
    count = lambda t: rows(pipeline, f"SELECT count(*) AS n FROM {t}")[0]["n"]  # noqa: E731
    events = sum(count(spec.qualified) for spec in ONE_ROW_PER_EVENT)
    # what seed 12's 4000 events hold: 148 repeats and 158 broken records
    assert (stats.duplicates_dropped, count("silver.quarantine")) == (148, 158)
    assert stats.duplicates_dropped == count("silver.duplicates")
    assert (
        count("bronze.raw_events") == events + count("silver.quarantine") + stats.duplicates_dropped
    )
    [report] = rows(
        pipeline,
        "SELECT sum(rows_in) AS rows_in, sum(rows_valid) AS valid, sum(late_events) AS late, "
        "sum(duplicates_dropped) AS dups FROM gold.data_quality_report",
    )
    late = sum(count(f"silver.{t} WHERE is_late") for t in ("page_views", "orders", "payments"))
    assert late == 55  # the simulator sends some events 15–120 minutes behind
    assert report == {
        "rows_in": count("bronze.raw_events"),
        "valid": events,
        "late": sum(count(f"{spec.qualified} WHERE is_late") for spec in ONE_ROW_PER_EVENT),
        "dups": stats.duplicates_dropped,
    }


def _view(event_id: str, ts: str) -> dict[str, Any]:
    from tests.unit.test_events import event

    return event("page_view", event_id=event_id, timestamp=ts, session_id="one-partition")


def test_duplicates_are_dropped_within_the_horizon_only(tmp_path: Any) -> None:
    settings = Settings(home=tmp_path / "home", pipeline={"dedupe_horizon_days": 7})
    p = Pipeline(settings)
    for ts in ("2026-03-01T10:00:00Z", "2026-03-07T10:00:00Z", "2026-03-20T10:00:00Z"):
        feed(settings, [_view("same-id", ts)])  # one batch each: across micro-batches
        p.run("both", until_idle=True)
    kept = rows(p, "SELECT event_date FROM silver.page_views ORDER BY 1")
    dropped = rows(p, "SELECT event_date, table_name FROM silver.duplicates")
    p.close()
    # 7 March repeats 1 March within 7 days; 20 March is 19 days on: a new event
    assert [str(r["event_date"]) for r in kept] == ["2026-03-01", "2026-03-20"]
    assert [(str(r["event_date"]), r["table_name"]) for r in dropped] == [
        ("2026-03-07", "page_views")
    ]


def test_late_events_are_kept_and_flagged(settings: Settings, pipeline: Pipeline) -> None:
    feed(
        settings,
        [
            _view("a", "2026-03-01T10:00:00Z"),
            _view("b", "2026-03-01T10:20:00Z"),
            _view("c", "2026-03-01T10:15:00Z"),  # 5 minutes behind: within the watermark
            _view("d", "2026-03-01T10:05:00Z"),  # 15 minutes behind: late
        ],
    )
    pipeline.run("both", until_idle=True)
    got = rows(pipeline, "SELECT event_id, is_late FROM silver.page_views ORDER BY event_id")
    assert [(r["event_id"], r["is_late"]) for r in got] == [
        ("a", False),
        ("b", False),
        ("c", False),
        ("d", True),
    ]
    # the next batch continues from the newest time seen (10:20), even after a restart
    pipeline.close()
    again = Pipeline(settings)
    feed(settings, [_view("e", "2026-03-01T10:09:00Z")])
    again.run("both", until_idle=True)
    assert rows(again, "SELECT is_late FROM silver.page_views WHERE event_id = 'e'") == [
        {"is_late": True}
    ]
    [report] = rows(again, "SELECT sum(late_events) AS late FROM gold.data_quality_report")
    assert report == {"late": 2}
    again.close()


def test_dedupe_sees_rows_another_writer_added_between_steps(
    settings: Settings, pipeline: Pipeline
) -> None:
    """The processor keeps each table's event ids between steps; a commit it did not make
    (another writer, a repair) must still count."""
    feed(settings, [good_order(event_id="a", order_id="A")])
    pipeline.run("both", until_idle=True)
    store = open_store(settings)  # another writer, with its own handles
    held = store.open(ORDERS).dataset().to_table()
    store.append(ORDERS, held.set_column(held.schema.get_field_index("event_id"), "event_id",
                                         pa.array(["b"], pa.string())))  # fmt: skip
    store.close()
    feed(settings, [good_order(event_id="b", order_id="B"), good_order(event_id="c", order_id="C")])
    stats = pipeline.run("both", until_idle=True)
    ids = rows(pipeline, "SELECT event_id FROM silver.orders ORDER BY 1")
    assert [r["event_id"] for r in ids] == ["a", "b", "c"]
    assert stats.duplicates_dropped == 1


def _id_scans(monkeypatch: pytest.MonkeyPatch) -> list[Predicate | None]:
    """The filters of every read of event ids (dedupe's) from now on."""
    seen: list[Predicate | None] = []
    scan = DeltaHandle.scan

    def recording(
        self: DeltaHandle, columns: Any = None, where: Predicate | None = None
    ) -> pa.Table:
        if columns == ["event_id", "event_date"]:
            seen.append(where)
        return scan(self, columns, where)

    monkeypatch.setattr(DeltaHandle, "scan", recording)
    return seen


def test_an_event_of_an_earlier_day_reads_only_the_days_dedupe_lacks(
    settings: Settings, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dedupe keeps each table's ids from the horizon on; an event from before that reads
    the days in between, not the whole horizon again, and still finds a repeat there."""
    for event_id, ts in (("x", "2026-03-01T10:00:00Z"), ("y", "2026-03-10T10:00:00Z")):
        feed(settings, [_view(event_id, ts)])  # the index now starts after 1 March
        pipeline.run("both", until_idle=True)
    scans = _id_scans(monkeypatch)
    feed(settings, [_view("x", "2026-03-05T10:00:00Z")])  # 1 March's x, within 7 days
    stats = pipeline.run("both", until_idle=True)
    assert stats.duplicates_dropped == 1
    assert scans and all(isinstance(where, AllOf) for where in scans)  # bounded above too
    kept = rows(pipeline, "SELECT event_id, event_date FROM silver.page_views ORDER BY 2")
    assert [(r["event_id"], str(r["event_date"])) for r in kept] == [
        ("x", "2026-03-01"),
        ("y", "2026-03-10"),
    ]


def test_a_day_kept_past_the_horizon_does_not_count_for_dedupe(
    settings: Settings, pipeline: Pipeline
) -> None:
    """The index keeps a day past the horizon (for yesterday's late events), but an id
    seen only on that day is 8 days old: its repeat is a new event, as after a restart."""
    for event_id, ts in (("x", "2026-03-01T10:00:00Z"), ("y", "2026-03-09T10:00:00Z")):
        feed(settings, [_view(event_id, ts)])
        pipeline.run("both", until_idle=True)
    feed(settings, [_view("x", "2026-03-09T11:00:00Z")])
    stats = pipeline.run("both", until_idle=True)
    assert stats.duplicates_dropped == 0
    kept = rows(pipeline, "SELECT event_id FROM silver.page_views ORDER BY event_ts")
    assert [r["event_id"] for r in kept] == ["x", "y", "x"]


def test_compacting_a_table_keeps_its_dedupe_index(
    settings: Settings, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Table upkeep rewrites files, not rows: silver goes on with the ids it holds."""
    for event_id in ("a", "b"):
        feed(settings, [_view(event_id, "2026-03-01T10:00:00Z")])
        pipeline.run("both", until_idle=True)
    store = open_store(settings)  # as the gold lane's upkeep does, with handles of its own
    assert store.compact(PAGE_VIEWS)["numFilesRemoved"] == 2
    store.vacuum(PAGE_VIEWS, 0)
    store.close()
    scans = _id_scans(monkeypatch)
    feed(settings, [_view("a", "2026-03-01T11:00:00Z"), _view("c", "2026-03-01T11:00:00Z")])
    stats = pipeline.run("both", until_idle=True)
    assert stats.duplicates_dropped == 1
    assert scans == []
    ids = rows(pipeline, "SELECT event_id FROM silver.page_views ORDER BY 1")
    assert [r["event_id"] for r in ids] == ["a", "b", "c"]


def test_a_compaction_just_before_silvers_append_keeps_its_dedupe_index(
    settings: Settings, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gold lane's upkeep may commit between silver's read of a table and its append:
    the ids silver keeps still hold after that append."""
    for event_id in ("a", "b"):
        feed(settings, [_view(event_id, "2026-03-01T10:00:00Z")])
        pipeline.run("both", until_idle=True)
    append = DeltaStore.append

    def compact_first(self: DeltaStore, spec: Any, *args: Any, **kwargs: Any) -> int:
        if spec == PAGE_VIEWS:
            upkeep = open_store(settings)
            assert upkeep.compact(PAGE_VIEWS)["numFilesRemoved"] >= 2
            upkeep.close()
        return append(self, spec, *args, **kwargs)

    monkeypatch.setattr(DeltaStore, "append", compact_first)
    feed(settings, [_view("c", "2026-03-01T10:00:00Z")])
    pipeline.run("both", until_idle=True)
    monkeypatch.setattr(DeltaStore, "append", append)
    scans = _id_scans(monkeypatch)
    feed(settings, [_view("c", "2026-03-01T11:00:00Z"), _view("d", "2026-03-01T11:00:00Z")])
    stats = pipeline.run("both", until_idle=True)
    assert stats.duplicates_dropped == 1
    assert scans == []


def test_each_silver_row_carries_when_silver_wrote_it(
    settings: Settings, pipeline: Pipeline
) -> None:
    before = datetime.now(UTC)
    feed(settings, [good_order(), good_payment()])
    pipeline.run("both", until_idle=True)
    later = datetime.now(UTC)
    feed(settings, [good_payment(event_id="p2", payment_id="P2")])
    pipeline.run("both", until_idle=True)
    stamps = {
        r["event_id"]: r["processed_ts"]
        for t in ("orders", "payments")
        for r in rows(pipeline, f"SELECT event_id, processed_ts FROM silver.{t}")
    }
    assert len(stamps) == 3
    assert all(before <= ts for ts in stamps.values())
    assert stamps["p2"] >= later > max(ts for e, ts in stamps.items() if e != "p2")
