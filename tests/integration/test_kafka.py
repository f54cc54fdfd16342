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
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from shoplake.errors import TransportError
from shoplake.gateway.app import create_app
from shoplake.pipeline.ingest import bronze_lag
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
    names = Settings().topics.model_dump()
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
    p.run("ingestion", until_idle=True)
    got = rows(p, "SELECT raw_value FROM bronze.raw_events")
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
