"""The whole pipeline on Spark gives the tables the DuckDB runtime gives (issue 12's parity).

One shop's events — the hand-built shop of test_gold_marts (every customer segment,
refunds, failed and partial payments, duplicates, late and bad records) plus simulated
traffic with malformed and invalid records across midnight, in five currencies — go into
two homes through the embedded log. One home runs the embedded pipeline on DuckDB, the
other with SHOPLAKE_ENGINE__KIND=spark: ingestion from the log in the Python worker,
silver and gold on Spark, both in small batches so the incremental steps (dedupe, late
flags, touched keys and days) run many times. Every silver, dimension and gold table must
then hold the same rows, money to the cent, whatever the reporting time zone; a
``--date`` rebuild too. Only the columns that stamp processing time may differ.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shoplake.contract.tables import (
    ALL_TABLES,
    DAILY_SALES_SUMMARY,
    DUPLICATES,
    FCT_SALES_MINUTE,
    ORDERS,
    PAGE_VIEWS,
    PAYMENTS,
    QUARANTINE,
    RAW_EVENTS,
    TableSpec,
)
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.tables import TableStore, open_store
from shoplake.tables.delta import DeltaHandle
from shoplake.tables.iceberg import IcebergHandle
from tests.conftest import feed
from tests.integration.s3_server import S3Server
from tests.unit.test_gold_marts import SHOP

# one worker runs every Spark test (pytest -n): one session, one ivy resolution at a time
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("spark")]

# Stamped when a row is written: the two runtimes ran at different moments.
PROCESSING_TIME = {
    "ingest_ts",
    "ingest_date",
    "processed_ts",
    "updated_ts",
    "quarantined_ts",
    "quarantined_date",
    "detected_ts",
    "freshness_s",
}
SIMULATED = ((7, "2026-03-09T23:57:00"), (8, "2026-03-10T04:57:00"))
BATCH = "900"  # records per silver step: several incremental steps per run


@pytest.fixture(scope="module")
def fed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose embedded log holds the shop's events, not yet processed."""
    home = tmp_path_factory.mktemp("spark-runtime") / "fed"
    feed(Settings(home=home), SHOP)
    env = {**os.environ, "SHOPLAKE_HOME": str(home)}
    for seed, start in SIMULATED:
        subprocess.run(
            [sys.executable, "-m", "shoplake.cli", "generate", "--num-events", "1200",
             "--bad-ratio", "0.06", "--seed", str(seed), "--start", start, "--to", "embedded"],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
    return home


def processed(
    fed: Path,
    to: Path,
    engine: str,
    timezone: str,
    s3: S3Server | None = None,
    table_format: str = "delta",
    batch: str = BATCH,
) -> Pipeline:
    """A copy of the fed home, run until idle on ``engine`` in batches of ``batch``
    records; its tables on ``s3``'s server if given (Iceberg's in its REST catalog), in
    ``table_format``."""
    shutil.copytree(fed, to)
    lake = {} if s3 is None else {"lakehouse_uri": s3.new_lake(), "storage": s3.storage()}
    # Iceberg tables on S3 are in the S3 server's REST catalog
    tables = s3.new_rest_catalog() if s3 and table_format == "iceberg" else {"format": table_format}
    settings = Settings(
        home=to,
        engine={"kind": engine},
        reporting={"timezone": timezone},
        pipeline={"batch_max_records": batch},
        tables=tables,
        **lake,
    )
    pipeline = Pipeline(settings)
    pipeline.run("both", until_idle=True)
    return pipeline


@contextmanager
def driver_reads() -> Iterator[list[tuple[str, int]]]:
    """Every table read whose rows come into this process (the Spark driver's), as
    (table, rows), while the context is open."""
    reads: list[tuple[str, int]] = []

    def metered(scan: Any) -> Any:
        def read(self: Any, columns: Any = None, where: Any = None) -> pa.Table:
            rows = scan(self, columns, where)
            reads.append((self._spec.qualified, rows.num_rows))
            return rows

        return read

    with pytest.MonkeyPatch.context() as patch:
        for handle in (DeltaHandle, IcebergHandle):
            patch.setattr(handle, "scan", metered(handle.scan))
        yield reads


def _rows(spec: TableSpec, table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows without the processing-time columns, in a stable order; Decimals, datetimes
    and dates compare exactly."""
    kept = [n for n in table.column_names if n not in PROCESSING_TIME]
    return sorted(
        (tuple(r.values()) for r in table.select(kept).to_pylist()),
        key=lambda row: tuple((v is None, str(v)) for v in row),
    )


def assert_same_tables(duck: Pipeline, spark: Pipeline) -> None:
    assert tables_differing(duck.store, spark.store) == []


def tables_differing(duck: TableStore, spark: TableStore) -> list[str]:
    """The silver, dimension and gold tables whose rows differ between the two homes."""
    differing = []
    for spec in ALL_TABLES:
        if spec is RAW_EVENTS:
            continue  # bronze is the Python worker's in both runtimes
        want = duck.open(spec).dataset().to_table() if duck.exists(spec) else None
        got = spark.open(spec).dataset().to_table() if spark.exists(spec) else None
        if want is None or got is None:
            if want is not got:
                differing.append(spec.qualified)
        elif got.schema.names != want.schema.names or _rows(spec, got) != _rows(spec, want):
            differing.append(spec.qualified)
    return differing


def counts_differing(duck: TableStore, spark: TableStore) -> list[str]:
    """The tables whose row counts differ (a cheap first look before tables_differing)."""
    return [
        spec.qualified
        for spec in ALL_TABLES
        if spec is not RAW_EVENTS
        and (duck.open(spec).count() if duck.exists(spec) else -1)
        != (spark.open(spec).count() if spark.exists(spec) else -1)
    ]


@pytest.fixture(scope="module")
def runtimes(fed_home: Path, spark_engine: Any) -> Iterator[tuple[Pipeline, Pipeline]]:
    """Both runtimes in a reporting zone not UTC, where day boundaries move (the tests
    below on S3, on Iceberg and running on compare every table in UTC)."""
    zone = "America/New_York"
    root = fed_home.parent / zone.replace("/", "_")
    duck = processed(fed_home, root / "duckdb", "duckdb", zone)
    spark = processed(fed_home, root / "spark", "spark", zone)
    yield duck, spark
    duck.close()
    spark.close()


@pytest.fixture(scope="module")
def duck_utc(fed_home: Path) -> Iterator[Pipeline]:
    """The embedded runtime's tables in UTC, which the Spark runs below must equal."""
    duck = processed(fed_home, fed_home.parent / "UTC" / "duckdb", "duckdb", "UTC")
    yield duck
    duck.close()


def test_every_table_is_equal_on_both_runtimes(runtimes: tuple[Pipeline, Pipeline]) -> None:
    duck, spark = runtimes
    assert spark._engine.name == "spark"
    assert_same_tables(duck, spark)


def test_a_date_rebuild_is_equal_on_both_runtimes(runtimes: tuple[Pipeline, Pipeline]) -> None:
    duck, spark = runtimes
    days = [date(2026, 3, 10)]
    with driver_reads() as reads:
        rebuilt = spark.rebuild_days(days)
    assert duck.rebuild_days(days) == rebuilt > 0
    assert_same_tables(duck, spark)
    assert reads == [], "a rebuild on Spark reads table rows into the driver"


def test_the_events_exercise_what_the_runtimes_must_agree_on(
    runtimes: tuple[Pipeline, Pipeline],
) -> None:
    """Parity means something only if the data reach every rule: bad and duplicate
    records, late events, refunds, five currencies."""
    duck, _ = runtimes

    def read(spec: TableSpec) -> pa.Table:
        return duck.store.open(spec).dataset().to_table()

    assert len(set(read(QUARANTINE)["reason"].to_pylist())) >= 4
    assert read(DUPLICATES).num_rows > 0
    assert any(read(PAGE_VIEWS)["is_late"].to_pylist())
    assert "refunded" in set(read(PAYMENTS)["status"].to_pylist())
    assert len(set(read(ORDERS)["currency"].to_pylist())) == 5


def test_spark_sql_reads_the_tables_the_embedded_runtime_wrote(
    runtimes: tuple[Pipeline, Pipeline], spark_engine: Any
) -> None:
    """Interop: spark.read.format("delta") opens the embedded runtime's Delta tables and
    sees what DuckDB sees — every table's rows, and gold's revenue to the cent."""
    duck, _ = runtimes
    spark = spark_engine.spark
    for spec in ALL_TABLES:
        frame = spark.read.format("delta").load(duck.store.location(spec))
        assert frame.count() == duck.store.open(spec).count(), spec.qualified
    gold = spark.read.format("delta").load(duck.store.location(DAILY_SALES_SUMMARY))
    got = gold.selectExpr("sum(total_revenue) AS revenue").collect()[0]["revenue"]
    want = duck.store.open(DAILY_SALES_SUMMARY).dataset().to_table(columns=["total_revenue"])
    assert got == pc.sum(want["total_revenue"]).as_py()


def test_spark_plans_without_pulling_tables_into_the_driver(
    runtimes: tuple[Pipeline, Pipeline],
) -> None:
    """Incremental planning on Spark is engine work: after more events arrive, the
    driver reads only the new records and the keys they touch (a topic's offset span of
    them, which may hold a few of its partitions' older records), never a table whole, a
    day of it or a key's whole history, so no table need fit the driver. The models read
    their inputs in Spark. Both runtimes stay equal."""
    more = 300
    for pipeline in runtimes:
        env = {**os.environ, "SHOPLAKE_HOME": str(pipeline.settings.home)}
        subprocess.run(
            [sys.executable, "-m", "shoplake.cli", "generate", "--num-events", str(more),
             "--bad-ratio", "0.06", "--seed", "9", "--start", "2026-03-10T05:30:00",
             "--to", "embedded"],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
    duck, spark = runtimes
    duck.run("both", until_idle=True)
    with driver_reads() as reads:
        spark.run("both", until_idle=True)
    assert_same_tables(duck, spark)
    biggest = sorted(reads, key=lambda read: -read[1])[:5]
    assert biggest[0][1] <= 2 * more, f"the driver read (table, rows): {biggest}"
    assert spark.store.open(RAW_EVENTS).count() > 4 * 2 * more  # a whole table would show


def test_a_continuous_spark_run_keeps_every_table_equal_to_duckdb(
    fed_home: Path, duck_utc: Pipeline, spark_engine: Any, tmp_path: Path
) -> None:
    """`shoplake run --engine spark` running on (no --until-idle): the main loop steps
    silver and the FAST lane while the gold-refresh thread steps the REFRESH lane, both as
    Spark jobs at the same time over inputs of the same names (each thread has a session of
    its own). Once caught up every table equals the DuckDB runtime's, and stopping the run
    leaves the Spark application running for whoever started it."""
    home = tmp_path / "spark"
    shutil.copytree(fed_home, home)
    settings = Settings(
        home=home,
        engine={"kind": "spark"},
        pipeline={"batch_max_records": BATCH, "gold_refresh_s": 1, "catch_up_gold_every_s": 1},
    )
    spark = Pipeline(settings)
    stop = threading.Event()
    differing: list[str] = ["not compared yet"]

    def stop_once_caught_up() -> None:
        watched = open_store(settings)
        deadline = time.monotonic() + 300
        try:
            while differing and time.monotonic() < deadline and not stop.is_set():
                time.sleep(2)
                # rows are compared (in Python, CPU the run needs) once the counts agree
                differing[:] = counts_differing(duck_utc.store, watched) or tables_differing(
                    duck_utc.store, watched
                )
        finally:
            watched.close()
            stop.set()

    watcher = threading.Thread(target=stop_once_caught_up, name="watcher")
    watcher.start()
    try:
        stats = spark.run("both", stop=stop)
    finally:
        stop.set()
        watcher.join()
    try:
        assert differing == [], f"still different after 300 s: {differing}"
        assert stats.silver_written > 0
        assert_same_tables(duck_utc, spark)  # and nothing moved after the stop
        assert spark_engine.spark.range(3).count() == 3
    finally:
        spark.close()


def test_the_spark_runtime_on_s3_gives_the_same_tables(
    fed_home: Path, duck_utc: Pipeline, spark_engine: Any, s3_server: S3Server, tmp_path: Path
) -> None:
    """Spark reads its inputs through S3A; the tables are written through delta-rs (the
    other S3 tests write them in many small steps), all in one bucket: the same rows as the
    embedded runtime on a local folder. One batch: S3A's reads, not increments, are new here."""
    spark = processed(fed_home, tmp_path / "spark", "spark", "UTC", s3=s3_server, batch="100000")
    try:
        assert spark.settings.on_object_storage
        assert_same_tables(duck_utc, spark)
        orders = spark.store.location(ORDERS)
        assert orders.startswith("s3://")
        read = spark_engine.spark.read.format("delta").load(orders).count()
        assert read == duck_utc.store.open(ORDERS).count()
    finally:
        spark.close()


@pytest.mark.parametrize("catalog", ["sqlite", "rest-on-s3"])
def test_the_spark_runtime_reads_iceberg_tables_through_their_catalog(
    catalog: str,
    fed_home: Path,
    duck_utc: Pipeline,
    spark_engine: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """On Iceberg tables, Spark reads each model's inputs through the catalog PyIceberg
    commits to, at the snapshot the step planned on: Iceberg's JDBC catalog over the
    SQLite file of the default one, or the same REST catalog (SeaweedFS's, the tables in
    its S3 Tables bucket, read through S3A). The same rows as the embedded runtime on
    Delta; and shoplake reads what Spark's own Iceberg writer commits."""
    s3 = request.getfixturevalue("s3_server") if catalog == "rest-on-s3" else None
    spark = processed(  # two rounds: the second plans on snapshots the first committed
        fed_home, tmp_path / "spark", "spark", "UTC", s3, table_format="iceberg", batch="1300"
    )
    try:
        assert_same_tables(duck_utc, spark)
        scan = spark.store.open(ORDERS).described_scan()
        assert (scan.format, scan.name) == ("iceberg", "shoplake.silver.orders")
        assert scan.location.startswith("s3://tables-" if s3 else "/")
        spark._engine.register("iceberg_orders", scan)  # the pipeline's: it has the catalog
        got = spark._engine.table("SELECT count(*) AS n FROM iceberg_orders")
        assert got["n"].to_pylist() == [duck_utc.store.open(ORDERS).count()]
        assert_shoplake_reads_what_spark_writes(spark)
    finally:
        spark.close()


def assert_shoplake_reads_what_spark_writes(pipeline: Pipeline) -> None:
    """Spark's own Iceberg writer appends to a table and deletes rows from it as a delete
    file (merge-on-read); shoplake then reads the same rows, and its positions, which
    Spark's snapshots do not record, stay as they were."""
    session = pipeline._engine.spark  # type: ignore[attr-defined]
    name = f"{pipeline.settings.tables.catalog_name}.gold.fct_sales_minute"
    before = pipeline.store.open(FCT_SALES_MINUTE).positions_all()
    assert before
    session.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ('write.delete.mode'='merge-on-read')")
    session.sql(
        f"INSERT INTO {name} VALUES (TIMESTAMP'2031-01-01 00:00:00Z', 1.25, 1, current_timestamp())"
    )
    inserted = session.table(name).count()
    session.sql(f"DELETE FROM {name} WHERE paid_orders = 1")
    want = session.sql(f"SELECT count(*) AS n, sum(gmv) AS gmv FROM {name}").collect()[0]
    assert 0 < want["n"] < inserted
    assert session.table(f"{name}.delete_files").count() > 0  # rows deleted, files kept
    store = open_store(pipeline.settings)  # a reader of its own, as `shoplake query` is
    try:
        handle = store.open(FCT_SALES_MINUTE)
        assert handle.count() == handle.dataset().count_rows() == want["n"]
        assert pc.sum(handle.scan(["gmv"])["gmv"]).as_py() == want["gmv"]
        assert handle.positions_all() == before
    finally:
        store.close()
