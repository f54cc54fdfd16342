"""The embedded transport: a durable, partitioned log in one SQLite file (WAL mode).

Like Kafka, the log stores *record batches*: each append writes, per partition, one
row holding the batch's keys and values as a compressed Arrow IPC payload, with its
base offset and record count. Appends run in one IMMEDIATE transaction with
``synchronous=FULL``: when append() returns, the batch is fsync'd. Reads decode whole
batches straight into Arrow. Several processes may append and read at once (SQLite
serialises the writers).
"""

from __future__ import annotations

import errno
import math
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pyarrow as pa

from shoplake.errors import ConfigError, DamagedLog, TransportError
from shoplake.settings import Settings
from shoplake.transport.base import (
    RECORD_SCHEMA,
    OutgoingMessage,
    ReadBatch,
    TopicPartition,
    with_all_events_copy,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS partitions (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL DEFAULT 0,
    UNIQUE (topic, partition)
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    base_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_by_last ON batches (pid, last_offset);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    grp TEXT NOT NULL,
    pid INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, pid)
);
"""

_BATCH_SCHEMA = pa.schema([pa.field("key", pa.binary()), pa.field("value", pa.binary())])
# zstd: a 500-event batch in 27 KB (lz4: 47, plain: 193) for 0.44 ms (lz4: 0.32; measured
# 2026-12-07)
_IPC = pa.ipc.IpcWriteOptions(compression="zstd", use_threads=False)
# zstd costs ~0.2 ms per batch whatever its size: ten times the encoding of one event, for
# no gain on a few events (the gateway's single-event requests). Larger batches shrink 5x.
_COMPRESS_FROM_BYTES = 8192
_ROWS_A_STATEMENT = 1000  # 5,000 parameters: SQLite allows 32,766


# Each partition's records as an IPC stream of their own, byte for byte what
# pa.ipc.new_stream writes for them alone (tested), made with fewer calls into Arrow: each
# lets go of the GIL, and the appender waits for the gateway's event loop to give it back.
# A small slice is the schema message, the batch message and the end marker; the larger
# ones (compressed) share one stream writer, cut after each batch message.
_SCHEMA_MESSAGE = _BATCH_SCHEMA.serialize().to_pybytes()
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def _encode(slices: list[tuple[pa.RecordBatch, int]]) -> list[bytes]:
    """Each (batch, its values' bytes) of ``slices`` as an IPC stream of its own."""
    streams: list[bytes] = []
    compressed: list[int] = []  # indexes of the slices written below
    for batch, size in slices:
        if size < _COMPRESS_FROM_BYTES:
            streams.append(b"".join((_SCHEMA_MESSAGE, batch.serialize(), _END_OF_STREAM)))
        else:
            compressed.append(len(streams))
            streams.append(b"")
    if compressed:
        sink = pa.BufferOutputStream()
        ends = []
        with pa.ipc.new_stream(sink, _BATCH_SCHEMA, options=_IPC) as writer:
            for i in compressed:
                writer.write_batch(slices[i][0])
                ends.append(sink.tell())
        written = sink.getvalue()  # the schema message (written with the first batch) first
        for i, start, end in zip(compressed, [len(_SCHEMA_MESSAGE), *ends], ends, strict=False):
            streams[i] = b"".join((_SCHEMA_MESSAGE, written[start:end], _END_OF_STREAM))
    return streams


def _decode(data: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()


# SQLite's primary result codes for a damaged file and a full disk
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26


def _translate(path: Path, doing: str, exc: Exception) -> TransportError:
    """A SQLite (or batch decoding) error as a shoplake error that names the file and
    says what to do: a damaged file is terminal (retrying cannot help), a full disk is
    transient (the caller retries once space is freed; nothing was acknowledged)."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    damaged = code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or isinstance(exc, pa.ArrowException)
    if damaged or "malformed" in text or "not a database" in text:
        return DamagedLog(
            f"the embedded log {path} is damaged ({text}): restore it from a backup, or "
            "move it aside to start an empty log (records not yet in bronze are then lost)"
        )
    if code == _SQLITE_FULL or getattr(exc, "errno", None) == errno.ENOSPC:
        return TransportError(
            f"{doing}: no space left on the device of {path}: free some space ({text})"
        )
    return TransportError(f"{doing} ({path}) failed: {text}")


class EmbeddedLog:
    """Transport adapter over one SQLite file."""

    def __init__(
        self, conn: sqlite3.Connection, default_partitions: int, path: Path = Path("log.sqlite")
    ) -> None:
        self._conn = conn
        self._path = path
        self._lock = threading.Lock()
        self._default_partitions = default_partitions
        self._round_robin = 0
        self._all_events: str | None = None  # written, never read by bronze
        self._dead_letter = "dead-letter"

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
            err = _translate(path, "opening the embedded log", exc)
            if isinstance(err, DamagedLog):
                raise err from exc
            raise ConfigError(f"cannot open the log at {path}: {exc}") from exc
        log = cls(conn, settings.transport.partitions, path)
        log._all_events = settings.topics.all_events
        log._dead_letter = settings.topics.dead_letter
        log.ensure_topics(settings.topics.written(), settings.transport.partitions)
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
        with self._lock, self._sqlite("listing the log's partitions"):
            rows = self._conn.execute(
                "SELECT topic, partition FROM partitions ORDER BY topic, partition"
            ).fetchall()
        return [TopicPartition(t, p) for t, p in rows if t != self._all_events]

    def assigned(self, group: str) -> list[TopicPartition]:
        return self.partitions()  # one process owns the local log

    # -- writing --------------------------------------------------------------
    def append(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        messages = with_all_events_copy(messages, self._all_events, self._dead_letter)
        now_ms = time.time_ns() // 1_000_000
        with self._lock, self._txn():
            parts = self._partition_ids()
            missing = sorted({m.topic for m in messages} - parts.keys())
            if missing:
                self._ensure_topics(missing, self._default_partitions)
                parts = self._partition_ids()
            pids = {topic: [pid for pid, _ in plist] for topic, plist in parts.items()}
            next_offsets = {pid: off for plist in parts.values() for pid, off in plist}
            grouped: dict[int, tuple[list[bytes | None], list[bytes]]] = {}
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
                group = grouped.get(pid)
                if group is None:  # (not setdefault: its default is built for every record)
                    group = grouped[pid] = ([], [])
                group[0].append(key_bytes)
                group[1].append(value)
            self._round_robin = rr
            # one batch for the whole append, in partition order, sliced per partition
            batch = pa.record_batch(
                [
                    pa.array([k for keys, _ in grouped.values() for k in keys], pa.binary()),
                    pa.array([v for _, values in grouped.values() for v in values], pa.binary()),
                ],
                schema=_BATCH_SCHEMA,
            )
            slices, start = [], 0
            for _, values in grouped.values():
                slices.append((batch.slice(start, len(values)), sum(map(len, values))))
                start += len(values)
            rows = []
            for (pid, (_, values)), blob in zip(grouped.items(), _encode(slices), strict=True):
                base = next_offsets[pid]
                rows.append((pid, base, base + len(values) - 1, now_ms, blob))
                next_offsets[pid] = base + len(values)
            # A statement for many rows: executemany steps SQLite once a row, and each
            # step lets go of the GIL, which a busy event loop may keep for its switch
            # interval (5 ms). An append of 988 records beside a busy Python thread took
            # 114 ms so, 184 with executemany (and zstd on Arrow's thread pool).
            moved = [(pid, next_offsets[pid]) for pid in grouped]
            for first in range(0, len(rows), _ROWS_A_STATEMENT):
                chunk = rows[first : first + _ROWS_A_STATEMENT]
                self._conn.execute(
                    "INSERT INTO batches (pid, base_offset, last_offset, ts, data) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)),
                    [value for row in chunk for value in row],
                )
                ids = moved[first : first + _ROWS_A_STATEMENT]
                self._conn.execute(
                    "WITH moved(id, next_offset) AS (VALUES "
                    + ", ".join(["(?, ?)"] * len(ids))
                    + ") UPDATE partitions SET next_offset = moved.next_offset "
                    "FROM moved WHERE partitions.id = moved.id",
                    [value for pair in ids for value in pair],
                )

    # -- reading --------------------------------------------------------------
    def read(self, start: Mapping[TopicPartition, int], max_records: int) -> ReadBatch:
        """A fair share of ``max_records`` per partition first, then what is left of the
        budget to the partitions that had more."""
        pieces: list[pa.Table] = []
        with self._lock:
            with self._sqlite("reading the embedded log"):
                pid_map = self._pid_map()
            cursor = {tp: off for tp, off in start.items() if tp in pid_map}
            with self._sqlite("reading the embedded log"):
                fair = max(1, math.ceil(max_records / max(1, len(cursor))))
                got = {tp: self._read_into(pieces, tp, pid_map[tp], cursor, fair) for tp in cursor}
                budget = max_records - sum(got.values())
                for tp in [tp for tp, n in got.items() if n == fair]:
                    if budget <= 0:
                        break
                    budget -= self._read_into(pieces, tp, pid_map[tp], cursor, budget)
        moved = {tp: off for tp, off in cursor.items() if off != start[tp]}
        return ReadBatch(pa.concat_tables(pieces) if pieces else RECORD_SCHEMA.empty_table(), moved)

    def _read_into(
        self,
        pieces: list[pa.Table],
        tp: TopicPartition,
        pid: int,
        cursor: dict[TopicPartition, int],
        limit: int,
    ) -> int:
        """Append up to ``limit`` records of one partition from ``cursor[tp]`` to ``pieces``."""
        offset = cursor[tp]
        first: int | None = None  # truncation may have removed what precedes the cursor
        taken = 0
        keys: list[pa.Array] = []
        values: list[pa.Array] = []
        stamps: list[pa.Array] = []
        rows = self._conn.execute(
            "SELECT base_offset, last_offset, ts, data FROM batches "
            "WHERE pid = ? AND last_offset >= ? ORDER BY last_offset",
            (pid, offset),
        )
        for base, last, ts, data in rows:
            skip = max(0, offset - base)
            n = min(last - base + 1 - skip, limit - taken)
            batch = _decode(data).slice(skip, n)
            if first is None:
                first = base + skip
            keys.append(batch.column(0))
            values.append(batch.column(1))
            stamps.append(pa.repeat(pa.scalar(ts, pa.int64()), n))
            taken += n
            offset = base + skip + n
            if taken >= limit:
                break
        rows.close()
        if first is not None:
            pieces.append(
                pa.table(
                    [
                        pa.repeat(pa.scalar(tp.topic, pa.string()), taken),
                        pa.repeat(pa.scalar(tp.partition, pa.int32()), taken),
                        pa.array(range(first, first + taken), pa.int64()),
                        pa.chunked_array(keys, pa.binary()),
                        pa.chunked_array(values, pa.binary()),
                        pa.chunked_array(stamps, pa.int64()),
                    ],
                    schema=RECORD_SCHEMA,
                )
            )
        cursor[tp] = offset
        return taken

    def end_offsets(self) -> dict[TopicPartition, int]:
        with self._lock, self._sqlite("reading the log's end offsets"):
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
        with self._lock, self._sqlite("reading committed offsets"):
            rows = self._conn.execute(
                "SELECT p.topic, p.partition, c.next_offset FROM consumer_offsets c "
                "JOIN partitions p ON p.id = c.pid WHERE c.grp = ?",
                (group,),
            ).fetchall()
        return {TopicPartition(t, p): n for t, p, n in rows}

    def truncate_committed(self) -> int:
        """Delete the record batches every consumer group has read past; returns how many
        records went. A batch goes only once all of it is committed."""
        with self._lock, self._txn():
            groups = [g for (g,) in self._conn.execute("SELECT DISTINCT grp FROM consumer_offsets")]
            if not groups:
                return 0
            deleted = 0
            for (pid,) in self._conn.execute("SELECT id FROM partitions").fetchall():
                seen, upto = self._conn.execute(
                    "SELECT count(*), min(next_offset) FROM consumer_offsets WHERE pid = ?",
                    (pid,),
                ).fetchone()
                if seen < len(groups) or not upto:
                    continue  # a group has not read this partition: keep everything
                (count,) = self._conn.execute(
                    "SELECT coalesce(sum(last_offset - base_offset + 1), 0) FROM batches "
                    "WHERE pid = ? AND last_offset < ?",
                    (pid, upto),
                ).fetchone()
                self._conn.execute(
                    "DELETE FROM batches WHERE pid = ? AND last_offset < ?", (pid, upto)
                )
                deleted += count
            return deleted

    def record_count(self) -> int:
        with self._lock, self._sqlite("counting the log's records"):
            (n,) = self._conn.execute(
                "SELECT coalesce(sum(last_offset - base_offset + 1), 0) FROM batches"
            ).fetchone()
            return int(n)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- helpers --------------------------------------------------------------
    def _txn(self) -> _Transaction:
        return _Transaction(self._conn, self._path)

    @contextmanager
    def _sqlite(self, doing: str) -> Iterator[None]:
        """SQLite and batch decoding errors become shoplake errors naming the file."""
        try:
            yield
        except (sqlite3.Error, pa.ArrowException) as exc:
            raise _translate(self._path, doing, exc) from exc


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error; SQLite errors become TransportError
    (a damaged file: DamagedLog)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(self._path, "starting a transaction on the log", exc) from exc

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error as err:
                self._rollback()
                raise _translate(self._path, "committing to the embedded log", err) from err
        self._rollback()
        if isinstance(exc, sqlite3.Error | pa.ArrowException):
            raise _translate(self._path, "writing the embedded log", exc) from exc

    def _rollback(self) -> None:
        # SQLite may have rolled back already (a full disk or an I/O error can do that)
        with suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")
