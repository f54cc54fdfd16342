"""The Kafka transport against a real broker: durable appends, explicit positions,
exactly-once bronze, 503 while the broker is down, poison messages quarantined."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from shoplake.errors import TransportError
from shoplake.gateway.app import create_app
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


def test_append_then_read_from_explicit_positions(tmp_path: Path, kafka: KafkaBroker) -> None:
    s = kafka_settings(tmp_path, kafka)
    t = open_transport(s)
    lines = events(500)
    t.append([route(v, s.topics) for v in lines])
    ends = t.end_offsets()
    assert sum(ends.values()) == 500
    everything = t.read(dict.fromkeys(t.partitions(), 0), 10_000)
    assert sorted(everything["value"].to_pylist()) == sorted(lines)
    # from explicit positions, not committed offsets: the second half of one partition
    tp = max(ends, key=ends.__getitem__)
    half = ends[tp] // 2
    part = t.read({tp: half}, 10_000)
    assert part["offset"].to_pylist() == list(range(half, ends[tp]))
    assert t.read(dict.fromkeys(t.partitions(), 0), 7).num_rows == 7
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
    assert sum(t.end_offsets().values()) == 300
    assert client.get("/readyz").status_code == 200


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
    values = t.read(dict.fromkeys(t.partitions(), 0), 10_000)["value"].to_pylist()
    assert set(first) | set(second) <= set(values)  # everything acknowledged is there


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
