"""Every SQL model gives the same rows on Spark as on DuckDB (issue 12's parity, first brick).

One shop goes through the real embedded pipeline: the hand-built shop of test_gold_marts
(every customer segment, refunds, failed payments, duplicates, late and bad records) plus
simulated traffic started just before midnight in UTC, New York and Kolkata and again
six weeks later. Each model then computes all of its rows on DuckDB — every call is
recorded, inputs and parameters included — and the Spark engine runs the same SQL text on
the same inputs and parameters. The answers must be equal: schema, and every row compared
exactly (money as Decimal, timestamps to the microsecond, dates), in UTC and in two
reporting time zones on either side of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import shoplake.pipeline.models
from shoplake.contract.tables import DATA_QUALITY_REPORT, PAGE_VIEWS
from shoplake.engines.duckdb import DuckDB
from shoplake.pipeline import registry
from shoplake.pipeline.positions import positions_of
from shoplake.pipeline.reconcile import bronze_partitions
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import ReportingSettings, Settings
from shoplake.tables.base import IsIn
from tests.conftest import feed
from tests.unit.test_gold_marts import SHOP

# one worker runs every Spark test (pytest -n): one session, one ivy resolution at a time
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("spark")]

ZONES = ("UTC", "America/New_York", "Asia/Kolkata")
# Two minutes before midnight in UTC (twice), Kolkata (UTC+5:30) and New York (UTC-5), and
# six weeks later: days are cut inside the traffic whatever the zone.
SIMULATED = (
    (1, "2026-01-01T18:28:00"),
    (2, "2026-01-02T04:58:00"),
    (3, "2026-01-02T23:58:00"),
    (4, "2026-02-15T23:58:00"),
)
MODELS_DIR = Path(shoplake.pipeline.models.__file__).parent


@dataclass
class Call:
    """One table_over call of a model on DuckDB: what went in and what came out."""

    sql: str
    timezone: str | None
    inputs: dict[str, pa.Table]
    params: dict[str, Any]
    result: pa.Table


class Recording(DuckDB):
    """DuckDB that keeps every model call, to replay it on Spark."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.timezone: str | None = None

    def define_local_date(self, timezone: str) -> None:
        super().define_local_date(timezone)
        self.timezone = timezone

    def table_over(
        self, sql: str, inputs: Mapping[str, Any], params: Mapping[str, Any] | None = None
    ) -> pa.Table:
        tables = {k: v.to_table() if isinstance(v, ds.Dataset) else v for k, v in inputs.items()}
        result = super().table_over(sql, tables, params)
        self.calls.append(Call(sql, self.timezone, tables, dict(params or {}), result))
        return result


def model_name(sql: str) -> str | None:
    """The model whose SQL this is; None for a model's planning query (days, spans)."""
    return next((p.stem for p in MODELS_DIR.glob("*.sql") if p.read_text() == sql), None)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    home = tmp_path_factory.mktemp("spark-parity") / "home"
    settings = Settings(home=home)
    feed(settings, SHOP)
    env = {**os.environ, "SHOPLAKE_HOME": str(home)}
    for seed, start in SIMULATED:
        subprocess.run(
            [sys.executable, "-m", "shoplake.cli", "generate", "--num-events", "1500",
             "--bad-ratio", "0.05", "--seed", str(seed), "--start", start, "--to", "embedded"],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
    pipeline = Pipeline(settings)
    pipeline.run("both", until_idle=True)
    yield pipeline
    pipeline.close()


def record_models(pipeline: Pipeline, timezone: str) -> list[Call]:
    """Every model computed over all of silver on DuckDB, days cut in ``timezone``."""
    store = pipeline.store
    reporting = ReportingSettings(timezone=timezone)
    engine = Recording()
    if timezone == "UTC":  # these models have no days to cut
        payments = registry.ORDER_PAYMENTS_MODEL.build(store, reporting, engine=engine)
        order_payments = payments.compute(None)
        registry.SALES_MINUTE_MODEL.build(store, reporting, engine=engine).compute(
            None, order_payments=order_payments
        )
        registry.DIM_PRODUCTS_MODEL.build(store, reporting, engine=engine).compute(None)
        registry.DIM_CUSTOMERS_MODEL.build(store, reporting, engine=engine).compute(None)
    for daily in registry.DAILY_MODELS:
        daily.build(store, reporting, engine=engine).compute(None)
    registry.CUSTOMER_ANALYTICS_MODEL.build(store, reporting, engine=engine).compute(None)
    consumed = positions_of(store.open(DATA_QUALITY_REPORT), bronze_partitions(store))
    registry.DATA_QUALITY_MODEL.build(store, reporting, engine=engine).compute(None, consumed)
    engine.close()
    return engine.calls


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows as tuples in a stable order: Decimals, datetimes and dates compare exactly."""
    return sorted(
        (tuple(row.values()) for row in table.to_pylist()),
        key=lambda row: tuple((v is None, str(v)) for v in row),
    )


@pytest.mark.parametrize("timezone", ZONES)
def test_every_model_gives_the_same_rows_on_spark(
    shop: Pipeline, spark_engine: Any, timezone: str
) -> None:
    calls = record_models(shop, timezone)
    names = {model_name(c.sql) for c in calls} - {None}
    expected = {p.stem for p in MODELS_DIR.glob("*.sql")}
    if timezone != "UTC":
        expected -= {"order_payments", "fct_sales_minute", "dim_products", "dim_customers"}
    assert names == expected
    for call in calls:  # the planning queries too: days and spans must agree
        name = model_name(call.sql) or " ".join(call.sql.split())[:60]
        assert call.result.num_rows > 0, f"{name} has no rows: the shop does not exercise it"
        if call.timezone is not None:
            spark_engine.define_local_date(call.timezone)
        got = spark_engine.table_over(call.sql, call.inputs, call.params)
        assert got.schema == call.result.schema, name
        assert _rows(got) == _rows(call.result), f"{name} ({timezone}) differs on Spark"


def test_the_shop_reaches_what_the_models_distinguish(shop: Pipeline) -> None:
    """The parity above means something only if the data exercise the edge cases."""
    calls = {model_name(c.sql): c.result for c in record_models(shop, "Asia/Kolkata")}
    assert None in calls  # planning queries are recorded, and replayed above
    segments = set(calls["daily_customer_analytics"]["customer_segment"].to_pylist())
    assert segments == {"At Risk", "High Value", "New", "Regular", "Prospect"}
    days = calls["daily_sales_summary"]["partition_date"].to_pylist()
    assert len(days) >= 5
    reasons = calls["data_quality_report"]["quarantine_reasons"].to_pylist()
    assert any(r != "{}" for r in reasons)


def test_a_scan_with_a_long_in_list_reads_the_same_rows_on_spark(
    shop: Pipeline, spark_engine: Any
) -> None:
    """More keys than Spark plans well as literals (a dimension's touched customers, the
    orders a batch touched) become a broadcast semi-join: the same rows as the store's
    own scan, keys that match nothing included."""
    handle = shop.store.open(PAGE_VIEWS)
    ids = handle.scan(["event_id"])["event_id"].combine_chunks()[:1500]
    assert len(ids) == 1500
    where = IsIn("event_id", pa.concat_arrays([ids, pa.array(["no-such-event"])]))
    want = handle.scan(["event_id", "user_id"], where)
    spark_engine.register("picked", handle.described_scan(["event_id", "user_id"], where))
    try:
        got = spark_engine.table("SELECT * FROM picked")
    finally:
        spark_engine.unregister("picked")
    assert _rows(got) == _rows(want) and got.num_rows == 1500


def test_round_follows_duckdb_on_a_tie_of_the_double(spark_engine: Any) -> None:
    """avg_order_value = 2.01 / 2 = 1.005 as a double (1.00499…): DuckDB rounds it to
    1.00, Spark's own ROUND to 1.01; the engine's rewrite keeps Spark at DuckDB's 1.00."""
    sql = "SELECT CAST(ROUND(CAST(revenue AS DOUBLE) / n, 2) AS DECIMAL(18, 2)) AS aov FROM t"
    inputs = {"t": pa.table({"revenue": pa.array([Decimal("2.01")], pa.decimal128(18, 2)),
                             "n": pa.array([2], pa.int64())})}  # fmt: skip
    duck = DuckDB()
    want = duck.table_over(sql, inputs)
    duck.close()
    assert want.to_pylist() == [{"aov": Decimal("1.00")}]
    assert spark_engine.table_over(sql, inputs).to_pylist() == want.to_pylist()


def test_parameters_bind_dates_before_year_1000_and_instants(spark_engine: Any) -> None:
    now = datetime(2026, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
    got = spark_engine.table_over(
        "SELECT $from_day AS d, CAST($now AS TIMESTAMP WITH TIME ZONE) AS ts, "
        "epoch(CAST($now AS TIMESTAMP WITH TIME ZONE)) AS s FROM one",
        {"one": pa.table({"x": [1]})},
        {"from_day": date.min, "now": now},
    )
    assert got.to_pylist() == [{"d": date.min, "ts": now, "s": now.timestamp()}]


def test_without_pyspark_the_error_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shoplake.engines.spark import SparkEngine
    from shoplake.errors import ConfigError

    monkeypatch.setitem(sys.modules, "pyspark", None)  # `import pyspark` raises ImportError
    with pytest.raises(ConfigError) as raised:
        SparkEngine("local[1]")
    assert str(raised.value) == "the Spark engine needs pyspark: pip install 'shoplake[spark]'"


def test_the_session_reads_the_delta_tables_delta_rs_writes(
    shop: Pipeline, spark_engine: Any
) -> None:
    """The Delta jars work: Spark reads silver.order_payments as delta-rs wrote it."""
    from deltalake import DeltaTable

    silver = Path(shop.settings.home) / "lake" / "silver" / "order_payments"
    assert silver.is_dir()
    columns = ["order_id", "paid_amount", "order_ts"]
    read = spark_engine.spark.read.format("delta").load(str(silver)).select(*columns)
    want = DeltaTable(str(silver)).to_pyarrow_table(columns=columns)
    assert want.num_rows > 0
    assert sorted(read.toArrow().to_pylist(), key=str) == sorted(want.to_pylist(), key=str)
