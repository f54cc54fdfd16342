"""Fixtures of the integration tests: a real Kafka broker for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kafka_broker import KafkaBroker, java_available


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A single-node Apache Kafka from Maven Central, started once per test session."""
    if not java_available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but java or mvn is missing: the Kafka tests must run in CI")
        pytest.skip("Kafka tests need Java 17+ and Maven (mvn) on PATH")
    broker = KafkaBroker(Path(tmp_path_factory.mktemp("kafka")))
    broker.start()
    yield broker
    broker.stop()
