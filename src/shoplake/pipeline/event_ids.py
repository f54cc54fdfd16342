"""The event ids a silver table holds, for dedupe: on local disk, in RocksDB.

Each id is kept as its 128-bit BLAKE2b digest, in a RocksDB database of its event day, so
that a day past the dedupe horizon goes at once (its directory is deleted). Two different
ids share a digest with a chance of about n² / 2¹²⁹: for the 3 billion ids of a week at
5,000 events/s, below 10⁻²⁰.

Held in memory, the same digests took 16 bytes an id: 6.9 GB a day at 5,000 events/s,
so a long run outgrew any machine. On disk (~20 bytes an id), the databases of a process
share one block cache with their memtables charged to it, and keep their bloom filters
and indexes beside it: ~1.4 bytes an id in memory. A lookup of a batch is one multi-get
a day held; an id not held is mostly answered by the day's bloom filters.

The databases are a cache of the tables' ids, never the truth: they are written without
a write-ahead log, live in a directory of the process under the system's temporary
directory (removed when the index is dropped or the process exits; those of a process
that was killed are removed by the next one), and are rebuilt from the table after a
restart.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import weakref
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rocksdict import (
    BlockBasedOptions,
    Cache,
    DbClosedError,
    Options,
    Rdict,
    WriteBatch,
    WriteBufferManager,
    WriteOptions,
)

from shoplake.process_dirs import remove_orphans

DIGEST_BYTES = 16
# What the databases of a process share: a cache of the blocks read, and charged to it,
# the memtables being written. Their bloom filters and indexes (~1.4 bytes an id) are
# held beside it.
CACHE_BYTES = 32 << 20
MEMTABLES_BYTES = 16 << 20
_PREFIX = "shoplake-ids-"
_OPEN: weakref.WeakSet[_Day] = weakref.WeakSet()  # every day's database open in the process


def digests(ids: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """The 128-bit digests of ``ids`` (strings, no nulls), in order."""
    blake = hashlib.blake2b
    return [blake(i.encode(), digest_size=DIGEST_BYTES).digest() for i in ids.to_pylist()]


def memory_bytes() -> int:
    """What the databases of the process hold in memory: their shared cache (memtables
    included) and, beside it, their bloom filters and indexes."""
    readers = 0
    for day in list(_OPEN):
        try:
            readers += day.db.property_int_value("rocksdb.estimate-table-readers-mem") or 0
        except DbClosedError:  # its day went while this was asked (another thread)
            continue
    return int(_shared()[2].get_usage()) + readers


@cache
def _shared() -> tuple[Options, WriteOptions, Cache]:
    """One block cache and one memtable budget for every database of the process."""
    shared = Cache(CACHE_BYTES)
    table = BlockBasedOptions()
    # ~1% of absent ids read a block. The filters stay out of the cache: evicted by the
    # blocks read, they made a lookup 10 times slower once the ids outgrew it.
    table.set_bloom_filter(10, False)
    table.set_block_cache(shared)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_block_based_table_factory(table)
    options.set_write_buffer_manager(
        WriteBufferManager.new_write_buffer_manager_with_cache(MEMTABLES_BYTES, False, shared)
    )
    options.set_write_buffer_size(MEMTABLES_BYTES // 4)
    writes = WriteOptions()
    # a cache of the tables, rebuilt after a restart (a property; the stub has a method)
    writes.disable_wal = True  # type: ignore[method-assign,assignment]
    return options, writes, shared


class _Day:
    """One day's digests: a RocksDB database in its own directory."""

    def __init__(self, path: Path) -> None:
        options, writes, _ = _shared()
        self.db = Rdict(str(path), options)
        self.db.set_write_options(writes)
        self.size = 0
        _OPEN.add(self)

    def add(self, keys: list[bytes]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key in keys:
            batch.put(key, b"")
        self.db.write(batch)
        self.size += len(keys)

    def holds(self, keys: list[bytes]) -> np.ndarray:
        asked = cast("list[str | int | float | bytes | bool]", keys)  # the stub's key types
        values = cast("list[bytes | None]", self.db.get(asked))
        return np.fromiter((v is not None for v in values), bool, len(keys))

    def close(self) -> None:
        _OPEN.discard(self)
        self.db.close()


class EventIdIndex:
    """The ids of one table's events from day ``since`` on, as of table ``version``."""

    def __init__(self, version: int, since: date) -> None:
        self.version = version
        self.since = since
        self._horizon_start = since  # the latest a lookup asked for (see slide_to)
        self._days: dict[date, _Day] = {}
        self._root = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        weakref.finalize(self, _remove, self._days, self._root)
        remove_orphans(Path(tempfile.gettempdir()), _PREFIX)

    def __len__(self) -> int:
        return sum(day.size for day in self._days.values())

    def disk_bytes(self) -> int:
        """The size of its databases' files."""
        return sum(f.stat().st_size for f in self._root.rglob("*") if f.is_file())

    def close(self) -> None:
        """Closes the databases and removes their directory (also when dropped)."""
        _remove(self._days, self._root)

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
                self._days[day] = _Day(self._root / day.isoformat())
            self._days[day].add(digests(of_day))

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
            self._days.pop(day).close()
            shutil.rmtree(self._root / day.isoformat(), ignore_errors=True)

    def held(self, event_ids: pa.Array | pa.ChunkedArray, since: date | None = None) -> pa.Array:
        """Those of ``event_ids`` the index holds on a day from ``since`` on (None: any
        day it keeps)."""
        days = [store for day, store in self._days.items() if since is None or day >= since]
        if not len(event_ids) or not days:
            return pa.array([], pa.string())
        keys = digests(event_ids)
        found = np.zeros(len(keys), dtype=bool)
        for store in days:
            open_ = np.flatnonzero(~found)  # an id found on one day is not looked up again
            if not len(open_):
                break
            found[open_] = store.holds([keys[i] for i in open_])
        kept = pc.filter(event_ids, pa.array(found))
        return kept.combine_chunks() if isinstance(kept, pa.ChunkedArray) else kept


def _remove(days: dict[date, _Day], root: Path) -> None:
    for store in days.values():
        store.close()
    days.clear()
    shutil.rmtree(root, ignore_errors=True)
