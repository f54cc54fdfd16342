"""Kafka → bronze on Spark Structured Streaming (engines/spark_stream.py), exactly once:
while its driver is SIGKILLed at random points, and taking over from (and handing over
to) the Python worker; DuckDB's query layer reads what Spark wrote."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoplake.contract.events import EVENT_TYPES
from shoplake.contract.tables import RAW_EVENTS
from shoplake.pipeline.ingest import bronze_lag
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport.base import OutgoingMessage
from shoplake.transport.kafka import KafkaTransport
from tests.conftest import SHOPLAKE
from tests.integration.clients import bronze_ids
from tests.integration.equivalence import assert_same_tables
from tests.integration.kafka_broker import KafkaBroker
from tests.integration.spark_conf import SHORT_LIVED_DRIVER
from tests.integration.test_kafka_exactly_once import kafka_env
from tests.prerequisites import require_spark

# one worker runs every Spark test (pytest -n): one session, one ivy resolution at a time
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("spark")]


def spark_env(home: Path, kafka: KafkaBroker) -> dict[str, str]:
    require_spark()  # skips outside CI, fails under CI
    return {
        **kafka_env(home, kafka),
        # one partition per topic: the stream makes one Delta commit per partition a batch
        "SHOPLAKE_TRANSPORT__PARTITIONS": "1",
        # few, large batches: a partition commit costs ~1 s of Spark on 2 cores
        "SHOPLAKE_PIPELINE__BATCH_MAX_RECORDS": "5000",
        "SHOPLAKE_ENGINE__SPARK_MASTER": "local[2]",
        "SHOPLAKE_ENGINE__SPARK_CONF": json.dumps(SHORT_LIVED_DRIVER),
    }


def settings_of(env: dict[str, str]) -> Settings:
    keys = {k: v for k, v in env.items() if k.startswith("SHOPLAKE_")}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        return Settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def chunks(tmp: Path, env: dict[str, str], sizes: list[int]) -> list[Path]:
    """NDJSON files of simulated events, one seed each (their ids are the sent set)."""
    out = []
    for seed, n in enumerate(sizes):
        path = tmp / f"chunk-{seed}.ndjson"
        subprocess.run(
            [*SHOPLAKE, "generate", "-n", str(n), "--seed", str(seed), "--to", str(path)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        out.append(path)
    return out


def sent_ids(files: list[Path]) -> set[str]:
    return {orjson.loads(line)["event_id"] for f in files for line in f.read_bytes().splitlines()}


def ingest(env: dict[str, str], path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*SHOPLAKE, "ingest", str(path)], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def kafka_lineage(settings: Settings) -> set[tuple[str, int, int]]:
    """(topic, partition, offset) of every committed record in the topics."""
    transport = KafkaTransport(settings, create=False)
    try:
        positions = dict.fromkeys(transport.partitions(), 0)
        out: set[tuple[str, int, int]] = set()
        while True:
            batch = transport.read(positions, 100_000)
            if not batch.positions:
                return out
            cols = [batch.records[c].to_pylist() for c in ("topic", "partition", "offset")]
            out |= set(zip(*cols, strict=True))
            positions.update(batch.positions)
    finally:
        transport.close()


def bronze_rows(settings: Settings) -> list[dict[str, Any]]:
    store = open_store(settings)
    try:
        return store.open(RAW_EVENTS).scan().to_pylist()
    finally:
        store.close()


def assert_exactly_once(settings: Settings) -> list[dict[str, Any]]:
    """Every Kafka record once in bronze, and bronze's positions where Kafka ends."""
    rows = bronze_rows(settings)
    lineage = [(r["topic"], r["partition"], r["offset"]) for r in rows]
    assert len(lineage) == len(set(lineage)), "a Kafka record is in bronze twice"
    assert set(lineage) == kafka_lineage(settings)
    transport = KafkaTransport(settings, create=False)
    store = open_store(settings)
    try:
        # positions written by Spark, read back by delta-rs: where Kafka ends, markers too
        lag = bronze_lag(store, transport.end_offsets(), settings.pipeline.consumer_group)
    finally:
        store.close()
        transport.close()
    assert not any(lag.values()), lag
    return rows


def bronze_commits(home: Path) -> int:
    return len(list((home / "lake" / "bronze" / "raw_events" / "_delta_log").glob("*.json")))


def spark_worker(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*SHOPLAKE, "run", "--engine", "spark", "--job", "ingestion", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the python driver and its JVM
    )  # fmt: skip


def run_until_idle(env: dict[str, str], *extra: str) -> str:
    done = subprocess.Popen(
        [*SHOPLAKE, "run", *extra, "--job", "ingestion", "--until-idle"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = done.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(done.pid, signal.SIGKILL)  # the JVM too, not only its python parent
        done.communicate()
        raise
    assert done.returncode == 0, err[-3000:]
    return out + err


def test_spark_bronze_is_exactly_once_while_its_driver_is_killed(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    rng = random.Random(12)
    home = tmp_path / "home"
    env = spark_env(home, kafka)
    settings = settings_of(env)
    files = chunks(tmp_path, env, [500] * 6)
    subprocess.run([*SHOPLAKE, "ingest", str(files[0])], env=env, check=True, capture_output=True)
    kills = 0
    for chunk in files[1:]:
        before = bronze_commits(home)
        worker = spark_worker(env)
        feeder = ingest(env, chunk)  # more records arrive while the stream runs
        deadline = time.monotonic() + 120
        # kill soon after the stream has committed at least once: mid-batch, between two
        # partitions' commits, or idle
        while bronze_commits(home) <= before and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            time.sleep(0.1)
        assert bronze_commits(home) > before, "the stream committed nothing in 120 s"
        time.sleep(rng.uniform(0.0, 2.0))
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        kills += 1
        assert feeder.wait(60) == 0, feeder.stderr.read().decode()  # type: ignore[union-attr]
    assert kills >= 5
    run_until_idle(env, "--engine", "spark")
    assert_exactly_once(settings)
    ids = bronze_ids(home)  # checks lineage once again
    assert len(ids) == len(kafka_lineage(settings))
    assert set(ids) == sent_ids(files)
    # and the tables made from it equal those of a clean run: the same topics read by the
    # Python worker into a home of its own, nothing killed
    clean_env = {**env, "SHOPLAKE_HOME": str(tmp_path / "clean")}
    run_until_idle(clean_env)
    for job_env in (env, clean_env):
        subprocess.run(
            [*SHOPLAKE, "run", "--job", "processing", "--until-idle"],
            env=job_env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    assert_same_tables(settings, settings_of(clean_env))


@pytest.mark.parametrize("table_format", ["delta", "iceberg"])
def test_python_and_spark_workers_take_over_from_each_other(
    tmp_path: Path, kafka: KafkaBroker, table_format: str
) -> None:
    home = tmp_path / "home"
    env = {**spark_env(home, kafka), "SHOPLAKE_TABLES__FORMAT": table_format}
    settings = settings_of(env)
    files = chunks(tmp_path, env, [400, 400, 400])
    subprocess.run([*SHOPLAKE, "ingest", str(files[0])], env=env, check=True, capture_output=True)
    run_until_idle(env)  # the Python worker
    python_rows = len(bronze_rows(settings))
    subprocess.run([*SHOPLAKE, "ingest", str(files[1])], env=env, check=True, capture_output=True)
    # records bronze must keep verbatim: not UTF-8, not JSON, no key
    transport = KafkaTransport(settings)
    odd = [b'\xff{"event_type": "page_view"}', b"not json", b'{"event_type": "refund"}']
    transport.append([OutgoingMessage(settings.topics.dead_letter, None, v) for v in odd])
    transport.close()
    out = run_until_idle(env, "--engine", "spark")
    assert "ingested " in out
    rows = assert_exactly_once(settings)
    assert len(rows) > python_rows
    # Spark's rows as the Python worker makes them, column for column
    if table_format == "delta":
        assert open_store(settings).open(RAW_EVENTS).dataset().schema == RAW_EVENTS.schema
    for r in rows:
        try:
            doc = json.loads(r["raw_value"])
            named = doc.get("event_type") if isinstance(doc, dict) else None
        except ValueError:
            named = None
        assert r["event_type"] == (named if named in EVENT_TYPES else "unknown")
        assert r["ingest_date"] == r["ingest_ts"].date() and r["source_ts"] is not None
    dead = {r["raw_value"] for r in rows if r["topic"] == settings.topics.dead_letter}
    assert {v.decode("utf-8", "backslashreplace") for v in odd} <= dead
    # DuckDB's query layer reads the table Spark wrote
    count = subprocess.run(
        [*SHOPLAKE, "query", "--json", "SELECT count(*) AS n FROM bronze.raw_events"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert str(len(rows)) in count.stdout
    # and the Python worker continues where Spark stopped
    subprocess.run([*SHOPLAKE, "ingest", str(files[2])], env=env, check=True, capture_output=True)
    run_until_idle(env)
    rows = assert_exactly_once(settings)
    ids = {
        json.loads(r["raw_value"])["event_id"]
        for r in rows
        if r["topic"] != settings.topics.dead_letter
    }
    assert ids == sent_ids(files)
