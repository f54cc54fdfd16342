"""Fixtures of the integration tests: a real Kafka broker for the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kafka_broker import KafkaBroker
from tests.prerequisites import require_kafka_tools


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A single-node Apache Kafka from Maven Central, started once per test session."""
    require_kafka_tools()  # skips outside CI, fails under CI
    broker = KafkaBroker(Path(tmp_path_factory.mktemp("kafka")))
    broker.start()
    yield broker
    broker.stop()
