"""Topic layouts of the seeds: one topic for every event type (seed 003's KAFKA_TOPIC,
seed 004's ecommerce_events) and an all-events copy (seed 001's raw-events), on the
embedded log (tests/integration/test_kafka.py does the same on Kafka)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from shoplake.pipeline.reconcile import current_gold
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.simulator.sinks import route
from shoplake.transport import open_transport
from tests.conftest import feed, rows


def shop_lines(n: int = 4000) -> list[bytes]:
    return [e.value for e in itertools.islice(ShopSimulator(7, bad_ratio=0.05).stream(), n)]


def run(settings: Settings, lines: list[bytes]) -> tuple[dict[str, Any], int]:
    """Gold after a run over ``lines``, and bronze's row count."""
    feed(settings, list(lines))
    pipeline = Pipeline(settings)
    try:
        pipeline.run("both", until_idle=True)
        bronze = rows(pipeline, "SELECT count(*) AS n FROM bronze.raw_events")[0]["n"]
        return current_gold(pipeline.store), bronze
    finally:
        pipeline.close()


def topics_in_log(settings: Settings) -> set[str]:
    transport = open_transport(settings)
    try:
        return {tp.topic for tp in transport.partitions()}
    finally:
        transport.close()


def test_one_topic_for_every_event_gives_the_same_gold(tmp_path: Path) -> None:
    lines = shop_lines()
    multi = Settings(home=tmp_path / "multi")
    single = Settings(home=tmp_path / "single", topics={"single": "ecommerce_events"})
    gold, bronze = run(single, lines)
    multi_gold, multi_bronze = run(multi, lines)
    assert bronze == multi_bronze == len(lines) and any(gold.values())
    # the same to the last row, but for late_events: lateness is measured against the
    # newest event before it in its topic partition, which other event types now share
    for got in (gold, multi_gold):
        for row in got["gold.data_quality_report"]:
            del row["late_events"]
    assert gold == multi_gold
    # every event on the one topic; unreadable records still on the dead-letter topic
    assert topics_in_log(single) == {"ecommerce_events", "dead-letter"}


def test_seed_003_kafka_topic_and_a_dotenv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "KAFKA_TOPIC=my-new-test-topic\nSHOPLAKE_REPORTING__CURRENCY=EUR\nPOSTGRES_PORT=6543\n"
    )
    monkeypatch.delenv("KAFKA_TOPIC", raising=False)
    settings = Settings()
    assert settings.topics.single == "my-new-test-topic"
    assert settings.reporting.currency == "EUR"
    assert settings.warehouse.port == 6543
    monkeypatch.setenv("POSTGRES_PORT", "7000")  # the environment wins over .env
    assert Settings().warehouse.port == 7000


def test_an_all_events_topic_gets_a_copy_that_bronze_does_not_read(tmp_path: Path) -> None:
    lines = [*shop_lines(1500), b"not json"]
    settings = Settings(home=tmp_path / "home", topics={"all_events": "raw-events"})
    _, bronze = run(settings, lines)
    assert bronze == len(lines)  # the copies are not ingested
    assert "raw-events" not in topics_in_log(settings)  # bronze's partitions leave it out
    transport = open_transport(settings)
    try:
        copies = transport._conn.execute(  # type: ignore[attr-defined]
            "SELECT sum(next_offset) FROM partitions WHERE topic = 'raw-events'"
        ).fetchone()[0]
    finally:
        transport.close()
    # every event, not the records on the dead-letter topic (unreadable, or of no known type)
    events = [line for line in lines if route(line, settings.topics).topic != "dead-letter"]
    assert copies == len(events) < len(lines)
