import pyarrow as pa
import pytest

from shoplake.contract.tables import FCT_SALES_MINUTE, RAW_EVENTS
from shoplake.errors import TableNotFound
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.tables.base import Compare


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
        delete_when=Compare("paid_orders", "=", 0),
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
    [created] = store.history(RAW_EVENTS)
    assert (created.version, created.operation) == (0, "CREATE TABLE")
    assert (created.rows_added, created.rows_removed, created.positions) == (None, None, {})


def test_history_lists_typed_commits_with_their_own_positions(settings: Settings) -> None:
    from datetime import UTC

    from shoplake.contract.tables import TableSpec

    spec = TableSpec(
        "gold",
        "history_probe",
        pa.schema([("k", pa.int64()), ("day", pa.string()), ("v", pa.int64())]),
        partition_by=("day",),
        key=("k",),
    )

    def rows(ks: list[int], days: list[str], vs: list[int]) -> pa.Table:
        return pa.table({"k": ks, "day": days, "v": vs}, schema=spec.schema)

    store = open_store(settings)
    store.ensure(spec)
    store.append(spec, rows([1, 2, 3], ["a", "a", "b"], [1, 1, 1]), {"app/t/0": 3})
    store.append(spec, rows([4, 5], ["b", "b"], [1, 1]))
    store.upsert(spec, rows([2, 6], ["a", "b"], [9, 1]), {"app/t/0": 6, "app/t/1": 2})
    store.upsert(spec, spec.schema.empty_table(), {"app/t/1": 4})  # positions only
    store.replace(spec, rows([7], ["a"], [1]), "day", ["a"], {"app/t/0": 9})
    store.compact(spec)
    got = store.history(spec)
    assert [(c.version, c.operation, c.rows_added, c.rows_removed, c.positions) for c in got] == [
        (6, "OPTIMIZE", None, None, {}),
        (5, "WRITE", 1, None, {"app/t/0": 9}),  # replaceWhere: delta-rs counts no removed rows
        (4, "WRITE", 0, None, {"app/t/1": 4}),
        (3, "MERGE", 2, 1, {"app/t/0": 6, "app/t/1": 2}),  # 1 updated + 1 inserted
        (2, "WRITE", 2, None, {}),
        (1, "WRITE", 3, None, {"app/t/0": 3}),
        (0, "CREATE TABLE", None, None, {}),
    ]
    stamps = [c.timestamp for c in got]
    assert all(t.tzinfo is not None and t.utcoffset() == UTC.utcoffset(t) for t in stamps)
    assert stamps == sorted(stamps, reverse=True)
    assert [c.version for c in store.history(spec, 2)] == [6, 5]
