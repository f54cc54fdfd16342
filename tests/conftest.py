"""Shared fixtures: a fresh shoplake home per test, and helpers to feed and run it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.simulator.sinks import route
from shoplake.transport import open_transport

SHOPLAKE = [sys.executable, "-m", "shoplake.cli"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    p = Pipeline(settings)
    yield p
    p.close()


def feed(settings: Settings, lines: list[bytes | dict[str, Any]]) -> None:
    """Append raw lines (or events, serialised) to the embedded log, routed like `ingest`."""
    transport = open_transport(settings)
    try:
        transport.append(
            [route(x if isinstance(x, bytes) else orjson.dumps(x), settings.topics) for x in lines]
        )
    finally:
        transport.close()


def rows(pipeline: Pipeline, sql: str) -> list[dict[str, Any]]:
    from shoplake.query import Lakehouse

    return Lakehouse(pipeline.settings, pipeline.store).query(sql).to_pylist()
