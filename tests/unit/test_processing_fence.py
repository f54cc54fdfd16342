"""Two processing workers on one home (a `run --until-idle` started beside a live demo):
each silver and derived table takes every bronze record once. The worker that loses a
race for a commit is refused (CommitConflict), logs it, and redoes its step from the
tables."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from shoplake.check import consumed_counts
from shoplake.contract.tables import (
    DAILY_CUSTOMER_ANALYTICS,
    FCT_SALES_MINUTE,
    PAGE_VIEWS,
    QUARANTINE,
    TableSpec,
)
from shoplake.pipeline.reconcile import current_gold, recomputed_gold
from shoplake.pipeline.runner import Pipeline
from shoplake.pipeline.silver import SILVER_TABLES
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.tables import open_store
from shoplake.tables.base import TableStore
from shoplake.transport import open_transport
from tests.conftest import feed


class RacingStore:
    """A table store whose first write to ``table`` lets ``other`` run first: as if
    another worker committed between this worker's reads and its commit."""

    def __init__(self, store: TableStore, table: TableSpec, other: Callable[[], Any]) -> None:
        self._store = store
        self._table = table
        self._other: Callable[[], Any] | None = other
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _before_write(self, spec: TableSpec) -> None:
        if spec == self._table and self._other is not None:
            other, self._other = self._other, None
            other()
            self.raced = True

    def append(self, spec: TableSpec, *args: Any, **kwargs: Any) -> int:
        self._before_write(spec)
        return self._store.append(spec, *args, **kwargs)

    def upsert(self, spec: TableSpec, *args: Any, **kwargs: Any) -> None:
        self._before_write(spec)
        self._store.upsert(spec, *args, **kwargs)

    def replace(self, spec: TableSpec, *args: Any, **kwargs: Any) -> None:
        self._before_write(spec)
        self._store.replace(spec, *args, **kwargs)


@pytest.mark.parametrize(
    "table",
    [QUARANTINE, PAGE_VIEWS, FCT_SALES_MINUTE, DAILY_CUSTOMER_ANALYTICS],
    ids=lambda spec: spec.qualified,
)
def test_two_processing_runs_take_each_record_once(settings: Settings, table: TableSpec) -> None:
    """The second worker commits ``table`` (and all before and after it) between the
    first's reads and its commit of it: the first's commit is refused, and its next
    round takes up where the tables stand. Silver holds each bronze record once, and
    gold equals a recomputation from scratch."""
    feed(
        settings,
        [e.value for e in itertools.islice(ShopSimulator(11, bad_ratio=0.03).stream(), 2500)],
    )
    other = Pipeline(settings)
    other.ingest_once()
    racing = RacingStore(
        open_store(settings), table, lambda: other.run("processing", until_idle=True)
    )
    mine = Pipeline(settings, store=racing)  # type: ignore[arg-type]
    stats = mine.run("processing", until_idle=True)

    assert racing.raced
    store = open_store(settings)
    assert_each_record_once(settings, store)
    assert current_gold(store) == recomputed_gold(store, settings.reporting)
    assert any("another writer has consumed" in e for e in stats.errors), stats.errors
    other.close()
    mine.close()


def assert_each_record_once(settings: Settings, store: TableStore) -> None:
    """No silver table holds a key twice (an event id, or a bronze record), and every
    record silver consumed is in exactly one of its table, quarantine and duplicates
    (what `check` reconciles)."""
    for spec in SILVER_TABLES:
        keys = store.open(spec).scan(list(spec.key))
        assert keys.group_by(list(spec.key)).aggregate([]).num_rows == keys.num_rows, spec.qualified
    tps = open_transport(settings).partitions()
    consumed = consumed_counts(settings, store, tps)
    assert consumed.accounted and consumed.bronze > 0, consumed


def test_a_step_fenced_mid_way_leaves_no_table_ahead_of_its_rows(settings: Settings) -> None:
    """Refused after some tables committed (the race lost on page_views, the second
    silver table), the worker's tables agree with their positions: the other worker took
    the rest of the batch, each record once."""
    feed(settings, [e.value for e in itertools.islice(ShopSimulator(12).stream(), 1200)])
    other = Pipeline(settings)
    other.ingest_once()
    racing = RacingStore(open_store(settings), PAGE_VIEWS, other.step_silver)
    mine = Pipeline(settings, store=racing)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="another writer has consumed") as refused:
        mine.step_silver()
    assert type(refused.value).__name__ == "CommitConflict"
    assert mine.step_silver() == 0  # the tables stand where the other left them: nothing left
    assert_each_record_once(settings, open_store(settings))
    other.close()
    mine.close()
