"""Incremental gold equals a from-scratch recomputation, however the stream is split."""

from __future__ import annotations

import itertools
import json
import tempfile
import threading
import time
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shoplake.contract.tables import (
    DATA_QUALITY_REPORT,
    DIM_CUSTOMERS,
    EVENT_TABLES,
    ORDERS,
    PAGE_VIEWS,
    PAYMENTS,
    RAW_EVENTS,
    TableSpec,
)
from shoplake.engines import open_models_engine
from shoplake.errors import TableError, TableNotFound
from shoplake.pipeline import refresher
from shoplake.pipeline.positions import positions_of
from shoplake.pipeline.reconcile import current_gold, recomputed_gold
from shoplake.pipeline.runner import Pipeline
from shoplake.pipeline.silver import SILVER_TABLES, pending_ranges
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.tables import open_store
from tests.conftest import feed
from tests.unit.test_events import event

N = 2500


@cache
def stream() -> tuple[bytes, ...]:
    return tuple(e.value for e in itertools.islice(ShopSimulator(5, bad_ratio=0.08).stream(), N))


@cache
def one_shot_gold() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(home=Path(tmp))
        feed(s, list(stream()))
        p = Pipeline(s)
        p.run("both", until_idle=True)
        gold = current_gold(p.store)
        p.close()
    return gold


@hsettings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=N - 1), max_size=4, unique=True).map(sorted),
    restarts=st.lists(st.booleans(), min_size=5, max_size=5),
    batch=st.sampled_from([300, 1000, 100_000]),
    catch_up_every=st.sampled_from([0.0, 30.0]),
)
def test_any_split_with_restarts_gives_the_same_gold(
    cuts: list[int], restarts: list[bool], batch: int, catch_up_every: float
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(
            home=Path(tmp),
            pipeline={"batch_max_records": batch, "catch_up_gold_every_s": catch_up_every},
        )
        lines = list(stream())
        pipeline = Pipeline(s)
        for i, (lo, hi) in enumerate(itertools.pairwise([0, *cuts, N])):
            feed(s, lines[lo:hi])
            if restarts[i]:
                pipeline.close()
                pipeline = Pipeline(s)
            pipeline.run("both", until_idle=True)
        gold = current_gold(pipeline.store)
        assert gold == recomputed_gold(pipeline.store, s.reporting)
        assert gold == one_shot_gold()
        paid = sum(row["paid_orders"] for row in gold["gold.fct_sales_minute"])
        assert paid > 20  # a real workload, not an empty one
        pipeline.close()


def _gold_rows(p: Pipeline) -> int:
    return sum(len(rows) for rows in current_gold(p.store).values())


def test_gold_waits_while_silver_catches_up_on_a_backlog(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, pipeline={"batch_max_records": 500, "catch_up_gold_every_s": 3600})
    feed(s, list(stream()))
    p = Pipeline(s)
    one_round = threading.Event()
    stats = p.run("both", stop=one_round, on_round=lambda _: one_round.set())
    assert stats.silver_written > 0  # silver took one batch of what the log holds…
    assert _gold_rows(p) == 0  # …and the derived tables wait for the rest
    p.run("ingestion", until_idle=True)
    assert p.process_once() > 0  # the same with the backlog in bronze
    assert _gold_rows(p) == 0
    p.run("processing", until_idle=True)
    assert current_gold(p.store) == one_shot_gold()
    p.close()


def test_gold_follows_every_batch_when_told_not_to_wait(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, pipeline={"batch_max_records": 500, "catch_up_gold_every_s": 0})
    feed(s, list(stream()))
    p = Pipeline(s)
    p.run("ingestion", until_idle=True)
    p.process_once()
    assert _gold_rows(p) > 0
    p.close()


def test_a_continuous_run_keeps_sales_per_minute_current_every_round(tmp_path: Path) -> None:
    """gold.fct_sales_minute follows each round; the other derived tables are left to the
    refresher thread (here: never due), and catch up in the next run."""
    s = Settings(home=tmp_path, pipeline={"catch_up_gold_every_s": 0, "gold_refresh_s": 3600})
    feed(s, list(stream()))
    p = Pipeline(s)
    worked = threading.Event()
    p.run("both", stop=worked, on_round=lambda st: worked.set() if st.silver_written else None)
    gold = current_gold(p.store)
    assert gold["gold.fct_sales_minute"]  # counted in gold within the round…
    assert not gold["gold.daily_sales_summary"]  # …while the daily tables wait their turn
    p.run("both", until_idle=True)
    assert current_gold(p.store) == one_shot_gold()
    p.close()


def _consumed(p: Pipeline, spec: TableSpec) -> int:
    """The bronze records ``spec`` has consumed, over every partition."""
    return sum(positions_of(p.store.open(spec), p.transport.partitions()).values())


def test_sales_per_minute_does_not_wait_for_silvers_other_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a continuous run's round the FAST lane steps as soon as the order tables have
    committed the batch, before the page views and the rest do."""
    s = Settings(home=tmp_path)
    feed(s, list(stream()))
    p = Pipeline(s)
    p.run("ingestion", until_idle=True)
    seen: dict[str, int] = {}
    step_models = Pipeline._step_models

    def spy(self: Pipeline, models: Any, tps: Any, stats: Any) -> int:
        seen.update({spec.name: _consumed(self, spec) for spec in (ORDERS, PAYMENTS, PAGE_VIEWS)})
        return int(step_models(self, models, tps, stats))

    monkeypatch.setattr(Pipeline, "_step_models", spy)
    p.process_once(fast_only=True)
    assert seen == {"orders": N, "payments": N, "page_views": 0}
    assert not p._awaiting_gold  # no observer: no order times kept for one
    assert all(_consumed(p, spec) == N for spec in SILVER_TABLES)  # the round finished
    assert (
        current_gold(p.store)["gold.fct_sales_minute"] == one_shot_gold()["gold.fct_sales_minute"]
    )
    p.close()


def test_a_round_stopped_after_the_order_tables_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FAST lane failing within silver's step leaves the other silver tables behind
    the order tables; the next round catches them up, each event once."""
    s = Settings(home=tmp_path)
    feed(s, list(stream()))
    p = Pipeline(s)
    p.run("ingestion", until_idle=True)

    def fails(*_: Any) -> int:
        raise TableError("the disk went away")

    with monkeypatch.context() as m:
        m.setattr(Pipeline, "_step_models", fails)
        with pytest.raises(TableError):
            p.process_once(fast_only=True)
    assert (_consumed(p, ORDERS), _consumed(p, PAGE_VIEWS)) == (N, 0)
    p.process_once(fast_only=True)
    assert all(_consumed(p, spec) == N for spec in SILVER_TABLES)
    p.run("processing", until_idle=True)
    assert current_gold(p.store) == one_shot_gold()
    p.close()


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_the_refresh_lane_brings_the_other_gold_tables_up_to_date(
    tmp_path: Path, process: bool
) -> None:
    s = Settings(home=tmp_path, pipeline={"gold_refresh_s": 0.2, "gold_refresh_process": process})
    feed(s, list(stream()))
    p = Pipeline(s)
    stop = threading.Event()
    runner = threading.Thread(target=p.run, args=("both",), kwargs={"stop": stop})
    runner.start()

    def caught_up() -> bool:
        try:
            return current_gold(open_store(s)) == one_shot_gold()
        except TableNotFound:  # the run has not created them yet
            return False

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not caught_up():
            time.sleep(0.5)
    finally:
        stop.set()
        runner.join(60)
    assert current_gold(p.store) == one_shot_gold()
    p.close()


def test_the_data_quality_report_adds_each_step_to_its_days(tmp_path: Path) -> None:
    """Each step adds what its records hold to the day's rows (reasons summed, not
    replaced); every row of a day says how old its table's newest arrival was at the
    step that wrote it, tables the step did not touch included."""
    s = Settings(home=tmp_path, pipeline={"batch_max_records": 300, "catch_up_gold_every_s": 0})
    p = Pipeline(s)
    lines = list(stream())
    for lo, hi in itertools.pairwise([0, 700, 1500, N]):
        feed(s, lines[lo:hi])
        p.run("both", until_idle=True)
        time.sleep(0.05)
    assert len(p.store.history(DATA_QUALITY_REPORT)) > 3  # one version per step
    gold = current_gold(p.store)
    assert gold == recomputed_gold(p.store, s.reporting) == one_shot_gold()
    reasons = [json.loads(r["quarantine_reasons"]) for r in gold["gold.data_quality_report"]]
    assert max(sum(r.values()) for r in reasons) > 10  # counted over several steps
    report = p.store.open(DATA_QUALITY_REPORT).scan().to_pylist()
    bronze = p.store.open(RAW_EVENTS).scan(["event_type", "ingest_ts"]).to_pylist()
    zone = ZoneInfo(s.reporting.timezone)
    newest: dict[tuple[date, str], datetime] = {}
    for b in bronze:
        spec = EVENT_TABLES.get(b["event_type"])
        key = (b["ingest_ts"].astimezone(zone).date(), "unknown" if spec is None else spec.name)
        newest[key] = max(newest.get(key, b["ingest_ts"]), b["ingest_ts"])
    assert len({(r["partition_date"], r["processed_ts"]) for r in report}) == len(
        {r["partition_date"] for r in report}
    )  # the rows of a day are as of the step that wrote it, untouched tables too
    for r in report:
        age = r["processed_ts"] - newest[(r["partition_date"], r["table_name"])]
        assert abs(r["freshness_s"] - age.total_seconds()) < 1e-3, r["table_name"]
    p.close()


def _seen(event_id: str, ts: str, kind: str = "page_view", **changes: Any) -> dict[str, Any]:
    return event(kind, event_id=event_id, timestamp=ts, user_id="U1", **changes)


def test_a_customers_row_folds_new_events_in_and_is_recomputed_when_it_cannot(
    tmp_path: Path,
) -> None:
    """silver.dim_customers folds a step's later events into a customer's row; an older
    event (it may carry the latest country) or an order placed again makes the step
    recompute the customer from all of their events. Each step must equal a recompute."""
    s = Settings(home=tmp_path, pipeline={"catch_up_gold_every_s": 0})
    p = Pipeline(s)
    steps = [
        [_seen("a", "2026-03-01T10:00:00Z", country="DE", device="mobile")],
        # later: folded in; the order counts once
        [_seen("b", "2026-03-01T11:00:00Z", country="FR"),
         _seen("c", "2026-03-01T11:05:00Z", "purchase", order_id="O1", country=None)],
        # an older view with a later country than… none: FR stays; recomputed
        [_seen("d", "2026-03-01T10:30:00Z", country="IT", device="tablet")],
        # O1 placed again later: counted once, recomputed
        [_seen("e", "2026-03-01T12:00:00Z", "purchase", order_id="O1")],
        # a new order, later: folded, counted
        [_seen("f", "2026-03-01T13:00:00Z", "purchase", order_id="O2", device="desktop")],
        # an older view that agrees with the row: folded in
        [_seen("g", "2026-03-01T10:20:00Z", device="desktop")],
        # an order older than everything: recomputed (first seen moves)
        [_seen("h", "2026-03-01T09:00:00Z", "purchase", order_id="O3", device="desktop")],
    ]  # fmt: skip
    expected = [
        ("DE", "mobile", 0, "10:00", "10:00"),
        ("FR", "mobile", 1, "10:00", "11:05"),
        ("FR", "mobile", 1, "10:00", "11:05"),
        ("DE", "mobile", 1, "10:00", "12:00"),
        ("DE", "desktop", 2, "10:00", "13:00"),
        ("DE", "desktop", 2, "10:00", "13:00"),
        ("DE", "desktop", 3, "09:00", "13:00"),
    ]
    for events, (country, device, orders, first, last) in zip(steps, expected, strict=True):
        feed(s, list(events))
        p.run("both", until_idle=True)
        [row] = p.store.open(DIM_CUSTOMERS).scan().to_pylist()
        seen = (row["first_seen_ts"].strftime("%H:%M"), row["last_seen_ts"].strftime("%H:%M"))
        assert (row["country"], row["device"], row["orders_placed"], *seen) == (
            country, device, orders, first, last,
        )  # fmt: skip
        gold = current_gold(p.store)
        assert (
            gold["silver.dim_customers"]
            == recomputed_gold(p.store, s.reporting)["silver.dim_customers"]
        )
    p.close()


def test_a_customer_recomputed_while_silver_is_ahead_counts_each_order_once(
    tmp_path: Path,
) -> None:
    """The refresh lane recomputes a customer while silver already holds later events
    than the positions it consumes; those events arrive as a later step's new input, so
    the recompute must not have counted them (its rows are cut to the positions)."""
    s = Settings(home=tmp_path, pipeline={"catch_up_gold_every_s": 0})
    feed(s, [_seen("a", "2026-03-01T10:00:00Z", country="DE")])
    first = Pipeline(s)
    first.run("both", until_idle=True)
    first.close()
    p = Pipeline(s)  # knows nothing of the customer: a late event makes it recompute
    [model] = [m for m in p._processing_stages()[1] if m.spec is DIM_CUSTOMERS]
    tps = p.transport.partitions()
    newcomer = [  # a new customer whose order comes twice, the second time beyond the step
        event("purchase", event_id=e, timestamp=t, user_id="U2", order_id="O2")
        for e, t in (("x", "2026-03-01T11:00:00Z"), ("y", "2026-03-01T11:01:00Z"))
    ]
    feed(s, [_seen("b", "2026-03-01T09:00:00Z", country="IT"), newcomer[0]])  # b: late
    p.run("ingestion", until_idle=True)
    p.step_silver()
    late_view = pending_ranges(p.store, DIM_CUSTOMERS, model.decl.inputs, tps)
    feed(s, [_seen("c", "2026-03-01T09:30:00Z", "purchase", order_id="O1"), newcomer[1]])
    p.run("ingestion", until_idle=True)
    p.step_silver()  # silver is ahead of the step below
    rows, _ = model.recompute(late_view, tps)
    model.decl.commit(p.store, rows, late_view)
    model.committed(late_view, rows)
    p.run("both", until_idle=True)  # the order is new input now
    rows = {r["user_id"]: r for r in p.store.open(DIM_CUSTOMERS).scan().to_pylist()}
    assert (rows["U1"]["country"], rows["U1"]["orders_placed"]) == ("DE", 1)
    assert rows["U2"]["orders_placed"] == 1
    assert (
        current_gold(p.store)["silver.dim_customers"]
        == (recomputed_gold(p.store, s.reporting)["silver.dim_customers"])
    )
    p.close()


def test_a_refresh_pass_starts_every_period_not_a_period_after_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh lane waits out only what is left of ``gold_refresh_s`` after a pass
    (so the daily tables are at most one period and one pass behind, not two)."""
    s = Settings(home=tmp_path, pipeline={"gold_refresh_s": 30})
    feed(s, list(stream()))
    p = Pipeline(s)
    p.run("both", until_idle=True)
    real_step = refresher.step_models

    def slow_step(*args: Any) -> int:
        time.sleep(0.3)
        return real_step(*args)

    monkeypatch.setattr(refresher, "step_models", slow_step)
    waits: list[float | None] = []

    class ThreePasses:
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            return len(waits) > 3

        def is_set(self) -> bool:
            return len(waits) > 3

    engine = open_models_engine(s)
    refresher.refresh_until_stopped(
        s, engine, p.transport.partitions(), ThreePasses(), lambda *_: None
    )
    engine.close()
    p.close()
    first, *later = waits
    assert first == pytest.approx(30, abs=0.05)
    assert len(later) == 3
    assert all(w is not None and w < 29.75 for w in later), waits
