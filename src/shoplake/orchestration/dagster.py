"""shoplake's tables as Dagster assets, generated from the model registry.

``dagster dev -m shoplake.orchestration.dagster`` (or ``shoplake dagster``) opens them on
the home and settings of the environment. Streaming stays in ``shoplake run``; Dagster
owns the asset graph, scheduled and backfilled rebuilds, checks and maintenance:

- one asset per table, grouped by layer, with the registry's inputs as its lineage and
  its rows, version, last commit and positions as metadata;
- the tables whose declaration rebuilds days are partitioned by day in the reporting
  time zone: materializing a partition recomputes that day from silver (a backfill);
- asset checks: ``shoplake check``'s (freshness, lag, quarantine rate, reconciliation)
  and, per derived table, incremental = a full recompute, naming the days that differ;
- a sensor that catches silver and the derived tables up when bronze has new commits,
  yesterday rebuilt daily at 01:00 (reporting time zone), and hourly maintenance.
"""

# No `from __future__ import annotations`: Dagster reads the context parameters' types.

import os
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

from shoplake.check import Check
from shoplake.contract.tables import (
    DATA_QUALITY_REPORT,
    FCT_SALES_MINUTE,
    QUARANTINE,
    RAW_EVENTS,
    TableSpec,
)
from shoplake.orchestration import steps
from shoplake.pipeline.maintenance import TableMaintenance
from shoplake.pipeline.reconcile import VOLATILE, current_gold, recomputed_gold
from shoplake.pipeline.registry import MODELS, ModelDecl
from shoplake.pipeline.runner import Pipeline
from shoplake.pipeline.silver import SILVER_TABLES
from shoplake.settings import Settings, load_settings
from shoplake.tables import TableStore, open_store

# The first day a partition exists for (a backfill reaches back to it).
START_DATE = os.environ.get("SHOPLAKE_DAGSTER_START_DATE", "2026-01-01")


def key_of(spec: TableSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.layer, spec.name])


def _table_metadata(store: TableStore, spec: TableSpec) -> dict[str, Any]:
    """Rows, version, last commit and the positions it recorded."""
    if not store.exists(spec):
        return {"rows": 0}
    handle = store.open(spec)
    history = store.history(spec, 1)
    meta: dict[str, Any] = {"rows": handle.count(), "version": handle.version}
    if history:
        meta["last commit"] = history[0].timestamp.isoformat()
        meta["operation"] = history[0].operation
        meta["positions"] = dg.MetadataValue.json(history[0].positions)
    return meta


def _bronze_asset() -> dg.AssetsDefinition:
    @dg.asset(
        key=key_of(RAW_EVENTS),
        group_name="bronze",
        description=RAW_EVENTS.description,
        kinds={"python"},
    )
    def bronze_raw_events(context: dg.AssetExecutionContext) -> dg.MaterializeResult[None]:
        settings = load_settings()
        pipeline = Pipeline(settings)
        try:
            rows = pipeline.run("ingestion", until_idle=True).ingested
            metadata = _table_metadata(pipeline.store, RAW_EVENTS)
        finally:
            pipeline.close()
        context.log.info(f"ingested {rows} records")
        return dg.MaterializeResult(metadata=metadata)

    return bronze_raw_events


def _silver_asset() -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="silver_from_bronze",
        specs=[
            dg.AssetSpec(
                key_of(spec),
                deps=[key_of(RAW_EVENTS)],
                group_name="silver",
                description=spec.description,
            )
            for spec in SILVER_TABLES
        ],
    )
    def silver_from_bronze(
        context: dg.AssetExecutionContext,
    ) -> Iterator[dg.MaterializeResult[None]]:
        settings = load_settings()
        pipeline = Pipeline(settings)
        try:
            rows = steps.until_idle(pipeline.step_silver)
            metadata = {spec: _table_metadata(pipeline.store, spec) for spec in SILVER_TABLES}
        finally:
            pipeline.close()
        context.log.info(f"silver read {rows} bronze rows")
        for spec, meta in metadata.items():
            yield dg.MaterializeResult(asset_key=key_of(spec), metadata=meta)

    return silver_from_bronze


def by_day(decl: ModelDecl[Any]) -> bool:
    """Partitioned by day in Dagster: the tables of rows per reporting day that a day's
    rebuild recomputes from silver. The data-quality report's days are arrival days and
    its rows what silver has consumed so far: it steps incrementally."""
    return decl.rebuilds_days and decl.spec is not DATA_QUALITY_REPORT


def _derived_asset(decl: ModelDecl[Any], days: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    spec = decl.spec
    partitioned = by_day(decl)

    @dg.asset(
        key=key_of(spec),
        deps=[key_of(s) for s in decl.inputs],
        group_name=spec.layer,
        description=spec.description,
        partitions_def=days if partitioned else None,
    )
    def derived(context: dg.AssetExecutionContext) -> dg.MaterializeResult[None]:
        settings = load_settings()
        pipeline = Pipeline(settings)
        try:
            if partitioned:
                day = date.fromisoformat(context.partition_key)
                rows = pipeline.rebuild_table_days(spec.qualified, [day])
                context.log.info(f"{spec.qualified}: rebuilt {day} ({rows} rows)")
            else:
                rows = steps.until_idle(lambda: pipeline.step_table(spec.qualified))
                context.log.info(f"{spec.qualified}: {rows} rows written")
            metadata = _table_metadata(pipeline.store, spec)
        finally:
            pipeline.close()
        return dg.MaterializeResult(metadata=metadata)

    return derived


# -- checks ---------------------------------------------------------------------------

# shoplake check's checks, each on the asset it speaks for.
_HEALTH = {
    "lag": RAW_EVENTS,
    "quarantine rate": QUARANTINE,
    "gold is fresh": FCT_SALES_MINUTE,
    "gold reconciles with silver": FCT_SALES_MINUTE,
}


def _check_name(check: str) -> str:
    return check.replace(" ", "_")


def _health_checks() -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                _check_name(name), asset=key_of(spec), description=f"shoplake check: {name}"
            )
            for name, spec in _HEALTH.items()
        ]
    )
    def shoplake_health() -> Iterator[dg.AssetCheckResult]:
        settings = load_settings()
        results = steps.checks_by_name(settings)
        # lag needs bronze only: check runs it after every table reads, so ask for it alone
        try:
            lag = steps.ingestion_health(settings)["lag"]
            results["lag"] = Check("lag", True, lag)
        except steps.CheckFailed as exc:
            results["lag"] = Check("lag", False, str(exc).removeprefix("check failed: lag: "))
        for name, spec in _HEALTH.items():
            found = results.get(name)
            yield dg.AssetCheckResult(
                check_name=_check_name(name),
                asset_key=key_of(spec),
                passed=found is not None and found.ok,
                description=f"{name}: {found.figure if found else 'not run (an earlier failed)'}",
            )

    return shoplake_health


def differing_days(current: list[dict[str, Any]], full: list[dict[str, Any]]) -> list[str]:
    """The days (or keys) whose rows differ between an incremental table and its full
    recompute."""

    def by_day(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for row in rows:
            day = row.get("partition_date") or row.get("minute_bucket") or row.get("order_ts")
            label = str(day.date() if isinstance(day, datetime) else day)
            kept = {k: v for k, v in row.items() if k not in VOLATILE}
            out.setdefault(label, []).append(repr(sorted(kept.items())))
        return {d: sorted(v) for d, v in out.items()}

    a, b = by_day(current), by_day(full)
    return sorted(d for d in a.keys() | b.keys() if a.get(d) != b.get(d))


def _reconcile_checks() -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                "equals_a_full_recompute",
                asset=key_of(d.spec),
                description="the incremental table equals its recomputation from all of silver",
            )
            for d in MODELS
        ]
    )
    def incremental_equals_recompute() -> Iterator[dg.AssetCheckResult]:
        settings = load_settings()
        store = open_store(settings)
        try:
            current = current_gold(store)
            full = recomputed_gold(store, settings.reporting)
        finally:
            store.close()
        for decl in MODELS:
            name = decl.spec.qualified
            days = differing_days(current[name], full[name])
            yield dg.AssetCheckResult(
                check_name="equals_a_full_recompute",
                asset_key=key_of(decl.spec),
                passed=not days,
                description=(
                    f"{name} equals a full recompute"
                    if not days
                    else f"{name} differs from a full recompute on {', '.join(days[:10])}"
                ),
                metadata={"days differing": len(days)},
            )

    return incremental_equals_recompute


# -- jobs, schedules, sensor ------------------------------------------------------------


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    zone = settings.reporting.timezone
    # up to today's partition: a live pipeline's today can be rebuilt too
    days = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone=zone, end_offset=1)
    derived = [_derived_asset(d, days) for d in MODELS]
    assets = [_bronze_asset(), _silver_asset(), *derived]

    incremental = [key_of(d.spec) for d in MODELS if not by_day(d)]
    catch_up = dg.define_asset_job(
        "catch_up",
        # the checks read every table: they run on their own, not in each run of a job
        selection=dg.AssetSelection.assets(
            *(key_of(s) for s in SILVER_TABLES), *incremental
        ).without_checks(),
        description="Silver and the incremental derived tables, up to bronze.",
    )
    daily_gold = dg.define_asset_job(
        "daily_gold",
        selection=dg.AssetSelection.assets(
            *(key_of(d.spec) for d in MODELS if by_day(d))
        ).without_checks(),
        description="The day-partitioned tables of one day, recomputed from silver.",
    )

    @dg.op
    def maintain_tables(context: dg.OpExecutionContext) -> None:
        current = load_settings()
        store = open_store(current)
        try:
            report = TableMaintenance(store, current.pipeline).run(
                min_files=current.pipeline.compact_min_files, vacuum=True
            )
        finally:
            store.close()
        context.log.info(f"compacted {report.compacted}, vacuumed {sorted(report.vacuumed)}")
        if report.failed:
            raise dg.Failure(f"maintenance failed for {report.failed}")

    @dg.job(description="Compaction and vacuum of every table.")
    def maintenance() -> None:
        maintain_tables()

    yesterday = dg.ScheduleDefinition(
        name="yesterday_at_1am",
        cron_schedule="0 1 * * *",
        execution_timezone=zone,
        job=daily_gold,
        execution_fn=_yesterday(zone),
    )
    hourly = dg.ScheduleDefinition(
        name="hourly_maintenance", cron_schedule="0 * * * *", job=maintenance
    )

    @dg.sensor(job=catch_up, minimum_interval_seconds=60)
    def new_bronze_commits(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        current = load_settings()
        store = open_store(current)
        try:
            version = store.open(RAW_EVENTS).version if store.exists(RAW_EVENTS) else None
        finally:
            store.close()
        if version is None or str(version) == context.cursor:
            return dg.SensorResult(skip_reason="no new bronze commit")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"bronze-v{version}")], cursor=str(version)
        )

    return dg.Definitions(
        assets=assets,
        asset_checks=[_health_checks(), _reconcile_checks()],
        jobs=[catch_up, daily_gold, maintenance],
        schedules=[yesterday, hourly],
        sensors=[new_bronze_commits],
    )


def _yesterday(zone: str) -> Any:
    def run_for_yesterday(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        when = context.scheduled_execution_time or datetime.now()
        day = (when.date() - timedelta(days=1)).isoformat()
        return dg.RunRequest(run_key=f"gold-{day}", partition_key=day)

    return run_for_yesterday


defs = build_definitions()
