"""``shoplake check``: health checks with a pass/fail line and the figure behind each."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from shoplake.contract.tables import ALL_TABLES, FCT_SALES_MINUTE, QUARANTINE, RAW_EVENTS
from shoplake.errors import ShoplakeError
from shoplake.pipeline.gold import rates_table
from shoplake.pipeline.ingest import bronze_lag
from shoplake.pipeline.positions import positions_of
from shoplake.pipeline.reconcile import bronze_partitions
from shoplake.pipeline.silver import ONE_ROW_PER_EVENT, SILVER_TABLES
from shoplake.query import Lakehouse
from shoplake.settings import Settings
from shoplake.tables.base import TableStore
from shoplake.transport import open_transport
from shoplake.transport.base import TopicPartition


@dataclass(frozen=True)
class Thresholds:
    max_age_s: float = 600.0  # since gold's last commit
    max_lag: int = 100_000  # records in the transport not yet in bronze
    max_quarantine_rate: float = 0.05  # quarantined / bronze records
    min_free_gb: float = 1.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    figure: str


def run_checks(settings: Settings, store: TableStore, limits: Thresholds) -> list[Check]:
    checks: list[Check] = []
    ends: dict[TopicPartition, int] | None = None
    try:
        transport = open_transport(settings, create=False)
        try:
            ends = transport.end_offsets()
        finally:
            transport.close()
        checks.append(
            Check(
                "transport reachable",
                True,
                f"{len(ends)} partitions, {sum(ends.values()):,} records",
            )
        )
    except ShoplakeError as exc:
        checks.append(Check("transport reachable", False, str(exc)))

    unreadable = []
    for spec in ALL_TABLES:
        try:
            store.open(spec).count()
        except ShoplakeError:
            unreadable.append(spec.qualified)
    checks.append(
        Check(
            "every table exists and reads",
            not unreadable,
            f"{len(ALL_TABLES) - len(unreadable)}/{len(ALL_TABLES)} tables"
            + (f"; missing: {', '.join(unreadable[:4])}" if unreadable else ""),
        )
    )
    if unreadable:
        return [*checks, *_disk(settings, limits)]

    age = Lakehouse(settings, store).commit_ages()["gold"]
    checks.append(
        Check(
            "gold is fresh",
            age is not None and age <= limits.max_age_s,
            "no gold commit yet"
            if age is None
            else f"last gold commit {age:,.0f} s ago (limit {limits.max_age_s:,.0f} s)",
        )
    )
    if ends is not None:
        lag = sum(bronze_lag(store, ends, settings.pipeline.consumer_group).values())
        checks.append(
            Check(
                "lag", lag <= limits.max_lag, f"{lag:,} records behind (limit {limits.max_lag:,})"
            )
        )
    bronze = store.open(RAW_EVENTS).count()
    quarantined = store.open(QUARANTINE).count()
    rate = quarantined / bronze if bronze else 0.0
    checks.append(
        Check(
            "quarantine rate",
            rate <= limits.max_quarantine_rate,
            f"{rate:.2%} of {bronze:,} records (limit {limits.max_quarantine_rate:.2%})",
        )
    )
    checks.append(_reconciliation(settings, store, bronze))
    return [*checks, *_disk(settings, limits)]


def _reconciliation(settings: Settings, store: TableStore, bronze: int) -> Check:
    """Σ gold GMV = Σ paid orders of silver (converted), and every bronze record is in
    exactly one of: its silver table, quarantine, duplicates. Checked once silver and gold
    have caught up with bronze (a running pipeline is otherwise between two commits)."""
    name = "gold reconciles with silver"
    tps = bronze_partitions(store)
    bronze_end = positions_of(store.open(RAW_EVENTS), tps, settings.pipeline.consumer_group)
    behind = sum(
        max(0, bronze_end[tp] - positions_of(store.open(spec), tps)[tp])
        for spec in (*SILVER_TABLES, FCT_SALES_MINUTE)
        for tp in tps
    )
    if behind:
        return Check(name, True, "skipped: the pipeline has not caught up with bronze yet")
    rates = ", ".join(
        f"('{r['currency']}', {r['to_reporting']})"
        for r in rates_table(settings.reporting).to_pylist()
    )
    counted = " + ".join(f"(SELECT count(*) FROM {s.qualified})" for s in ONE_ROW_PER_EVENT)
    (row,) = (
        Lakehouse(settings, store)
        .query(
            f"""
        WITH rates(currency, to_reporting) AS (VALUES {rates})
        SELECT (SELECT coalesce(sum(gmv), 0) FROM gold.fct_sales_minute) AS gmv,
               (SELECT coalesce(sum(round(op.total_amount * r.to_reporting, 2)), 0)
                FROM silver.order_payments op JOIN rates r USING (currency)
                WHERE op.fully_paid) AS paid,
               {counted} AS valid,
               (SELECT count(*) FROM silver.quarantine) AS quarantined,
               (SELECT count(*) FROM silver.duplicates) AS duplicates
        """
        )
        .to_pylist()
    )
    accounted = row["valid"] + row["quarantined"] + row["duplicates"]
    ok = row["gmv"] == row["paid"] and accounted == bronze
    return Check(
        name,
        ok,
        f"GMV {row['gmv']} = paid orders {row['paid']} {settings.reporting.currency}; "
        f"bronze {bronze:,} = valid {row['valid']:,} + quarantined {row['quarantined']:,} "
        f"+ duplicates {row['duplicates']:,}" + ("" if ok else "  ← MISMATCH"),
    )


def _disk(settings: Settings, limits: Thresholds) -> list[Check]:
    where = settings.home if settings.home.exists() else settings.home.parent
    free_gb = shutil.disk_usage(where).free / 2**30
    return [
        Check(
            "free disk",
            free_gb >= limits.min_free_gb,
            f"{free_gb:,.1f} GiB free at {where} (limit {limits.min_free_gb:g} GiB)",
        )
    ]
