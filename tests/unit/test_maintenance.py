"""Table upkeep: compaction merges the micro-batches' small files without changing a row or
a recorded position, vacuum runs, and both are scheduled."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from pytest import MonkeyPatch

from shoplake.contract.tables import ALL_TABLES, RAW_EVENTS
from shoplake.pipeline.maintenance import TableMaintenance
from shoplake.pipeline.positions import positions_of
from shoplake.pipeline.reconcile import current_gold, recomputed_gold
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.tables import delta
from tests.conftest import feed, rows
from tests.unit.test_cli import shoplake


def small_batches(tmp_path: Path) -> tuple[Settings, Pipeline]:
    s = Settings(home=tmp_path / "home", pipeline={"batch_max_records": 150})
    lines = [e.value for e in itertools.islice(ShopSimulator(8, bad_ratio=0.05).stream(), 1500)]
    feed(s, lines)
    p = Pipeline(s)
    p.run("both", until_idle=True)
    return s, p


def test_compaction_keeps_every_row_and_position(tmp_path: Path) -> None:
    s, p = small_batches(tmp_path)
    tps = p.transport.partitions()
    group = s.pipeline.consumer_group
    before = (current_gold(p.store), positions_of(p.store.open(RAW_EVENTS), tps, group))
    bronze = sorted(r["raw_value"] for r in rows(p, "SELECT raw_value FROM bronze.raw_events"))
    assert p.store.excess_files(RAW_EVENTS) >= 5  # one file per small batch

    report = TableMaintenance(p.store, s.pipeline).run(min_files=2, vacuum=True)

    assert report.compacted["bronze.raw_events"] >= 5 and not report.failed
    assert set(report.vacuumed) == {t.qualified for t in ALL_TABLES if p.store.exists(t)}
    assert all(p.store.excess_files(t) < 2 for t in ALL_TABLES if p.store.exists(t))
    after = (current_gold(p.store), positions_of(p.store.open(RAW_EVENTS), tps, group))
    assert after == before
    assert (
        sorted(r["raw_value"] for r in rows(p, "SELECT raw_value FROM bronze.raw_events")) == bronze
    )
    # the pipeline goes on from the same positions
    feed(s, [e.value for e in itertools.islice(ShopSimulator(9).stream(), 300)])
    p.run("both", until_idle=True)
    assert rows(p, "SELECT count(*) AS n FROM bronze.raw_events")[0]["n"] == len(bronze) + 300
    assert current_gold(p.store) == recomputed_gold(p.store, s.reporting)
    p.close()


def test_compacted_files_keep_payloads_plain_in_small_row_groups(
    tmp_path: Path, monkeypatch: MonkeyPatch
) -> None:
    """A compacted file is cut in row groups, so a scan for a few keys reads those whose
    statistics hold them; payload columns stay without statistics, as when written."""
    monkeypatch.setattr(delta, "_COMPACTED_ROW_GROUP_ROWS", 400)
    _, p = small_batches(tmp_path)
    p.store.compact(RAW_EVENTS)
    table = DeltaTable(p.store.location(RAW_EVENTS))
    [path] = [f for f in table.file_uris() if "event_type=page_view" in f]
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows > 400 and meta.num_row_groups == -(-meta.num_rows // 400)
    columns = [meta.row_group(0).column(i) for i in range(meta.num_columns)]
    stats = {c.path_in_schema: c.statistics is not None for c in columns}
    assert stats["raw_value"] is False and stats["offset"] is True
    p.close()


def test_maintenance_runs_when_due(tmp_path: Path) -> None:
    s, p = small_batches(tmp_path)
    upkeep = TableMaintenance(p.store, s.pipeline)  # every 60 s, vacuum hourly
    assert upkeep.run_due() is None  # not due yet
    upkeep._checked_at -= s.pipeline.maintenance_every_s
    report = upkeep.run_due()
    assert report is not None and report.compacted and not report.vacuumed
    p.close()


def test_maintain_command(tmp_path: Path) -> None:
    s, p = small_batches(tmp_path)
    p.close()
    out = shoplake(s.home, "maintain").stdout
    assert "bronze.raw_events" in out and "files compacted" in out
    again = shoplake(s.home, "maintain", "--no-vacuum").stdout
    assert "bronze.raw_events" not in again  # nothing left to compact
    missing = shoplake(tmp_path / "nowhere", "maintain", check=False)
    assert missing.returncode == 1 and missing.stderr.strip()


def test_compaction_leaves_full_files_alone(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    """A busy day's files grow to the compacted size and stay: compaction rewrites only the
    small files the batches since left, not the whole day again every time."""
    monkeypatch.setattr(delta, "_COMPACTED_FILE_BYTES", 32 << 10)
    home = tmp_path / "home"
    s = Settings(home=home, pipeline={"batch_max_records": 100_000})
    feed(s, [e.value for e in itertools.islice(ShopSimulator(8).stream(), 1500)])
    p = Pipeline(s)
    p.run("both", until_idle=True)  # one batch: a file per partition
    p.close()
    lake = DeltaTable(p.store.location(RAW_EVENTS))
    full = {f for f, size in _files(lake) if size >= 32 << 10}
    assert full
    s = Settings(home=home, pipeline={"batch_max_records": 50})
    feed(s, [e.value for e in itertools.islice(ShopSimulator(9).stream(), 600)])
    p = Pipeline(s)
    p.run("both", until_idle=True)  # small batches: small files
    small = p.store.excess_files(RAW_EVENTS)
    assert small >= 10
    p.store.compact(RAW_EVENTS)
    lake.update_incremental()
    assert full <= {f for f, _ in _files(lake)}  # not rewritten
    assert p.store.excess_files(RAW_EVENTS) <= small // 2  # the small ones were
    assert rows(p, "SELECT count(*) AS n FROM bronze.raw_events")[0]["n"] == 2100
    assert current_gold(p.store) == recomputed_gold(p.store, s.reporting)
    p.close()


def _files(table: DeltaTable) -> list[tuple[str, int]]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return list(zip(actions["path"].to_pylist(), actions["size_bytes"].to_pylist(), strict=True))
