"""The Kafka transport against a real broker: durable appends, explicit positions,
exactly-once bronze, 503 while the broker is down, poison messages quarantined."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient

from shoplake.errors import TransportError
from shoplake.gateway.app import create_app
from shoplake.pipeline.ingest import bronze_lag
from shoplake.pipeline.reconcile import current_gold
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.simulator.sinks import route
from shoplake.transport import open_transport
from shoplake.transport.base import TopicPartition, Transport
from tests.conftest import rows
from tests.integration.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration]

_run = itertools.count()


def kafka_settings(tmp_path: Path, kafka: KafkaBroker) -> Settings:
    """Settings on the broker, with topic names of their own (tests share the broker)."""
    prefix = f"t{next(_run)}-"
    names = Settings().topics.model_dump(exclude_none=True)
    return Settings(
        home=tmp_path / "home",
        transport={"kind": "kafka", "kafka_bootstrap": kafka.bootstrap, "partitions": 3},
        topics={k: prefix + v for k, v in names.items()},
        gateway={"auth": False},
    )


def events(n: int, seed: int = 3) -> list[bytes]:
    return [e.value for e in itertools.islice(ShopSimulator(seed, bad_ratio=0.0).stream(), n)]


def readable(t: Transport, n: int, timeout: float = 10.0) -> pa.Table:
    """Everything the transport holds, once ``n`` records are readable: a committed
    append is durable at once, readable when its commit markers land a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        records = t.read(dict.fromkeys(t.partitions(), 0), 10 * n).records
        if records.num_rows >= n or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_append_then_read_from_explicit_positions(tmp_path: Path, kafka: KafkaBroker) -> None:
    s = kafka_settings(tmp_path, kafka)
    t = open_transport(s)
    lines = events(500)
    t.append([route(v, s.topics) for v in lines])
    everything = readable(t, 500)
    assert sorted(everything["value"].to_pylist()) == sorted(lines)
    ends = t.end_offsets()
    # from explicit positions, not committed offsets: the second half of one partition
    tp = max(ends, key=ends.__getitem__)
    half = ends[tp] // 2
    part = t.read({tp: half}, 10_000).records
    mine = everything.filter(
        pc.and_(
            pc.equal(everything["topic"], tp.topic), pc.equal(everything["partition"], tp.partition)
        )
    )["offset"]
    assert part["offset"].to_pylist() == [o for o in mine.to_pylist() if o >= half]
    assert t.read(dict.fromkeys(t.partitions(), 0), 7).records.num_rows == 7
    t.close()


def test_aborted_and_open_transactions_are_never_read(tmp_path: Path, kafka: KafkaBroker) -> None:
    """Records of an aborted append never reach bronze; records of an append still open
    wait until it commits; and bronze's positions step past the transaction markers, so
    lag reaches 0."""
    s = kafka_settings(tmp_path, kafka)
    t = open_transport(s)
    committed, aborted, late = events(90, seed=21), events(60, seed=22), events(30, seed=23)
    t.append([route(v, s.topics) for v in committed])
    other = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": "test-other"})
    other.init_transactions(10)
    other.begin_transaction()
    for v in aborted:
        topic, key, value = route(v, s.topics)
        other.produce(topic, value=value, key=key)
    other.flush(10)  # written to the partitions, then thrown away
    other.abort_transaction(10)
    other.begin_transaction()
    for v in late:
        topic, key, value = route(v, s.topics)
        other.produce(topic, value=value, key=key)
    other.flush(10)  # written but not committed yet
    p = Pipeline(s)
    p.run("ingestion", until_idle=True)
    got = rows(p, "SELECT raw_value FROM bronze.raw_events")
    assert sorted(r["raw_value"].encode() for r in got) == sorted(committed)
    other.commit_transaction(10)
    # The broker writes the commit markers into the partitions just after
    # commit_transaction returns: until then a read_committed reader sees nothing more.
    deadline = time.monotonic() + 15
    while True:
        p.run("ingestion", until_idle=True)
        got = rows(p, "SELECT raw_value FROM bronze.raw_events")
        if len(got) >= len(committed + late) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(r["raw_value"].encode() for r in got) == sorted(committed + late)
    group = s.pipeline.consumer_group
    assert sum(bronze_lag(p.store, t.end_offsets(), group).values()) == 0
    p.close()
    t.close()


def test_kafka_to_bronze_exactly_once_across_restarts(tmp_path: Path, kafka: KafkaBroker) -> None:
    s = kafka_settings(tmp_path, kafka)
    s = s.model_copy(update={"pipeline": s.pipeline.model_copy(update={"batch_max_records": 300})})
    lines = events(2000, seed=5)
    producer = open_transport(s)
    producer.append([route(v, s.topics) for v in lines[:1200]])
    p = Pipeline(s)
    p.ingest_once()
    p.close()  # a restart between batches: positions come back from bronze
    producer.append([route(v, s.topics) for v in lines[1200:]])
    p = Pipeline(s)
    p.run("both", until_idle=True)
    got = rows(p, "SELECT raw_value FROM bronze.raw_events")
    assert sorted(r["raw_value"].encode() for r in got) == sorted(lines)
    assert rows(p, "SELECT count(*) AS n FROM silver.quarantine")[0]["n"] == 0
    p.close()
    producer.close()


NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def gateway(tmp_path: Path, kafka: KafkaBroker) -> Iterator[tuple[Transport, TestClient]]:
    """A gateway producing to its own topics on the broker (no auth)."""
    s = kafka_settings(tmp_path, kafka)
    t = open_transport(s)
    yield t, TestClient(create_app(s, t))
    t.close()


def test_gateway_over_kafka_acknowledges_only_durable_events(
    gateway: tuple[Transport, TestClient],
) -> None:
    t, client = gateway
    r = client.post("/v1/events", content=b"\n".join(events(300, seed=9)), headers=NDJSON)
    assert r.status_code == 202 and r.json()["accepted"] == 300
    assert readable(t, 300).num_rows == 300
    ready = client.get("/readyz")  # 7 topics of 3 partitions each
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "partitions": 21})


def test_broker_down_gives_503_and_nothing_acknowledged_is_lost(
    gateway: tuple[Transport, TestClient], kafka: KafkaBroker
) -> None:
    t, client = gateway
    first, second = events(100, seed=11), events(100, seed=12)
    assert client.post("/v1/events", content=b"\n".join(first), headers=NDJSON).status_code == 202
    kafka.stop()
    try:
        r = client.post("/v1/events", content=b"\n".join(second), headers=NDJSON)
        assert r.status_code == 503
        assert r.json()["error"] == "transport_unavailable"
        with pytest.raises(TransportError):
            t.end_offsets()
    finally:
        kafka.start()
    r = client.post("/v1/events", content=b"\n".join(second), headers=NDJSON)
    assert r.status_code == 202
    values = readable(t, 200)["value"].to_pylist()
    assert sorted(values) == sorted(first + second)  # acknowledged: there, and once


def test_poison_messages_on_a_topic_are_quarantined(tmp_path: Path, kafka: KafkaBroker) -> None:
    s = kafka_settings(tmp_path, kafka)
    t = open_transport(s)
    t.partitions()  # creates the topics
    raw = Producer({"bootstrap.servers": kafka.bootstrap})
    poison = [b"not json", b"\x00\xff\xfe binary", b"{" * 100_000, orjson.dumps([1, 2])]
    for value in poison:
        raw.produce(s.topics.page_views, value=value)
    raw.flush(10)
    good = events(50, seed=13)
    t.append([route(v, s.topics) for v in good])
    p = Pipeline(s)
    p.run("both", until_idle=True)
    assert rows(p, "SELECT count(*) AS n FROM silver.quarantine")[0]["n"] == len(poison)
    valid = rows(p, "SELECT count(*) AS n FROM bronze.raw_events")[0]["n"]
    assert valid == len(poison) + len(good)
    assert TopicPartition(s.topics.page_views, 0) in t.partitions()
    p.close()
    t.close()


def test_one_topic_on_kafka_gives_the_same_gold_as_a_topic_per_type(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    """Seed 003's KAFKA_TOPIC / seed 004's ecommerce_events: every event type on one
    topic, silver routing by event_type; and seed 001's all-events raw-events copy."""
    lines = events(3000, seed=8)
    per_type = kafka_settings(tmp_path / "multi", kafka)
    one = kafka_settings(tmp_path / "single", kafka)
    prefix = one.topics.page_views.split("-")[0]
    one = one.model_copy(
        update={
            "topics": one.topics.model_copy(
                update={"single": f"{prefix}-ecommerce_events", "all_events": f"{prefix}-raw"}
            ),
            "transport": one.transport.model_copy(update={"replication_factor": 1}),
        }
    )
    golds = []
    for s in (per_type, one):
        producer = open_transport(s)
        producer.append([route(v, s.topics) for v in lines])
        p = Pipeline(s)
        p.run("both", until_idle=True)
        assert rows(p, "SELECT count(*) AS n FROM bronze.raw_events")[0]["n"] == len(lines)
        golds.append(current_gold(p.store))
        topics = set(rows(p, "SELECT DISTINCT topic FROM bronze.raw_events")[0].values())
        p.close()
        producer.close()
    for gold in golds:  # lateness is per topic partition: see tests/unit/test_topics.py
        for row in gold["gold.data_quality_report"]:
            del row["late_events"]
    assert golds[0] == golds[1] and any(golds[0].values())
    assert topics == {f"{prefix}-ecommerce_events"}
    # the all-events topic holds a copy of every event; bronze did not read it
    reader = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": f"{prefix}-check",
         "auto.offset.reset": "earliest", "isolation.level": "read_committed"}
    )  # fmt: skip
    reader.subscribe([f"{prefix}-raw"])
    copies, deadline = 0, time.monotonic() + 30
    while copies < len(lines) and time.monotonic() < deadline:
        copies += sum(1 for m in reader.consume(1000, 1.0) if m.error() is None)
    reader.close()
    assert copies == len(lines)
