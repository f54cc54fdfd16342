"""The TableStore port's conformance suite: every test runs on each format and location
(Delta and Iceberg, on a local folder and on S3 — a real S3-compatible server — and
Iceberg with its catalog in PostgreSQL)."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from shoplake.contract.tables import FCT_SALES_MINUTE, RAW_EVENTS, TableSpec
from shoplake.errors import CommitConflict, TableError, TableNotFound
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.tables.base import Compare, IsIn

_catalogs = itertools.count()


@pytest.fixture(
    params=[
        "delta-local", "delta-s3", "iceberg-local", "iceberg-s3", "iceberg-postgres",
        "iceberg-rest",
    ]
)  # fmt: skip
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A shoplake home whose tables are Delta or Iceberg tables, in a local folder or under
    a prefix of their own in the test session's S3 bucket; Iceberg's catalog in SQLite, in
    a PostgreSQL database several machines would share, or a REST catalog (the S3
    server's, over an S3 Tables bucket of the test's own)."""
    table_format, where = request.param.split("-")
    tables: dict[str, str] = {"format": table_format}
    if where == "local":
        return Settings(home=tmp_path / "home", tables=tables)
    if where == "postgres":
        catalog = request.getfixturevalue("postgres").new_database(f"catalog{next(_catalogs)}")
        return Settings(home=tmp_path / "home", tables={**tables, "catalog_uri": catalog})
    server = request.getfixturevalue("s3_server")
    if where == "rest":
        tables = server.new_rest_catalog()
    return Settings(home=tmp_path / "home", lakehouse_uri=server.new_lake(),
                    storage=server.storage(), tables=tables)  # fmt: skip


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
    assert store.open(RAW_EVENTS).scan().num_rows == 0
    if settings.tables.format == "iceberg":
        assert store.history(RAW_EVENTS) == []  # Iceberg: no snapshot until a write
        return
    [created] = store.history(RAW_EVENTS)
    assert (created.version, created.operation) == (0, "CREATE TABLE")
    assert (created.rows_added, created.rows_removed, created.positions) == (None, None, {})


PROBE = TableSpec(
    "gold",
    "history_probe",
    pa.schema([("k", pa.int64()), ("day", pa.string()), ("v", pa.int64())]),
    partition_by=("day",),
    key=("k",),
)


def rows(ks: list[int], days: list[str], vs: list[int]) -> pa.Table:
    return pa.table({"k": ks, "day": days, "v": vs}, schema=PROBE.schema)


def content(settings: Settings, spec: TableSpec = PROBE) -> list[tuple[int, str, int]]:
    table = open_store(settings).open(spec).scan()
    return sorted(zip(*(table[c].to_pylist() for c in ("k", "day", "v")), strict=True))


def test_history_lists_typed_commits_with_their_own_positions(settings: Settings) -> None:
    spec = PROBE
    store = open_store(settings)
    store.ensure(spec)
    store.append(spec, rows([1, 2, 3], ["a", "a", "b"], [1, 1, 1]), {"app/t/0": 3})
    store.append(spec, rows([4, 5], ["b", "b"], [1, 1]))
    store.upsert(spec, rows([2, 6], ["a", "b"], [9, 1]), {"app/t/0": 6, "app/t/1": 2})
    store.upsert(spec, spec.schema.empty_table(), {"app/t/1": 4})  # positions only
    store.replace(spec, rows([7], ["a"], [1]), "day", ["a"], {"app/t/0": 9})
    store.compact(spec)
    got = store.history(spec)
    listed = [(c.version, c.operation, c.rows_added, c.rows_removed, c.positions) for c in got]
    if settings.tables.format == "iceberg":
        # one snapshot per step of a commit: an upsert deletes (copy-on-write) then
        # appends, a replace or a compaction deletes then appends; no snapshot at creation
        assert listed == [
            (9, "APPEND", 4, None, {}),  # compaction: the partition's files as one
            (8, "DELETE", 0, 4, {}),
            (7, "APPEND", 1, None, {"app/t/0": 9}),  # replace
            (6, "DELETE", 0, 2, {"app/t/0": 9}),
            (5, "APPEND", 0, None, {"app/t/1": 4}),  # positions only
            (4, "APPEND", 2, None, {"app/t/0": 6, "app/t/1": 2}),  # upsert: 1 updated + 1 new
            (3, "OVERWRITE", 1, 2, {}),  # ...its file of day a rewritten without row 2
            (2, "APPEND", 2, None, {}),
            (1, "APPEND", 3, None, {"app/t/0": 3}),
        ]
        assert [c.version for c in store.history(spec, 2)] == [9, 8]
        return
    assert listed == [
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


def test_replace_rewrites_only_the_named_partitions(settings: Settings) -> None:
    store = open_store(settings)
    store.ensure(PROBE)
    store.append(PROBE, rows([1, 2, 3], ["a", "a", "b"], [1, 1, 1]))
    store.replace(PROBE, rows([7, 8], ["a", "c"], [2, 2]), "day", ["a", "c"], {"app/t/0": 5})
    assert content(settings) == [(3, "b", 1), (7, "a", 2), (8, "c", 2)]
    assert store.open(PROBE).positions(["app/t/0"]) == {"app/t/0": 5}


def test_reads_as_of_a_version_or_a_time(settings: Settings) -> None:
    store = open_store(settings)
    store.ensure(PROBE)
    store.append(PROBE, rows([1], ["a"], [1]), {"app/t/0": 1})
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    store.upsert(PROBE, rows([1, 2], ["a", "a"], [5, 5]), {"app/t/0": 2})
    old = store.open_as_of(PROBE, 1)
    assert (old.version, old.scan().to_pylist()) == (1, [{"k": 1, "day": "a", "v": 1}])
    assert old.positions(["app/t/0"]) == {"app/t/0": 1}
    assert store.open_as_of(PROBE, between).version == 1
    assert store.open(PROBE).scan(where=IsIn("k", [2]))["v"].to_pylist() == [5]
    with pytest.raises(TableError, match="no version as of"):
        store.open_as_of(PROBE, datetime(2000, 1, 1, tzinfo=UTC))


def test_compaction_and_vacuum_keep_rows_and_positions(settings: Settings) -> None:
    store = open_store(settings)
    store.ensure(PROBE)
    for k in range(6):
        store.append(PROBE, rows([k], ["a"], [k]), {"app/t/0": k + 1})
    assert store.excess_files(PROBE) == 5
    before = content(settings)
    store.compact(PROBE)
    assert store.excess_files(PROBE) == 0
    removed = store.vacuum(PROBE, retention_hours=0)
    # the small files no version needs any more (Iceberg: with old snapshots' metadata)
    assert len([r for r in removed if r.endswith(".parquet")]) == 6
    assert content(settings) == before
    assert open_store(settings).open(PROBE).positions(["app/t/0"]) == {"app/t/0": 6}


def _append_many(settings: Settings, writer: str, times: int) -> None:
    """One writer process: ``times`` appends of one row, each with its position."""
    store = open_store(settings)
    for n in range(times):
        store.append(PROBE, rows([n], [writer], [n]), {f"app/{writer}/0": n + 1})


def test_concurrent_writers_never_overwrite_each_other(settings: Settings) -> None:
    """Two processes append to one table at once: every commit of each lands (a writer
    that lost the race for a version commits after it, never over it)."""
    open_store(settings).ensure(PROBE)
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_append_many, args=(settings, w, 8)) for w in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    store = open_store(settings)
    assert content(settings) == sorted((n, w, n) for w in ("a", "b") for n in range(8))
    assert store.open(PROBE).positions(["app/a/0", "app/b/0"]) == {"app/a/0": 8, "app/b/0": 8}
    first = 1 if settings.tables.format == "iceberg" else 0  # Delta: 0 is the creation
    assert [c.version for c in store.history(PROBE)] == list(range(16, first - 1, -1))


def test_a_write_from_positions_another_writer_moved_is_refused(settings: Settings) -> None:
    """A write says the positions it moves on from: when another writer (a second store,
    as in another process) has recorded others meanwhile, every kind of write is refused
    with CommitConflict and the table is left as it was."""
    mine, other = open_store(settings), open_store(settings)
    mine.ensure(PROBE)
    mine.append(PROBE, rows([1], ["a"], [1]), {"app/t/0": 3}, expected={"app/t/0": 0})
    other.append(PROBE, rows([2], ["b"], [1]), {"app/t/0": 5}, expected={"app/t/0": 3})
    before = content(settings)
    version = mine.open(PROBE).version
    stale, on = {"app/t/0": 3}, {"app/t/0": 6}
    writes = [
        lambda: mine.append(PROBE, rows([9], ["a"], [9]), on, expected=stale),
        lambda: mine.upsert(PROBE, rows([1], ["a"], [9]), on, expected=stale),
        lambda: mine.replace(PROBE, rows([9], ["a"], [9]), "day", ["a"], on, expected=stale),
        lambda: mine.upsert(PROBE, PROBE.schema.empty_table(), on, expected=stale),
    ]
    for write in writes:
        with pytest.raises(CommitConflict, match=r"app/t/0 up to 5 since this one read it at 3"):
            write()
    assert content(settings) == before
    assert mine.open(PROBE).version == version
    # from where the table stands it goes through; an id never recorded stands at 0
    mine.upsert(PROBE, rows([1], ["a"], [7]), {"app/t/0": 6, "app/u/0": 2},
                expected={"app/t/0": 5, "app/u/0": 0})  # fmt: skip
    assert content(settings) == [(1, "a", 7), (2, "b", 1)]
    assert other.open(PROBE).positions(["app/t/0", "app/u/0"]) == {"app/t/0": 6, "app/u/0": 2}


def test_a_stale_ingest_worker_is_fenced(settings: Settings) -> None:
    from tests.unit.test_ingest import test_a_stale_worker_is_fenced_and_resumes_from_bronze

    test_a_stale_worker_is_fenced_and_resumes_from_bronze(settings)


def test_restore_rolls_back_rows_and_positions(settings: Settings) -> None:
    store = open_store(settings)
    store.ensure(PROBE)
    store.append(PROBE, rows([1], ["a"], [1]), {"app/t/0": 3})
    store.append(PROBE, rows([2], ["b"], [1]), {"app/t/0": 6, "app/t/1": 2})
    store.upsert(PROBE, rows([1], ["a"], [9]))
    newest = store.open(PROBE).version
    with pytest.raises(TableError, match=f"at version {newest} already"):
        store.restore(PROBE, newest)

    commit = store.restore(PROBE, 1)

    restored = "APPEND" if settings.tables.format == "iceberg" else "RESTORE"  # after a DELETE
    assert (commit.version, commit.operation) == (store.open(PROBE).version, restored)
    assert commit.positions == {"app/t/0": 3, "app/t/1": 0}  # a later reader starts over
    assert content(settings) == [(1, "a", 1)]
    fresh = open_store(settings).open(PROBE)
    assert fresh.positions(["app/t/0", "app/t/1"]) == {"app/t/0": 3, "app/t/1": 0}
    # the versions after the restored one stay readable
    assert sorted(store.open_as_of(PROBE, newest).scan()["v"].to_pylist()) == [1, 9]


def test_restore_refuses_a_version_whose_files_were_vacuumed(settings: Settings) -> None:
    store = open_store(settings)
    store.ensure(PROBE)
    store.append(PROBE, rows([1], ["a"], [1]))
    store.replace(PROBE, rows([1], ["a"], [2]), "day", ["a"])
    store.vacuum(PROBE, retention_hours=0)
    with pytest.raises(TableError, match="vacuumed"):
        store.restore(PROBE, 1)
    assert content(settings) == [(1, "a", 2)]


def test_a_table_made_before_a_new_column_gains_it(settings: Settings) -> None:
    """A table an older shoplake made (no processed_ts) takes the spec's new nullable
    column on ``ensure``: its rows read NULL there, new rows carry it. A new column that
    may not be NULL cannot be added: the error says to rebuild."""
    new = FCT_SALES_MINUTE
    old = TableSpec(
        new.layer, new.name, new.schema.remove(new.schema.get_field_index("processed_ts")),
        key=new.key, description=new.description,
    )  # fmt: skip
    store = open_store(settings)
    store.ensure(old)
    store.append(old, sales([0], [1]).drop_columns(["processed_ts"]), {"p": 1})
    nullable = TableSpec(
        new.layer, new.name,
        new.schema.set(new.schema.get_field_index("processed_ts"),
                       new.schema.field("processed_ts").with_nullable(True)),
        key=new.key, description=new.description,
    )  # fmt: skip
    store.ensure(nullable)
    store.append(nullable, sales([1], [2]), {"p": 2})
    got = store.open(nullable).dataset().to_table().sort_by("minute_bucket").to_pylist()
    assert [(r["paid_orders"], r["processed_ts"] is None) for r in got] == [(1, True), (2, False)]
    assert store.open(nullable).positions(["p"]) == {"p": 2}

    other = TableSpec(
        new.layer, new.name, nullable.schema.append(pa.field("required", pa.int64(), False)),
        key=new.key, description=new.description,
    )  # fmt: skip
    with pytest.raises(TableError, match=r"lacks the column.*required.*rebuild"):
        open_store(settings).ensure(other)


@pytest.mark.parametrize("settings", ["iceberg-local"], indirect=True)
def test_iceberg_compaction_is_redone_when_a_commit_lands_meanwhile(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`shoplake maintain` beside a live pipeline: a commit that lands while a partition
    is being rewritten makes the rewrite lose the catalog's compare-and-swap; it is read
    and rewritten again on the new snapshot, keeping the new rows and positions."""
    from shoplake.tables.iceberg import IcebergHandle

    store, writer = open_store(settings), open_store(settings)
    store.ensure(FCT_SALES_MINUTE)
    for minute in range(3):
        store.append(FCT_SALES_MINUTE, sales([minute], [1]), {"g/t/0": minute + 1})
    scan = IcebergHandle.scan
    raced: list[int] = []

    def scan_while_another_commits(self: IcebergHandle, *args: object, **kw: object) -> pa.Table:
        rows = scan(self, *args, **kw)  # type: ignore[arg-type]
        if not raced:  # the pipeline commits between the rewrite's read and its commit
            raced.append(writer.append(FCT_SALES_MINUTE, sales([10], [5]), {"g/t/0": 9}))
        return rows

    monkeypatch.setattr(IcebergHandle, "scan", scan_while_another_commits)
    # the rewrite that committed replaced the three files and the one that raced it
    assert store.compact(FCT_SALES_MINUTE) == {"numFilesRemoved": 4, "numFilesAdded": 1}
    monkeypatch.undo()
    assert raced
    handle = store.open(FCT_SALES_MINUTE)
    assert handle.version > raced[0]
    assert sorted(handle.scan()["paid_orders"].to_pylist()) == [1, 1, 1, 5]
    assert handle.positions(["g/t/0"]) == {"g/t/0": 9}
