"""The engine port: settings pick the engine; every engine serves the models' calls."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from threading import Event

import pyarrow as pa
import pytest

from shoplake.engines import open_engine
from shoplake.errors import ConfigError
from shoplake.settings import EngineSettings, Settings


def test_duckdb_is_the_default_engine_and_runs_a_model_over_named_inputs() -> None:
    engine = open_engine(Settings().engine)
    try:
        assert engine.name == "duckdb" and engine.capabilities.in_process
        engine.define_local_date("Asia/Kolkata")
        out = engine.table_over(
            "SELECT local_date(ts) AS day, n * $k AS n FROM rows",
            {"rows": pa.table({"ts": pa.array([0], pa.timestamp("us", "UTC")), "n": [21]})},
            {"k": 2},
        )
        assert out.to_pylist() == [{"day": date(1970, 1, 1), "n": 42}]
    finally:
        engine.close()


def test_engine_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPLAKE_ENGINE__KIND", "spark")
    monkeypatch.setenv("SHOPLAKE_ENGINE__SPARK_MASTER", "spark://head:7077")
    monkeypatch.setenv("SHOPLAKE_ENGINE__SPARK_CONF", '{"spark.executor.memory": "4g"}')
    assert Settings().engine == EngineSettings(
        kind="spark", spark_master="spark://head:7077", spark_conf={"spark.executor.memory": "4g"}
    )
    monkeypatch.setenv("SHOPLAKE_ENGINE__KIND", "flink")
    with pytest.raises(ValueError, match="duckdb"):
        Settings()


def test_a_sibling_engine_keeps_its_own_views_and_outlives_nothing_it_shares() -> None:
    """The gold-refresh thread's engine is a sibling of the main loop's: a view one of
    them registers (a model's input) is invisible to the other, and closing the sibling
    leaves the first one working."""
    engine = open_engine(Settings().engine)
    sibling = engine.sibling()
    try:
        engine.register("orders", pa.table({"n": [1, 2]}))
        sibling.register("orders", pa.table({"n": [7]}))
        assert engine.table("SELECT sum(n) AS n FROM orders").to_pylist() == [{"n": 3}]
        sibling.close()
        assert engine.table("SELECT sum(n) AS n FROM orders").to_pylist() == [{"n": 3}]
    finally:
        engine.close()


def test_duckdb_does_not_stream_kafka_and_says_who_does(tmp_path: Path) -> None:
    engine = open_engine(Settings().engine)
    try:
        assert not engine.capabilities.streams_bronze
        with pytest.raises(ConfigError, match="Python worker"):
            engine.stream_bronze(Settings(home=tmp_path), until_idle=True, stop=Event())
    finally:
        engine.close()


def test_spark_reaches_the_iceberg_catalog_pyiceberg_uses() -> None:
    """SQL catalogs as Iceberg's JDBC catalog over the same database; a REST catalog with
    its OAuth2 client credentials and Hadoop's filesystems for the files."""
    from shoplake.engines.base import IcebergCatalog
    from shoplake.engines.spark import iceberg_catalog_conf

    p = "spark.sql.catalog.c"
    sqlite = iceberg_catalog_conf(IcebergCatalog("shop", "sqlite:////h/cat.sqlite", "/h/lake"), "c")
    assert (sqlite[p], sqlite[f"{p}.type"]) == ("org.apache.iceberg.spark.SparkCatalog", "jdbc")
    assert (sqlite[f"{p}.uri"], sqlite[f"{p}.warehouse"]) == (
        "jdbc:sqlite:/h/cat.sqlite",
        "/h/lake",
    )
    pg = iceberg_catalog_conf(
        IcebergCatalog("shop", "postgresql+psycopg://u:p%40ss@db:5433/cat", "s3://b/lake"), "c"
    )
    assert pg[f"{p}.uri"] == "jdbc:postgresql://db:5433/cat"
    assert (pg[f"{p}.jdbc.user"], pg[f"{p}.jdbc.password"]) == ("u", "p@ss")
    rest = IcebergCatalog("shop", "http://cat:8181/", "s3://tables/", "id:secret")
    assert "secret" not in repr(rest)
    conf = iceberg_catalog_conf(rest, "c")
    assert conf[f"{p}.type"] == "rest" and conf[f"{p}.warehouse"] == "s3://tables/"
    assert conf[f"{p}.credential"] == "id:secret"
    assert conf[f"{p}.oauth2-server-uri"] == "http://cat:8181/v1/oauth/tokens"
    assert conf[f"{p}.io-impl"] == "org.apache.iceberg.hadoop.HadoopFileIO"
    with pytest.raises(ConfigError, match="SQLite, PostgreSQL or REST"):
        iceberg_catalog_conf(IcebergCatalog("shop", "mysql://db/cat", "/h/lake"), "c")


def test_spark_on_one_machine_splits_work_by_its_cores_not_a_clusters_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """local[*] gets as many shuffle partitions and Delta log-replay tasks as the machine
    has cores (Spark's 200 and Delta's 50 made a 100k-event run take 159 s instead of 89);
    a cluster's master, or spark-submit's, keeps Spark's own."""
    from shoplake.engines.spark import _local_defaults

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert _local_defaults("local[*]") == {
        "spark.sql.shuffle.partitions": "6",
        "spark.databricks.delta.snapshotPartitions": "6",
    }
    assert _local_defaults("spark://master:7077") == {}
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "4040")
    assert _local_defaults("local[*]") == {}
