import pyarrow as pa
import pytest

from shoplake.contract.tables import FCT_SALES_MINUTE, RAW_EVENTS
from shoplake.errors import TableNotFound
from shoplake.settings import Settings
from shoplake.tables import open_store


def sales(minutes: list[int], orders: list[int]) -> pa.Table:
    import datetime as dt

    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return pa.table(
        {
            "minute_bucket": [base + dt.timedelta(minutes=m) for m in minutes],
            "gmv": [pa.scalar(10, pa.decimal128(18, 2)).as_py()] * len(minutes),
            "paid_orders": orders,
            "processed_ts": [base] * len(minutes),
        }
    )


def test_positions_are_committed_with_the_rows(settings: Settings) -> None:
    store = open_store(settings)
    store.ensure(FCT_SALES_MINUTE)
    store.append(FCT_SALES_MINUTE, sales([0, 1], [1, 2]), {"g/t/0": 12, "g/t/1": 3})
    handle = store.open(FCT_SALES_MINUTE)
    assert handle.positions(["g/t/0", "g/t/1", "g/t/9"]) == {"g/t/0": 12, "g/t/1": 3}
    assert handle.count() == 2
    # an empty append moves positions without adding rows
    store.append(FCT_SALES_MINUTE, FCT_SALES_MINUTE.schema.empty_table(), {"g/t/0": 20})
    handle = store.open(FCT_SALES_MINUTE)
    assert handle.positions(["g/t/0"]) == {"g/t/0": 20}
    assert handle.count() == 2
    # compaction keeps the positions
    store.compact(FCT_SALES_MINUTE)
    assert store.open(FCT_SALES_MINUTE).positions(["g/t/0", "g/t/1"]) == {"g/t/0": 20, "g/t/1": 3}


def test_upsert_updates_inserts_and_deletes(settings: Settings) -> None:
    store = open_store(settings)
    store.ensure(FCT_SALES_MINUTE)
    store.append(FCT_SALES_MINUTE, sales([0, 1, 2], [1, 1, 1]))
    store.upsert(
        FCT_SALES_MINUTE,
        sales([1, 2, 3, 4], [5, 0, 2, 0]),
        {"x": 1},
        delete_when="s.paid_orders = 0",
    )
    got = store.open(FCT_SALES_MINUTE).dataset().to_table().sort_by("minute_bucket")
    assert [m.minute for m in got["minute_bucket"].to_pylist()] == [0, 1, 3]
    assert got["paid_orders"].to_pylist() == [1, 5, 2]
    assert store.open(FCT_SALES_MINUTE).positions(["x"]) == {"x": 1}


def test_history_and_missing_tables(settings: Settings) -> None:
    store = open_store(settings)
    with pytest.raises(TableNotFound, match=r"bronze\.raw_events"):
        store.open(RAW_EVENTS)
    store.ensure(RAW_EVENTS)
    store.ensure(RAW_EVENTS)  # idempotent
    assert store.open(RAW_EVENTS).version == 0
    assert store.history(RAW_EVENTS)[0]["operation"] == "CREATE TABLE"
