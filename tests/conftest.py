"""Shared fixtures: a fresh shoplake home per test, and helpers to feed and run it."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from shoplake.contract.tables import ORDER_PAYMENTS
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.simulator.sinks import route
from shoplake.transport import open_transport

SHOPLAKE = [sys.executable, "-m", "shoplake.cli"]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under pytest -n, a run in which fewer tests reported than were collected fails:
    a slice of the suite that never ran must not pass as green."""
    if not session.config.pluginmanager.has_plugin("dsession"):  # not the -n controller
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    outcomes = ("passed", "failed", "skipped", "xfailed", "xpassed", "error")
    reported = {r.nodeid for key in outcomes for r in reporter.stats.get(key, [])}
    missing = session.testscollected - len(reported)
    if missing > 0 and exitstatus == pytest.ExitCode.OK:
        reporter.write_line(
            f"{missing} of {session.testscollected} collected tests never reported an outcome",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under --dist loadgroup, xdist keeps an xdist_group's tests on one worker by adding
    "@group" to their node ids (after this collection's other hooks). Where it cannot (pytest
    9.2 with xdist 3.8), two SparkSessions would share the 2 cores unnoticed: refuse."""
    if not getattr(config.option, "loadgroup", False):
        return
    grouped = [i.nodeid for i in items if i.get_closest_marker("xdist_group")]
    ungrouped = [nodeid for nodeid in grouped if "@" not in nodeid]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist could not group {len(ungrouped)} tests (first: {ungrouped[0]}): "
            "is pytest newer than pyproject.toml allows?"
        )


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


def order_payment_rows(placed: Mapping[str, datetime], paid: Sequence[int]) -> pa.Table:
    """silver.order_payments rows of orders of 10.00 EUR placed at ``placed`` (id → time),
    with ``paid`` EUR paid each."""
    ids = list(placed)
    n = len(ids)
    return pa.table(
        {
            "order_id": ids,
            "user_id": [f"u-{i}" for i in ids],
            "session_id": [None] * n,
            "order_event_id": [f"e-{i}" for i in ids],
            "total_amount": [Decimal("10.00")] * n,
            "paid_amount": [Decimal(p) for p in paid],
            "currency": ["EUR"] * n,
            "fully_paid": [p >= 10 for p in paid],
            "order_ts": list(placed.values()),
            "last_payment_ts": [None] * n,
            "updated_ts": [min(placed.values(), default=None)] * n,
        },
        ORDER_PAYMENTS.schema,
    )


def rows(pipeline: Pipeline, sql: str) -> list[dict[str, Any]]:
    from shoplake.query import Lakehouse

    return Lakehouse(pipeline.settings, pipeline.store).query(sql).to_pylist()
