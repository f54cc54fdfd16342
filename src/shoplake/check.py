"""``shoplake check``: health checks with a pass/fail line and the figure behind each."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from decimal import Decimal

from shoplake.contract.tables import (
    ALL_TABLES,
    DUPLICATES,
    FCT_SALES_MINUTE,
    ORDER_PAYMENTS,
    QUARANTINE,
    RAW_EVENTS,
    TableSpec,
)
from shoplake.errors import ShoplakeError, TableNotFound
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


def transport_ends(settings: Settings) -> dict[TopicPartition, int]:
    """The transport's end offset per partition (ShoplakeError when it does not answer)."""
    transport = open_transport(settings, create=False)
    try:
        return transport.end_offsets()
    finally:
        transport.close()


def run_checks(settings: Settings, store: TableStore, limits: Thresholds) -> list[Check]:
    checks: list[Check] = []
    ends: dict[TopicPartition, int] | None = None
    try:
        ends = transport_ends(settings)
        checks.append(
            Check(
                "transport reachable",
                True,
                f"{len(ends)} partitions, {sum(ends.values()):,} records",
            )
        )
    except ShoplakeError as exc:
        checks.append(Check("transport reachable", False, str(exc)))

    missing: list[str] = []
    unreadable: list[str] = []
    error = ""
    for spec in ALL_TABLES:
        try:
            store.open(spec).count()
        except TableNotFound:
            missing.append(spec.qualified)
        except ShoplakeError as exc:
            unreadable.append(spec.qualified)
            error = error or str(exc)  # one is enough: they tend to share a cause
    figure = f"{len(ALL_TABLES) - len(missing) - len(unreadable)}/{len(ALL_TABLES)} tables"
    if missing:
        figure += f"; missing: {', '.join(missing[:4])}"
    if unreadable:
        figure += f"; unreadable: {', '.join(unreadable[:4])} ({error})"
    checks.append(Check("every table exists and reads", not (missing or unreadable), figure))
    unreadable += missing
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
    tps = bronze_partitions(store)
    consumed = consumed_counts(settings, store, tps)
    rate = consumed.quarantined / consumed.bronze if consumed.bronze else 0.0
    checks.append(
        Check(
            "quarantine rate",
            rate <= limits.max_quarantine_rate,
            f"{rate:.2%} of {consumed.bronze:,} records processed "
            f"(limit {limits.max_quarantine_rate:.2%})",
        )
    )
    checks.append(_reconciliation(settings, store, tps, consumed))
    return [*checks, *_disk(settings, limits)]


@dataclass(frozen=True)
class Consumed:
    """The bronze records silver has consumed, and what silver made of them."""

    bronze: int
    valid: int
    quarantined: int
    duplicates: int

    @property
    def accounted(self) -> bool:
        return self.valid + self.quarantined + self.duplicates == self.bronze


def consumed_counts(settings: Settings, store: TableStore, tps: list[TopicPartition]) -> Consumed:
    """Counts that agree while the pipeline commits: every silver table is read at one
    snapshot, and each count covers only the bronze positions that *every* silver table had
    consumed at its snapshot (silver commits its tables one after another). Bronze is
    opened after silver, so it holds at least those records; it only ever grows."""
    silver = {spec.qualified: store.open(spec) for spec in SILVER_TABLES}
    snapshots = {**silver, RAW_EVENTS.qualified: store.open(RAW_EVENTS)}
    if not tps:
        return Consumed(0, 0, 0, 0)
    upto = {tp: min(positions_of(handle, [tp])[tp] for handle in silver.values()) for tp in tps}
    quoted = {tp: "'" + tp.topic.replace("'", "''") + "'" for tp in tps}
    values = ", ".join(f"({quoted[tp]}, {tp.partition}, {end})" for tp, end in upto.items())

    def count(spec: TableSpec) -> str:
        return (
            f"(SELECT count(*) FROM {spec.qualified} x JOIN consumed c "
            'ON x.topic = c.topic AND x."partition" = c."partition" AND x."offset" < c.upto)'
        )

    (row,) = (
        Lakehouse(settings, store)
        .query(
            f"""
        WITH consumed(topic, "partition", upto) AS (VALUES {values})
        SELECT {count(RAW_EVENTS)} AS bronze,
               {" + ".join(count(s) for s in ONE_ROW_PER_EVENT)} AS valid,
               {count(QUARANTINE)} AS quarantined,
               {count(DUPLICATES)} AS duplicates
        """,
            snapshots=snapshots,
        )
        .to_pylist()
    )
    return Consumed(row["bronze"], row["valid"], row["quarantined"], row["duplicates"])


def _reconciliation(
    settings: Settings, store: TableStore, tps: list[TopicPartition], consumed: Consumed
) -> Check:
    """Every bronze record silver consumed is in exactly one of: its silver table,
    quarantine, duplicates; and Σ gold GMV = Σ paid orders of silver.order_payments
    (converted), compared at snapshots of both that record the same positions."""
    name = "gold reconciles with silver"
    records = (
        f"bronze {consumed.bronze:,} = valid {consumed.valid:,} + quarantined "
        f"{consumed.quarantined:,} + duplicates {consumed.duplicates:,}"
    )
    money = _gmv_against_paid_orders(settings, store, tps)
    if money is None:
        figure = f"GMV not compared (gold was between two commits); {records}"
        money_ok = True
    else:
        gmv, paid = money
        figure = f"GMV {gmv} = paid orders {paid} {settings.reporting.currency}; {records}"
        money_ok = gmv == paid
    ok = money_ok and consumed.accounted
    return Check(name, ok, figure + ("" if ok else "  ← MISMATCH"))


def _gmv_against_paid_orders(
    settings: Settings, store: TableStore, tps: list[TopicPartition], attempts: int = 10
) -> tuple[Decimal, Decimal] | None:
    """Σ gmv of gold.fct_sales_minute and Σ converted totals of paid orders in
    silver.order_payments, from snapshots recording the same positions (None when the two
    never agreed: a pipeline committing one right after the other)."""
    for attempt in range(attempts):
        orders = store.open(ORDER_PAYMENTS)
        sales = store.open(FCT_SALES_MINUTE)
        if positions_of(orders, tps) == positions_of(sales, tps):
            break
        time.sleep(0.1 * (attempt + 1))
    else:
        return None
    rates = ", ".join(
        f"('{r['currency']}', {r['to_reporting']})"
        for r in rates_table(settings.reporting).to_pylist()
    )
    (row,) = (
        Lakehouse(settings, store)
        .query(
            f"""
        WITH rates(currency, to_reporting) AS (VALUES {rates})
        SELECT (SELECT coalesce(sum(gmv), 0) FROM gold.fct_sales_minute) AS gmv,
               (SELECT coalesce(sum(round(op.total_amount * r.to_reporting, 2)), 0)
                FROM silver.order_payments op JOIN rates r USING (currency)
                WHERE op.fully_paid) AS paid
        """,
            snapshots={ORDER_PAYMENTS.qualified: orders, FCT_SALES_MINUTE.qualified: sales},
        )
        .to_pylist()
    )
    return row["gmv"], row["paid"]


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
