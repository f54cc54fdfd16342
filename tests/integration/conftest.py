"""Fixtures of the integration tests: a real Kafka broker, an S3 server, PostgreSQL and a
Spark engine, each started once for the session."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.airflow_env import Airflow, airflow_venv
from tests.integration.kafka_broker import KafkaBroker
from tests.integration.postgres_server import PostgresServer
from tests.integration.s3_server import S3Server
from tests.integration.spark_conf import SMALL_LOCAL_SPARK
from tests.prerequisites import (
    require,
    require_kafka_tools,
    require_postgres,
    require_s3_server,
    require_spark,
)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A single-node Apache Kafka from Maven Central, started once per test session."""
    require_kafka_tools()  # skips outside CI, fails under CI
    broker = KafkaBroker(Path(tmp_path_factory.mktemp("kafka")))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3-compatible server (SeaweedFS from PyPI) on loopback, once per test session."""
    require_s3_server()  # skips outside CI, fails under CI
    server = S3Server(Path(tmp_path_factory.mktemp("s3")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server (Debian's package) on loopback, once per test session."""
    require_postgres()  # skips outside CI, fails under CI
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Airflow:
    """Apache Airflow in its own virtual environment (cached), with a metadata database
    for the session."""
    try:
        venv = airflow_venv()
    except (OSError, subprocess.SubprocessError) as exc:
        require(f"Airflow's environment could not be built ({exc})", "reach PyPI")
        raise
    return Airflow(venv, Path(tmp_path_factory.mktemp("airflow")))


@pytest.fixture(scope="session")
def spark_engine() -> Iterator[Any]:
    """The Spark engine on a small local session (2 threads, 2 shuffle partitions, no UI),
    Delta Lake's, S3A's and Iceberg's jars from Maven Central; started once per test
    session (a test on S3 points S3A at its server with ``use_storage``; a pipeline on
    Iceberg tables registers its catalog with ``use_iceberg``)."""
    require_spark()  # skips outside CI, fails under CI
    from shoplake.engines.spark import SparkEngine
    from shoplake.settings import StorageSettings

    engine = SparkEngine(
        "local[2]", SMALL_LOCAL_SPARK, storage=StorageSettings(), iceberg_jars=True
    )
    yield engine
    engine.close()
