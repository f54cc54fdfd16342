"""Silver's index of event ids (RocksDB on local disk): exact membership, days past the
horizon go, and its files with them."""

from __future__ import annotations

import gc
import os
import random
import shutil
import subprocess
import tempfile
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa

from shoplake.pipeline import event_ids
from shoplake.pipeline.event_ids import EventIdIndex, digests

DAY = date(2026, 3, 1)


def test_the_index_holds_exactly_what_was_added_over_many_steps() -> None:
    rng = random.Random(4)
    index = EventIdIndex(version=0, since=DAY)
    added: set[str] = set()
    for step in range(60):  # enough steps for runs to merge many times
        ids = [f"e-{rng.randrange(10**9)}" for _ in range(rng.randrange(1, 400))]
        days = [DAY + timedelta(days=rng.randrange(3)) for _ in ids]
        probe = ids[: len(ids) // 2] + [f"new-{step}-{i}" for i in range(50)]
        rng.shuffle(probe)
        got = index.held(pa.array(probe))
        assert set(got.to_pylist()) == {i for i in probe if i in added}
        index.add(pa.array(ids), pa.array(days, pa.date32()))
        added |= set(ids)
    assert len(index) >= len(added)  # an id given twice is counted twice: still held once


def test_days_before_the_horizon_are_forgotten_and_never_added() -> None:
    index = EventIdIndex(version=0, since=DAY)
    index.add(pa.array(["old", "a", "b"]),
              pa.array([DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)]))  # fmt: skip
    assert index.held(pa.array(["old", "a", "b", "c"])).to_pylist() == ["a", "b"]
    index.forget_before(DAY + timedelta(days=1))
    assert index.held(pa.array(["a", "b"])).to_pylist() == ["b"]
    assert index.held(pa.array([], pa.string())).to_pylist() == []


def test_days_reached_back_to_stay_until_a_new_day() -> None:
    index = EventIdIndex(version=0, since=DAY)
    index.add(pa.array(["a"]), pa.array([DAY], pa.date32()))
    earlier = DAY - timedelta(days=3)
    index.reach_back(earlier, pa.array(["old"]), pa.array([earlier], pa.date32()))
    assert index.since == earlier
    index.slide_to(DAY, kept=timedelta(days=1))  # the usual horizon again: nothing goes
    assert index.held(pa.array(["old", "a"])).to_pylist() == ["old", "a"]
    # a lookup sees the days of its own horizon only, whatever else is kept
    assert index.held(pa.array(["old", "a"]), since=DAY).to_pylist() == ["a"]
    index.slide_to(DAY + timedelta(days=1), kept=timedelta(days=1))  # a new day
    assert index.since == DAY
    assert index.held(pa.array(["old", "a"])).to_pylist() == ["a"]


def test_digests_are_stable_and_distinct() -> None:
    x, y, x_again = digests(pa.array(["x", "y", "x"]))
    assert x == x_again != y and len(x) == 16


def test_its_files_go_with_a_forgotten_day_and_with_the_index() -> None:
    index = EventIdIndex(version=0, since=DAY)
    index.add(pa.array(["a", "b"]), pa.array([DAY, DAY + timedelta(days=1)], pa.date32()))
    root = index._root
    assert sorted(p.name for p in root.iterdir()) == [
        DAY.isoformat(),
        (DAY + timedelta(days=1)).isoformat(),
    ]
    index.forget_before(DAY + timedelta(days=1))
    assert [p.name for p in root.iterdir()] == [(DAY + timedelta(days=1)).isoformat()]
    del index  # dropped (silver replaces an index it rebuilt): closed and removed
    gc.collect()
    assert not root.exists()
    closed = EventIdIndex(version=0, since=DAY)
    closed.close()
    assert not closed._root.exists()


def test_the_files_of_a_killed_process_are_removed_by_the_next_index() -> None:
    dead = subprocess.Popen(["true"])  # a pid no process has now
    dead.wait()
    orphan = Path(tempfile.gettempdir()) / f"shoplake-ids-{dead.pid}-x1"
    orphan.mkdir()
    (orphan / "2026-03-01").mkdir()
    mine = Path(tempfile.mkdtemp(prefix=f"shoplake-ids-{os.getpid()}-"))  # a live process's
    index = EventIdIndex(version=0, since=DAY)
    assert not orphan.exists() and mine.exists()
    index.close()
    shutil.rmtree(mine)


def test_memory_stays_within_the_shared_budget_whatever_is_held() -> None:
    index = EventIdIndex(version=0, since=DAY)
    ids = [f"e-{i}" for i in range(300_000)]
    for start in range(0, len(ids), 50_000):
        chunk = pa.array(ids[start : start + 50_000])
        index.add(chunk, pa.array([DAY] * len(chunk), pa.date32()))
    assert len(index.held(pa.array(ids[::1000]))) == 300  # all of them, from disk
    used = event_ids.memory_bytes()
    assert 0 < used <= event_ids.CACHE_BYTES
    index.close()
