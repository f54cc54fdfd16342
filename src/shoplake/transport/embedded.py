"""The embedded transport: a durable, partitioned log in one SQLite file (WAL mode).

Each record's rowid packs (partition id, offset) as ``pid << 40 | offset``, so a
partition is one contiguous rowid range and a read is a primary-key range scan.
Appends run in one IMMEDIATE transaction with ``synchronous=FULL``: when append()
returns, the batch is fsync'd. Several processes may append and read at once
(SQLite serialises the writers).
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from shoplake.errors import ConfigError, TransportError
from shoplake.settings import Settings
from shoplake.transport.base import RECORD_SCHEMA, OutgoingMessage, TopicPartition

_SHIFT = 40  # up to 2**40 offsets per partition
_MASK = (1 << _SHIFT) - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS partitions (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL DEFAULT 0,
    UNIQUE (topic, partition)
);
CREATE TABLE IF NOT EXISTS records (
    pos INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    grp TEXT NOT NULL,
    pid INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, pid)
);
"""


def partition_for(key: str | None, partitions: int, fallback: int) -> int:
    """Stable key → partition (crc32); keyless records spread round-robin."""
    if key is None:
        return fallback % partitions
    return zlib.crc32(key.encode()) % partitions


class EmbeddedLog:
    """Transport adapter over one SQLite file."""

    def __init__(self, conn: sqlite3.Connection, default_partitions: int) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._default_partitions = default_partitions
        self._round_robin = 0

    @classmethod
    def open(cls, path: Path, settings: Settings, *, create: bool = True) -> EmbeddedLog:
        if not path.exists() and not create:
            raise TransportError(
                f"no embedded log at {path}: nothing has been generated or ingested yet"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except OSError as exc:
            raise ConfigError(f"cannot use {path.parent} for the log: {exc.strerror}") from exc
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the log at {path}: {exc}") from exc
        log = cls(conn, settings.transport.partitions)
        log.ensure_topics(settings.topics.all(), settings.transport.partitions)
        return log

    # -- topics ---------------------------------------------------------------
    def ensure_topics(self, topics: Sequence[str], partitions: int) -> None:
        """Create missing topics; an existing topic keeps its partition count (as in Kafka)."""
        with self._lock, self._txn():
            self._ensure_topics(topics, partitions)

    def _ensure_topics(self, topics: Sequence[str], partitions: int) -> None:
        existing = {row[0] for row in self._conn.execute("SELECT DISTINCT topic FROM partitions")}
        for topic in topics:
            if topic not in existing:
                self._conn.executemany(
                    "INSERT INTO partitions (topic, partition) VALUES (?, ?)",
                    [(topic, p) for p in range(partitions)],
                )

    def _partition_ids(self) -> dict[str, list[tuple[int, int]]]:
        """topic → [(pid, next_offset)] in partition order."""
        out: dict[str, list[tuple[int, int]]] = {}
        for pid, topic, _, next_offset in self._conn.execute(
            "SELECT id, topic, partition, next_offset FROM partitions ORDER BY topic, partition"
        ):
            out.setdefault(topic, []).append((pid, next_offset))
        return out

    def _pid_map(self) -> dict[TopicPartition, int]:
        return {
            TopicPartition(t, p): pid
            for pid, t, p in self._conn.execute("SELECT id, topic, partition FROM partitions")
        }

    def partitions(self) -> list[TopicPartition]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT topic, partition FROM partitions ORDER BY topic, partition"
            ).fetchall()
        return [TopicPartition(t, p) for t, p in rows]

    # -- writing --------------------------------------------------------------
    def append(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        now_ms = time.time_ns() // 1_000_000
        with self._lock, self._txn():
            new_topics = {m.topic for m in messages}
            self._ensure_topics(sorted(new_topics), self._default_partitions)
            parts = self._partition_ids()
            next_offsets = {pid: off for plist in parts.values() for pid, off in plist}
            pids = {topic: [pid for pid, _ in plist] for topic, plist in parts.items()}
            rows = []
            rr = self._round_robin
            crc32 = zlib.crc32
            for topic, key, value in messages:
                plist = pids[topic]
                if key is None:
                    rr += 1
                    pid = plist[rr % len(plist)]
                    key_bytes = None
                else:
                    key_bytes = key.encode()
                    pid = plist[crc32(key_bytes) % len(plist)]
                offset = next_offsets[pid]
                next_offsets[pid] = offset + 1
                rows.append(((pid << _SHIFT) | offset, now_ms, key_bytes, value))
            self._round_robin = rr
            self._conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
            self._conn.executemany(
                "UPDATE partitions SET next_offset = ? WHERE id = ?",
                [(off, pid) for pid, off in next_offsets.items()],
            )

    # -- reading --------------------------------------------------------------
    def read(self, start: Mapping[TopicPartition, int], max_records: int) -> pa.Table:
        """A fair share of ``max_records`` per partition first, then what is left of the
        budget to the partitions that had more."""
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        with self._lock:
            pid_map = self._pid_map()
            cursor = {tp: off for tp, off in start.items() if tp in pid_map}
            budget = max_records
            try:
                fair = max(1, math.ceil(max_records / max(1, len(cursor))))
                full = [
                    tp
                    for tp in cursor
                    if self._read_into(columns, tp, pid_map[tp], cursor, fair) == fair
                ]
                budget -= len(columns[0])
                for tp in full:
                    if budget <= 0:
                        break
                    budget -= self._read_into(columns, tp, pid_map[tp], cursor, budget)
            except sqlite3.Error as exc:
                raise TransportError(f"reading the embedded log failed: {exc}") from exc
        topics, parts, offsets, keys, values, stamps = columns
        return pa.table(
            [
                pa.array(topics, pa.string()),
                pa.array(parts, pa.int32()),
                pa.array(offsets, pa.int64()),
                pa.array(keys, pa.binary()),
                pa.array(values, pa.binary()),
                pa.array(stamps, pa.int64()),
            ],
            schema=RECORD_SCHEMA,
        )

    def _read_into(
        self,
        columns: tuple[list[Any], ...],
        tp: TopicPartition,
        pid: int,
        cursor: dict[TopicPartition, int],
        limit: int,
    ) -> int:
        rows = self._conn.execute(
            "SELECT pos, ts, key, value FROM records "
            "WHERE pos >= ? AND pos < ? ORDER BY pos LIMIT ?",
            ((pid << _SHIFT) | cursor[tp], (pid + 1) << _SHIFT, limit),
        ).fetchall()
        if not rows:
            return 0
        pos_col, ts_col, key_col, value_col = zip(*rows, strict=True)
        topics, parts, offsets, keys, values, stamps = columns
        topics.extend([tp.topic] * len(rows))
        parts.extend([tp.partition] * len(rows))
        offsets.extend(p & _MASK for p in pos_col)
        stamps.extend(ts_col)
        keys.extend(key_col)
        values.extend(value_col)
        cursor[tp] = (pos_col[-1] & _MASK) + 1
        return len(rows)

    def end_offsets(self) -> dict[TopicPartition, int]:
        with self._lock:
            rows = self._conn.execute("SELECT topic, partition, next_offset FROM partitions")
            return {TopicPartition(t, p): n for t, p, n in rows}

    # -- consumer groups and retention ----------------------------------------
    def commit(self, group: str, positions: Mapping[TopicPartition, int]) -> None:
        with self._lock, self._txn():
            pid_map = self._pid_map()
            self._conn.executemany(
                "INSERT INTO consumer_offsets VALUES (?, ?, ?) "
                "ON CONFLICT (grp, pid) DO UPDATE SET next_offset = excluded.next_offset",
                [(group, pid_map[tp], off) for tp, off in positions.items() if tp in pid_map],
            )

    def committed(self, group: str) -> dict[TopicPartition, int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT p.topic, p.partition, c.next_offset FROM consumer_offsets c "
                "JOIN partitions p ON p.id = c.pid WHERE c.grp = ?",
                (group,),
            ).fetchall()
        return {TopicPartition(t, p): n for t, p, n in rows}

    def truncate_committed(self) -> int:
        """Delete records that every consumer group has committed; returns how many."""
        with self._lock, self._txn():
            groups = [g for (g,) in self._conn.execute("SELECT DISTINCT grp FROM consumer_offsets")]
            if not groups:
                return 0
            deleted = 0
            for (pid,) in self._conn.execute("SELECT id FROM partitions").fetchall():
                row = self._conn.execute(
                    "SELECT count(*), min(next_offset) FROM consumer_offsets WHERE pid = ?",
                    (pid,),
                ).fetchone()
                if row[0] < len(groups) or not row[1]:
                    continue  # a group has not read this partition: keep everything
                cur = self._conn.execute(
                    "DELETE FROM records WHERE pos >= ? AND pos < ?",
                    (pid << _SHIFT, (pid << _SHIFT) | row[1]),
                )
                deleted += cur.rowcount
            return deleted

    def record_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- helpers --------------------------------------------------------------
    def _txn(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error; SQLite errors become TransportError."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise TransportError(f"the embedded log is unavailable: {exc}") from exc

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error as err:
                self._conn.execute("ROLLBACK")
                raise TransportError(f"append to the embedded log failed: {err}") from err
        self._conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise TransportError(f"the embedded log failed: {exc}") from exc
