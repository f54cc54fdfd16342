"""The event ids a silver table holds, in memory, for dedupe: 16 bytes an id.

Each id is kept as its 128-bit BLAKE2b digest, grouped by event day so that a day past the
dedupe horizon goes at once. Two different ids share a digest with a chance of about
n² / 2¹²⁹: for the 3 billion ids of a week at 5,000 events/s, below 10⁻²⁰. Kept as Arrow
strings, the same ids took ~44 bytes each plus the copies of every concatenation, and a
week of them outgrew any budget.

A day's digests are sorted runs, merged as they grow (each run at least twice the size of
the next, so a day has O(log n) runs and each digest is copied O(log n) times); a lookup
is a binary search in each run.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DIGEST_BYTES = 16


def digests(ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The 128-bit digests of ``ids`` (strings, no nulls) as two uint64 halves, in order."""
    blake = hashlib.blake2b
    size = DIGEST_BYTES
    joined = b"".join(blake(i.encode(), digest_size=size).digest() for i in ids.to_pylist())
    halves = np.frombuffer(joined, dtype="<u8").reshape(-1, 2)
    return np.ascontiguousarray(halves[:, 0]), np.ascontiguousarray(halves[:, 1])


def _sorted(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """By the high half only (a lookup compares every low half under an equal high one)."""
    order = np.argsort(hi)
    return hi[order], lo[order]


def _merged(
    older: tuple[np.ndarray, np.ndarray], newer: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs as one, inserting the newer (mostly the smaller) into the older:
    beside the result only a byte a digest and the newer run's positions are allocated (a
    sort of the two concatenated took 2.5 times the result: the copy, the order, the
    gathered halves), so the largest merge of a day swings the process's memory less."""
    at = np.searchsorted(older[0], newer[0])
    return np.insert(older[0], at, newer[0]), np.insert(older[1], at, newer[1])


class _Runs:
    """One day's digests: sorted runs, the largest first."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, hi: np.ndarray, lo: np.ndarray) -> None:
        self.runs.append(_sorted(hi, lo))
        while len(self.runs) > 1 and 2 * len(self.runs[-1][0]) >= len(self.runs[-2][0]):
            newer, older = self.runs.pop(), self.runs.pop()
            self.runs.append(_merged(older, newer))

    def holds(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Which of the digests (sorted by ``hi``, so the searches walk each run once)
        this day holds."""
        found = np.zeros(len(hi), dtype=bool)
        for run_hi, run_lo in self.runs:
            at = np.searchsorted(run_hi, hi)
            same = run_hi[np.minimum(at, len(run_hi) - 1)] == hi
            # the high half alone decides unless digests share it: then the low one too
            for i in np.flatnonzero(same):
                j = at[i]
                while j < len(run_hi) and run_hi[j] == hi[i] and not found[i]:
                    found[i] = run_lo[j] == lo[i]
                    j += 1
        return found

    @property
    def size(self) -> int:
        return sum(len(hi) for hi, _ in self.runs)


class EventIdIndex:
    """The ids of one table's events from day ``since`` on, as of table ``version``."""

    def __init__(self, version: int, since: date) -> None:
        self.version = version
        self.since = since
        self._horizon_start = since  # the latest a lookup asked for (see slide_to)
        self._days: dict[date, _Runs] = {}

    def __len__(self) -> int:
        return sum(runs.size for runs in self._days.values())

    @property
    def nbytes(self) -> int:
        return len(self) * DIGEST_BYTES

    def add(
        self, event_ids: pa.Array | pa.ChunkedArray, event_dates: pa.Array | pa.ChunkedArray
    ) -> None:
        """Adds the ids (with their event days) of rows a table was given; days before
        ``since`` are left out."""
        table = pa.table({"id": event_ids, "day": event_dates})
        table = table.filter(pc.greater_equal(table["day"], pa.scalar(self.since, pa.date32())))
        for day in pc.unique(table["day"]).to_pylist():
            of_day = table.filter(pc.equal(table["day"], pa.scalar(day, pa.date32())))["id"]
            self._days.setdefault(day, _Runs()).add(*digests(of_day))

    def reach_back(
        self,
        since: date,
        event_ids: pa.Array | pa.ChunkedArray,
        event_dates: pa.Array | pa.ChunkedArray,
    ) -> None:
        """Holds the days from ``since`` on (earlier than before) too: ``event_ids`` and
        ``event_dates`` are the table's rows of the days in between."""
        self.since = min(self.since, since)
        self.add(event_ids, event_dates)

    def slide_to(self, since: date, kept: timedelta) -> None:
        """A lookup's horizon starts at ``since``: when that is a new day, the days more
        than ``kept`` before it go. Days reached back to stay until then, so a run of
        events from earlier days does not read the same days again and again."""
        if since > self._horizon_start:
            self._horizon_start = since
            self.forget_before(since - kept)

    def forget_before(self, since: date) -> None:
        """Drops the days before ``since`` (past the horizon)."""
        self.since = max(self.since, since)
        for day in [d for d in self._days if d < self.since]:
            del self._days[day]

    def held(self, event_ids: pa.Array | pa.ChunkedArray, since: date | None = None) -> pa.Array:
        """Those of ``event_ids`` the index holds on a day from ``since`` on (None: any
        day it keeps)."""
        days = [runs for day, runs in self._days.items() if since is None or day >= since]
        if not len(event_ids) or not days:
            return pa.array([], pa.string())
        hi, lo = digests(event_ids)
        order = np.argsort(hi)  # sorted once for every day's searches
        hi_sorted, lo_sorted = hi[order], lo[order]
        found_sorted = np.zeros(len(hi), dtype=bool)
        for runs in days:
            found_sorted |= runs.holds(hi_sorted, lo_sorted)
        found = np.zeros(len(hi), dtype=bool)
        found[order] = found_sorted
        kept = pc.filter(event_ids, pa.array(found))
        return kept.combine_chunks() if isinstance(kept, pa.ChunkedArray) else kept
