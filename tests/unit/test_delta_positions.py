"""The positions a Delta table records, as two stores of one process see them: what one
store learns of a version (by writing it, or reading the log) the other does not read
from the log again, and a table made anew where one was is not mistaken for it."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from shoplake.contract.tables import ORDER_PAYMENTS
from shoplake.pipeline.positions import positions_of, to_app_ids
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport.base import TopicPartition
from tests.conftest import order_payment_rows

TPS = [TopicPartition("orders", 0), TopicPartition("orders", 1)]


@pytest.fixture
def log_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The app ids whose position was read from a Delta log."""
    reads: list[str] = []
    replay = DeltaTable.transaction_version

    def counted(self: DeltaTable, app_id: str) -> Any:
        reads.append(app_id)
        return replay(self, app_id)

    monkeypatch.setattr(DeltaTable, "transaction_version", counted)
    return reads


def test_a_store_reads_no_log_for_positions_another_store_wrote(
    tmp_path: Path, log_reads: list[str]
) -> None:
    writer, reader = (open_store(Settings(home=tmp_path)) for _ in range(2))
    writer.ensure(ORDER_PAYMENTS)
    rows = order_payment_rows({"o1": datetime(2026, 3, 1, 12, tzinfo=UTC)}, [1])
    writer.append(ORDER_PAYMENTS, rows, to_app_ids({TPS[0]: 5}))
    assert positions_of(writer.open(ORDER_PAYMENTS), TPS) == {TPS[0]: 5, TPS[1]: 0}
    assert log_reads == ["bronze/orders/1"]  # the one the commit did not say: read once
    for end in (9, 12):
        writer.append(ORDER_PAYMENTS, rows.slice(0, 0), to_app_ids({TPS[1]: end}))
        assert positions_of(reader.open(ORDER_PAYMENTS), TPS) == {TPS[0]: 5, TPS[1]: end}
    assert len(log_reads) == 1  # carried forward by the writer, found by the reader
    writer.close()
    reader.close()


def test_a_table_made_again_in_the_same_place_has_its_own_positions(
    tmp_path: Path, log_reads: list[str]
) -> None:
    store = open_store(Settings(home=tmp_path))
    store.ensure(ORDER_PAYMENTS)
    rows = order_payment_rows({"o1": datetime(2026, 3, 1, 12, tzinfo=UTC)}, [1])
    store.append(ORDER_PAYMENTS, rows, to_app_ids({TPS[0]: 5}))
    assert positions_of(store.open(ORDER_PAYMENTS), TPS)[TPS[0]] == 5
    location = store.location(ORDER_PAYMENTS)
    store.close()
    shutil.rmtree(location)  # the same versions, 0 and 1, with other positions
    again = open_store(Settings(home=tmp_path))
    again.ensure(ORDER_PAYMENTS)
    again.append(ORDER_PAYMENTS, rows, to_app_ids({TPS[1]: 7}))
    assert positions_of(again.open(ORDER_PAYMENTS), TPS) == {TPS[0]: 0, TPS[1]: 7}
    again.close()


def test_a_held_table_is_brought_up_to_date_only_when_another_writer_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # delta-rs's update lists the whole _delta_log (a file a commit): a round opens each
    # table a few times, so it must not list when nothing new was committed.
    updates: list[int] = []
    update = DeltaTable.update_incremental

    def counted(self: DeltaTable) -> None:
        updates.append(self.version())
        update(self)

    monkeypatch.setattr(DeltaTable, "update_incremental", counted)
    writer, reader = (open_store(Settings(home=tmp_path)) for _ in range(2))
    writer.ensure(ORDER_PAYMENTS)
    rows = order_payment_rows({"o1": datetime(2026, 3, 1, 12, tzinfo=UTC)}, [1])
    assert reader.open(ORDER_PAYMENTS).scan().num_rows == 0
    for n in (1, 2):
        writer.append(ORDER_PAYMENTS, rows, to_app_ids({TPS[0]: n}))
        for _ in range(3):  # its own commits moved the writer's table: nothing to list
            assert writer.open(ORDER_PAYMENTS).scan().num_rows == n
    assert updates == []
    for _ in range(3):  # the reader sees both commits, listing the log once
        assert reader.open(ORDER_PAYMENTS).scan().num_rows == 2
        assert positions_of(reader.open(ORDER_PAYMENTS), TPS)[TPS[0]] == 2
    assert len(updates) == 1
    writer.close()
    reader.close()
