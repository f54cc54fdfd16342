"""The event ids a silver table holds, for dedupe: 16 bytes an id.

Each id is kept as its 128-bit BLAKE2b digest, grouped by event day so that a day past the
dedupe horizon goes at once. Two different ids share a digest with a chance of about
n² / 2¹²⁹: for the 3 billion ids of a week at 5,000 events/s, below 10⁻²⁰. Kept as Arrow
strings, the same ids took ~44 bytes each plus the copies of every concatenation, and a
week of them outgrew any budget.

A day's digests are sorted runs, merged as they grow (each run at least twice the size of
the next, so a day has O(log n) runs and each digest is copied O(log n) times); a lookup
is a binary search in each run.

Runs of at least ``file_from`` digests live in a temporary file instead of on the heap,
mapped into memory: a lookup reads them through the OS's page cache and then lets the
pages go (``madvise``), so what a week of ids takes stays out of the process's own memory
(the kernel keeps the pages cached while memory is free and drops them under pressure).
The file is unlinked as soon as it is made: it goes with the process however that ends.
"""

from __future__ import annotations

import hashlib
import mmap
import tempfile
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DIGEST_BYTES = 16
_FILE_MERGE_CHUNK = 1 << 18  # digests of the older run a merge into a file takes at once


def ids_in_mib(mib: float) -> int:
    """How many digests ``mib`` MiB hold (at least one)."""
    return max(1, int(mib * 2**20 / DIGEST_BYTES))


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


class _Run:
    """A sorted run's two halves: arrays on the heap, or views of a mapped file."""

    __slots__ = ("_mapped", "hi", "lo")

    def __init__(self, hi: np.ndarray, lo: np.ndarray, mapped: mmap.mmap | None = None) -> None:
        self.hi, self.lo, self._mapped = hi, lo, mapped

    def __len__(self) -> int:
        return len(self.hi)

    @property
    def in_file(self) -> bool:
        return self._mapped is not None

    def release(self, start: int = 0, stop: int | None = None) -> None:
        """Lets the pages of digests ``start:stop`` (read or written) go from this
        process's memory; the file's data stays (in the page cache or on disk). A no-op
        for a run on the heap."""
        if self._mapped is None or not hasattr(self._mapped, "madvise"):
            return
        stop = len(self) if stop is None else stop
        for half in (0, len(self)):  # the high halves, then the low ones
            first = (half + start) * 8 // mmap.PAGESIZE * mmap.PAGESIZE
            end = min((half + stop) * 8, len(self._mapped))
            if end > first:
                self._mapped.madvise(mmap.MADV_DONTNEED, first, end - first)


def _file_run(size: int, directory: str | None) -> _Run:
    """A writable run of ``size`` digests in an unlinked temporary file."""
    nbytes = size * DIGEST_BYTES
    with tempfile.TemporaryFile(dir=directory) as file:
        file.truncate(nbytes)
        mapped = mmap.mmap(file.fileno(), nbytes)  # keeps its own handle on the file
    halves = np.frombuffer(mapped, dtype="<u8").reshape(2, size)
    return _Run(halves[0], halves[1], mapped)


def _merged(older: _Run, newer: _Run) -> _Run:
    """Two sorted runs as one on the heap, inserting the newer (mostly the smaller) into
    the older: beside the result only a byte a digest and the newer run's positions are
    allocated (a sort of the two concatenated took 2.5 times the result: the copy, the
    order, the gathered halves), so the largest merge of a day swings memory less."""
    at = np.searchsorted(older.hi, newer.hi)
    return _Run(np.insert(older.hi, at, newer.hi), np.insert(older.lo, at, newer.lo))


def _merged_into_file(older: _Run, newer: _Run, directory: str | None) -> _Run:
    """Two sorted runs as one in a file, written a slice of the older run at a time (with
    the newer digests that sort before the next slice), so the heap holds one slice."""
    out = _file_run(len(older) + len(newer), directory)
    i = j = 0
    while i < len(older):
        i_end = min(i + _FILE_MERGE_CHUNK, len(older))
        j_end = (
            len(newer) if i_end == len(older) else int(np.searchsorted(newer.hi, older.hi[i_end]))
        )
        at = np.searchsorted(older.hi[i:i_end], newer.hi[j:j_end])
        written = slice(i + j, i_end + j_end)
        out.hi[written] = np.insert(older.hi[i:i_end], at, newer.hi[j:j_end])
        out.lo[written] = np.insert(older.lo[i:i_end], at, newer.lo[j:j_end])
        out.release(i + j, i_end + j_end)  # (kept: in the page cache until written back)
        older.release(i, i_end)
        newer.release(j, j_end)
        i, j = i_end, j_end
    return out


class _Runs:
    """One day's digests: sorted runs, the largest first; a merge of ``file_from`` digests
    or more goes to a file in ``directory`` (None: the system's temporary directory)."""

    def __init__(self, file_from: int | None = None, directory: str | None = None) -> None:
        self.runs: list[_Run] = []
        self.file_from = file_from
        self.directory = directory

    def add(self, hi: np.ndarray, lo: np.ndarray) -> None:
        run = _Run(*_sorted(hi, lo))
        if self._to_file(len(run)):  # (a day read from the table at once)
            run = _merged_into_file(run, _Run(hi[:0], lo[:0]), self.directory)
        self.runs.append(run)
        while len(self.runs) > 1 and 2 * len(self.runs[-1]) >= len(self.runs[-2]):
            newer, older = self.runs.pop(), self.runs.pop()
            if self._to_file(len(older) + len(newer)):
                self.runs.append(_merged_into_file(older, newer, self.directory))
            else:
                self.runs.append(_merged(older, newer))

    def _to_file(self, size: int) -> bool:
        return self.file_from is not None and size >= self.file_from

    def holds(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Which of the digests (sorted by ``hi``, so the searches walk each run once)
        this day holds."""
        found = np.zeros(len(hi), dtype=bool)
        for run in self.runs:
            at = np.searchsorted(run.hi, hi)
            same = run.hi[np.minimum(at, len(run) - 1)] == hi
            # the high half alone decides unless digests share it: then the low one too
            for i in np.flatnonzero(same):
                j = at[i]
                while j < len(run) and run.hi[j] == hi[i] and not found[i]:
                    found[i] = run.lo[j] == lo[i]
                    j += 1
            run.release()
        return found

    @property
    def size(self) -> int:
        return sum(len(run) for run in self.runs)

    @property
    def in_files(self) -> int:
        return sum(len(run) for run in self.runs if run.in_file)


class EventIdIndex:
    """The ids of one table's events from day ``since`` on, as of table ``version``; a
    day's runs of ``file_from`` ids or more are kept in files in ``directory`` (None: the
    system's temporary directory), the rest on the heap (``file_from`` None: all)."""

    def __init__(
        self,
        version: int,
        since: date,
        file_from: int | None = None,
        directory: str | None = None,
    ) -> None:
        self.version = version
        self.since = since
        self._horizon_start = since  # the latest a lookup asked for (see slide_to)
        self._days: dict[date, _Runs] = {}
        self._file_from, self._directory = file_from, directory

    def __len__(self) -> int:
        return sum(runs.size for runs in self._days.values())

    @property
    def in_files(self) -> int:
        """How many of the ids are kept in files rather than on the heap."""
        return sum(runs.in_files for runs in self._days.values())

    @property
    def heap_bytes(self) -> int:
        return (len(self) - self.in_files) * DIGEST_BYTES

    def add(
        self, event_ids: pa.Array | pa.ChunkedArray, event_dates: pa.Array | pa.ChunkedArray
    ) -> None:
        """Adds the ids (with their event days) of rows a table was given; days before
        ``since`` are left out."""
        table = pa.table({"id": event_ids, "day": event_dates})
        table = table.filter(pc.greater_equal(table["day"], pa.scalar(self.since, pa.date32())))
        for day in pc.unique(table["day"]).to_pylist():
            of_day = table.filter(pc.equal(table["day"], pa.scalar(day, pa.date32())))["id"]
            if day not in self._days:
                self._days[day] = _Runs(self._file_from, self._directory)
            self._days[day].add(*digests(of_day))

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
