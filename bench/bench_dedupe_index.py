"""Silver's dedupe index (pipeline/event_ids.py) as a live run grows it: memory and time.

Adds ``--ids`` random event ids of one day in batches of ``--batch`` (a round's worth at
5k events/s), looking each batch up first as silver does, and reports: the digests held
(16 bytes an id), the process's resident memory at the end and at its peak, the peak of
what the adds allocated on the Python heap beside what was held (tracemalloc, a second
pass), and the time spent adding and looking up, per id. ``--spill-mib`` lists sizes of
``pipeline.dedupe_spill_mib`` to measure side by side (runs that large go to files; "none":
all on the heap); ``--compare DIR`` runs the same in a process importing shoplake from
another checkout (e.g. a git worktree), all on the heap.

Run:  .venv/bin/python bench/bench_dedupe_index.py [--ids 9000000] [--batch 5000]
      [--spill-mib none 4 16] [--compare /tmp/old]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
from common import command, machine, measured_from

DAY = date(2026, 12, 7)


def measure(ids: int, batch: int, spill_mib: float | None) -> dict[str, float]:
    """Times the adds and lookups in one pass, then traces the adds' allocations in a
    second (tracemalloc slows allocations: its pass is not timed)."""
    out: dict[str, float] = {}
    for traced in (False, True):
        out |= _grow(ids, batch, spill_mib, traced)
    return out


def _grow(ids: int, batch: int, spill_mib: float | None, traced: bool) -> dict[str, float]:
    from shoplake.pipeline import event_ids
    from shoplake.pipeline.event_ids import EventIdIndex

    rng = np.random.default_rng(7)
    index = (
        EventIdIndex(0, DAY)  # (an older checkout may not spill)
        if spill_mib is None
        else EventIdIndex(0, DAY, file_from=event_ids.ids_in_mib(spill_mib))
    )
    days = pa.array([DAY] * batch, pa.date32())
    adding = looking = 0.0
    beside = 0  # the largest allocation beside the digests held, bytes
    if traced:
        tracemalloc.start()
    for _ in range(ids // batch):
        raw = rng.bytes(16 * batch)
        fresh = pa.array([raw[i : i + 16].hex() for i in range(0, len(raw), 16)])
        started = time.perf_counter()
        found = index.held(fresh, DAY)
        looking += time.perf_counter() - started
        assert len(found) == 0
        if traced:
            tracemalloc.reset_peak()
            held = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        index.add(fresh, days[: len(fresh)])
        adding += time.perf_counter() - started
        if traced:
            beside = max(beside, tracemalloc.get_traced_memory()[1] - held)
    if traced:
        tracemalloc.stop()
        return {"merge_peak_mib": beside / 2**20}
    return {
        "ids": len(index),
        "digests_mib": len(index) * 16 / 2**20,
        "rss_mib": _status_mib("VmRSS"),
        "peak_rss_mib": _status_mib("VmHWM"),
        "add_us": adding / len(index) * 1e6,
        "lookup_us": looking / len(index) * 1e6,
    }


def _status_mib(field: str) -> float:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=9_000_000, help="30 min at 5k events/s")
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument(
        "--spill-mib", nargs="+", default=["none"], help='run sizes to spill from, or "none"'
    )
    parser.add_argument("--compare", type=Path, help="another checkout, measured after")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        spill = None if args.spill_mib == ["none"] else float(args.spill_mib[0])
        print(json.dumps(measure(args.ids, args.batch, spill)))
        return
    src = Path(__file__).resolve().parents[1] / "src"
    sides = {
        f"spill {mib}" + (" MiB" if mib != "none" else ""): (src, mib) for mib in args.spill_mib
    }
    if args.compare:
        sides[str(args.compare)] = (args.compare.resolve() / "src", "none")
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    columns = [
        ("ids", "ids", 12, ",.0f"),
        ("digests MiB", "digests_mib", 13, ".1f"),
        ("RSS MiB", "rss_mib", 9, ".0f"),
        ("peak RSS MiB", "peak_rss_mib", 14, ".0f"),
        ("merge peak MiB", "merge_peak_mib", 16, ".1f"),
        ("add µs/id", "add_us", 11, ".2f"),
        ("lookup µs/id", "lookup_us", 14, ".2f"),
    ]
    print(" " * 24 + "".join(f"{head:>{width}s}" for head, _, width, _ in columns))
    for name, (checkout, mib) in sides.items():
        sizes = ("--ids", str(args.ids), "--batch", str(args.batch), "--spill-mib", mib)
        r = measured_from(checkout, __file__, "--measure", *sizes)
        cells = (f"{r[key]:>{width}{form}}" for _, key, width, form in columns)
        print(f"{name:24s}" + "".join(cells))


if __name__ == "__main__":
    main()
