"""The models of one pass share their reads (SharedReads): the input positions they plan
on and what they read of the same ranges. Outside a pass nothing is kept: a model stepped
on its own (Dagster, Airflow) must see its inputs as they are now."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from shoplake.contract.tables import ORDER_PAYMENTS
from shoplake.pipeline.positions import SharedReads, to_app_ids
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport.base import TopicPartition
from tests.conftest import order_payment_rows

TP = TopicPartition("orders", 0)


def test_a_pass_plans_on_the_positions_first_read_until_it_commits(tmp_path: Path) -> None:
    store = open_store(Settings(home=tmp_path))
    store.ensure(ORDER_PAYMENTS)
    rows = order_payment_rows({"o1": datetime(2026, 3, 1, 12, tzinfo=UTC)}, [1])
    store.append(ORDER_PAYMENTS, rows, to_app_ids({TP: 5}))
    shared = SharedReads()
    with shared.one_pass():
        assert shared.positions(store, ORDER_PAYMENTS, [TP]) == {TP: 5}
        store.append(ORDER_PAYMENTS, rows.slice(0, 0), to_app_ids({TP: 9}))  # it moves on
        assert shared.positions(store, ORDER_PAYMENTS, [TP]) == {TP: 5}  # the pass plans on 5
        shared.committed(ORDER_PAYMENTS)  # a model of the pass wrote it
        assert shared.positions(store, ORDER_PAYMENTS, [TP]) == {TP: 9}
        store.append(ORDER_PAYMENTS, rows.slice(0, 0), to_app_ids({TP: 12}))
    assert shared.positions(store, ORDER_PAYMENTS, [TP]) == {TP: 12}  # outside: as it is now
    store.append(ORDER_PAYMENTS, rows.slice(0, 0), to_app_ids({TP: 13}))
    assert shared.positions(store, ORDER_PAYMENTS, [TP]) == {TP: 13}
    store.close()


def test_a_read_is_made_once_per_pass_and_afresh_outside() -> None:
    shared = SharedReads()
    calls: list[str] = []

    def read(key: str) -> str:
        calls.append(key)
        return key.upper()

    with shared.one_pass():
        assert [shared.once(k, lambda k=k: read(k)) for k in ("a", "b", "a", "a")] == list("ABAA")
    assert calls == ["a", "b"]
    with shared.one_pass():  # a new pass reads again
        shared.once("a", lambda: read("a"))
    shared.once("a", lambda: read("a"))
    shared.once("a", lambda: read("a"))
    assert calls == ["a", "b", "a", "a", "a"]
