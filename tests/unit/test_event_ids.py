"""Silver's index of event ids: exact membership, days past the horizon go, large runs
in files."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shoplake.pipeline import event_ids
from shoplake.pipeline.event_ids import EventIdIndex, _Runs, digests

DAY = date(2026, 3, 1)


@pytest.mark.parametrize("file_from", [None, 300])
def test_the_index_holds_exactly_what_was_added_over_many_steps(
    file_from: int | None, tmp_path: Path
) -> None:
    rng = random.Random(4)
    index = EventIdIndex(version=0, since=DAY, file_from=file_from, directory=str(tmp_path))
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
    assert len(index) >= len(added)  # an id given twice is kept twice: still held once
    assert index.heap_bytes == 16 * (len(index) - index.in_files)
    if file_from is None:
        assert index.in_files == 0
    else:  # most in files, none of them left named in the directory
        assert index.in_files > len(index) / 2
        assert list(tmp_path.iterdir()) == []


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


def test_digests_sharing_a_high_half_are_told_apart_by_the_low_one() -> None:
    runs = _Runs()
    hi = np.array([7, 7, 9], dtype=np.uint64)
    runs.add(hi, np.array([1, 2, 3], dtype=np.uint64))
    found = runs.holds(np.array([7, 7, 9, 9], dtype=np.uint64),
                       np.array([2, 5, 3, 1], dtype=np.uint64))  # fmt: skip
    assert found.tolist() == [True, False, True, False]


def test_digests_are_stable_and_distinct() -> None:
    hi, lo = digests(pa.array(["x", "y", "x"]))
    assert (hi[0], lo[0]) == (hi[2], lo[2]) and (hi[0], lo[0]) != (hi[1], lo[1])


@pytest.mark.parametrize("file_from", [None, 200])
def test_runs_merged_over_many_adds_stay_sorted_and_exact_under_shared_high_halves(
    file_from: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # merges into a file a few digests at a time: equal high halves straddle the slices
    monkeypatch.setattr(event_ids, "_FILE_MERGE_CHUNK", 7)
    rng = np.random.default_rng(5)
    runs = _Runs(file_from)
    added: set[tuple[int, int]] = set()
    total = 0
    for _ in range(40):  # high halves from a small range: many equal across the runs
        n = int(rng.integers(1, 60))
        hi = rng.integers(0, 25, n).astype(np.uint64)
        lo = rng.integers(0, 2**62, n).astype(np.uint64)
        runs.add(hi, lo)
        total += n
        added |= set(zip(hi.tolist(), lo.tolist(), strict=True))
    assert len(runs.runs) < 10  # merged as they grew
    assert all((np.diff(run.hi.astype(np.int64)) >= 0).all() for run in runs.runs)
    probe = sorted([*added, *((h, low + 1) for h, low in list(added)[:50])])
    hi = np.array([h for h, _ in probe], dtype=np.uint64)
    lo = np.array([low for _, low in probe], dtype=np.uint64)
    assert runs.holds(hi, lo).tolist() == [pair in added for pair in probe]
    assert runs.size == total
    assert (runs.in_files > 0) == (file_from is not None)


def test_a_day_added_at_once_past_the_spill_size_goes_to_a_file() -> None:
    index = EventIdIndex(version=0, since=DAY, file_from=100)
    index.add(pa.array([f"e-{i}" for i in range(150)]), pa.array([DAY] * 150, pa.date32()))
    index.add(pa.array(["late"]), pa.array([DAY], pa.date32()))
    assert (len(index), index.in_files, index.heap_bytes) == (151, 150, 16)
    assert index.held(pa.array(["e-0", "e-149", "late", "e-150"])).to_pylist() == [
        "e-0",
        "e-149",
        "late",
    ]
