"""shoplake's tables as Dagster assets (shoplake.orchestration.dagster): the definitions
load; materializing every asset in process gives the tables `run --until-idle` gives; a
backfill of one day rebuilds that day only; a gold row changed by hand fails the
reconcile check, which names the table and the day."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shoplake.contract.tables import DAILY_SALES_SUMMARY
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.tables import open_store
from tests.conftest import feed
from tests.integration.equivalence import assert_same_tables, run_to_idle

pytestmark = [pytest.mark.integration]

DAYS = ["2026-03-09", "2026-03-10"]  # the simulated events span midnight


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home whose log holds simulated events across two days; the assets' settings."""
    home = tmp_path / "home"
    start = datetime(2026, 3, 9, 23, 52, tzinfo=UTC)
    events = ShopSimulator(5, bad_ratio=0.03, start=start).stream()
    feed(Settings(home=home), [e.value for e in itertools.islice(events, 4000)])
    monkeypatch.setenv("SHOPLAKE_HOME", str(home))
    return home


def definitions() -> object:
    from shoplake.orchestration.dagster import build_definitions

    return build_definitions()


def materialize_everything(defs: object) -> None:
    """Every asset once, as a user clicking Materialize would: the unpartitioned ones in
    one run, then each day's partition of the day-partitioned ones."""
    graph = defs.resolve_asset_graph()  # type: ignore[attr-defined]
    assets = list(defs.assets)  # type: ignore[attr-defined]
    partitioned = [a for a in assets if a.partitions_def is not None]
    plain = [a for a in assets if a.partitions_def is None]
    assert graph.get_all_asset_keys()
    assert dg.materialize(plain, selection=dg.AssetSelection.all().without_checks()).success
    for day in DAYS:
        done = dg.materialize(
            partitioned, partition_key=day, selection=dg.AssetSelection.all().without_checks()
        )
        assert done.success


def checks_of(defs: object, check: str) -> dict[str, dg.AssetCheckEvaluation]:
    assets = list(defs.assets)  # type: ignore[attr-defined]
    checks = list(defs.asset_checks)  # type: ignore[attr-defined]
    result = dg.materialize(
        [*assets, *checks], selection=dg.AssetSelection.checks(*_check_keys(checks, check))
    )
    return {"/".join(e.asset_key.path): e for e in result.get_asset_check_evaluations()}


def _check_keys(checks: list[object], name: str) -> list[dg.AssetCheckKey]:
    """Every check of the definitions that hold a check ``name`` (a multi-asset check
    runs whole)."""
    return [
        k
        for c in checks
        if any(k.name == name for k in c.check_keys)  # type: ignore[attr-defined]
        for k in c.check_keys  # type: ignore[attr-defined]
    ]


def test_the_definitions_load_and_materialize_to_the_tables_of_a_run(
    home: Path, tmp_path: Path
) -> None:
    defs = definitions()
    dg.Definitions.validate_loadable(defs)  # type: ignore[arg-type]
    jobs = {j.name for j in defs.resolve_all_job_defs()}  # type: ignore[attr-defined]
    assert {"catch_up", "daily_gold", "maintenance"} <= jobs
    schedules = {s.name: s for s in defs.schedules}  # type: ignore[attr-defined]
    assert schedules["yesterday_at_1am"].cron_schedule == "0 1 * * *"

    clean = tmp_path / "clean"
    (clean / "transport").mkdir(parents=True)
    log = "transport/log.sqlite"
    (clean / log).write_bytes((home / log).read_bytes())
    run_to_idle(clean)

    materialize_everything(defs)

    assert_same_tables(Settings(home=home), Settings(home=clean))
    evaluations = checks_of(defs, "equals_a_full_recompute")
    assert len(evaluations) == 11 and all(e.passed for e in evaluations.values())


def test_a_day_partition_rebuilds_that_day_and_a_fault_fails_its_check(home: Path) -> None:
    defs = definitions()
    materialize_everything(defs)
    settings = Settings(home=home)
    store = open_store(settings)

    def tamper(day: str) -> None:  # a gold row changed by hand
        rows = store.open(DAILY_SALES_SUMMARY).scan()
        rows = rows.filter(pc.equal(rows["partition_date"], date.fromisoformat(day)))
        index = rows.schema.get_field_index("orders_placed")
        changed = rows.set_column(index, "orders_placed", pa.array([999_999] * rows.num_rows))
        store.replace(DAILY_SALES_SUMMARY, changed, "partition_date", [date.fromisoformat(day)])

    for day in DAYS:
        tamper(day)
    failed = checks_of(defs, "equals_a_full_recompute")["gold/daily_sales_summary"]
    assert not failed.passed
    assert "gold.daily_sales_summary" in failed.description
    assert all(day in failed.description for day in DAYS)

    # the backfill of one day's partition rebuilds that day, and only it
    daily = [a for a in defs.assets if a.partitions_def is not None]  # type: ignore[attr-defined]
    selection = dg.AssetSelection.assets(dg.AssetKey(["gold", "daily_sales_summary"]))
    assert dg.materialize(daily, partition_key=DAYS[0], selection=selection).success
    still = checks_of(defs, "equals_a_full_recompute")["gold/daily_sales_summary"]
    assert not still.passed
    assert DAYS[1] in still.description and DAYS[0] not in still.description


def test_the_sensor_follows_bronze_and_the_schedule_rebuilds_yesterday(home: Path) -> None:
    defs = definitions()
    sensor = defs.get_sensor_def("new_bronze_commits")  # type: ignore[attr-defined]
    repository = defs.get_repository_def()  # type: ignore[attr-defined]

    def tick(cursor: str | None) -> dg.SensorExecutionData:
        return sensor.evaluate_tick(
            dg.build_sensor_context(cursor=cursor, repository_def=repository)
        )

    before = tick(None)
    assert not before.run_requests  # no bronze yet
    run_to_idle(home)
    first = tick(None)
    [request] = first.run_requests
    assert request.job_name in (None, "catch_up") and first.cursor
    again = tick(first.cursor)
    assert not again.run_requests  # nothing new committed since

    schedule = defs.get_schedule_def("yesterday_at_1am")  # type: ignore[attr-defined]
    when = datetime(2026, 3, 11, 1, 0, tzinfo=UTC)
    result = schedule.evaluate_tick(
        dg.build_schedule_context(scheduled_execution_time=when, repository_def=repository)
    )
    [daily] = result.run_requests
    assert daily.partition_key == "2026-03-10"


def test_the_lag_check_needs_bronze_only(home: Path) -> None:
    """An ingestion-only deployment (silver not run yet) still gets its lag checked."""
    from shoplake.pipeline.runner import Pipeline

    defs = definitions()
    behind = checks_of(defs, "lag")["bronze/raw_events"]
    assert not behind.passed and "bronze.raw_events does not exist yet" in behind.description
    pipeline = Pipeline(Settings(home=home))
    pipeline.run("ingestion", until_idle=True)
    pipeline.close()
    caught_up = checks_of(defs, "lag")["bronze/raw_events"]
    assert caught_up.passed, caught_up.description
    assert caught_up.description == "lag: 0 records behind (limit 100,000)"
