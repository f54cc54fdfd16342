"""Ingest: transport → bronze.raw_events, exactly once.

Each bronze commit carries, in the same Delta commit, the transport position after
the last record it holds for every partition it covers. On start (and after a
conflict) the worker reads those positions back from bronze and continues there, so
a crash at any point neither loses nor doubles a record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import pyarrow as pa

from shoplake.contract.events import EVENT_TYPES
from shoplake.contract.tables import RAW_EVENTS
from shoplake.engines.base import Engine
from shoplake.errors import CommitConflict
from shoplake.pipeline.positions import (
    Positions,
    RecentCommits,
    positions_of,
    range_starts,
    to_app_ids,
)
from shoplake.tables.base import TableStore
from shoplake.transport.base import RECORD_SCHEMA, TopicPartition, Transport

log = logging.getLogger(__name__)

_KNOWN = ", ".join(f"'{t}'" for t in EVENT_TYPES)

# event_type is best effort: a known type read from the JSON, else 'unknown' (it is a
# partition column, so a poison payload must not choose the directory name).
_BRONZE_SQL = f"""
WITH safe AS (  -- invalid JSON becomes 'null' before any JSON function sees it
    SELECT *, CASE WHEN json_valid(raw_value) THEN raw_value ELSE 'null' END AS doc
    FROM records
)
SELECT raw_key, raw_value, topic, "partition", "offset",
       make_timestamp(timestamp_ms * 1000) AS source_ts,
       $now AS ingest_ts,
       CASE WHEN json_extract_string(doc, '$.event_type') IN ({_KNOWN})
            THEN json_extract_string(doc, '$.event_type') ELSE 'unknown' END AS event_type,
       CAST($now AS DATE) AS ingest_date
FROM safe
"""


def _as_text(values: pa.Array) -> pa.Array:
    """Bytes → UTF-8 text; payloads that are not UTF-8 keep their bytes as \\x escapes."""
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array(
            [
                None if v is None else v.decode("utf-8", "backslashreplace")
                for v in values.to_pylist()
            ],
            pa.string(),
        )


class BronzeIngest:
    """Moves records from the transport into bronze.raw_events."""

    def __init__(
        self,
        transport: Transport,
        store: TableStore,
        group: str,
        *,
        engine: Engine,
        recent: RecentCommits | None = None,
    ) -> None:
        self.transport = transport
        self.store = store
        self.group = group
        self.engine = engine
        self.recent = recent  # told each bronze commit, for silver in the same process
        self._positions: Positions | None = None
        self._assigned: list[TopicPartition] = []
        store.ensure(RAW_EVENTS)

    def positions(self) -> Positions:
        """Where bronze says reading continues for the partitions this worker is assigned
        (read from the table on start and on every new assignment, then tracked)."""
        assigned = self.transport.assigned(self.group)
        if self._positions is None or assigned != self._assigned:
            self._assigned = assigned
            self._positions = positions_of(self.store.open(RAW_EVENTS), assigned, self.group)
        return self._positions

    def lag(self) -> int:
        """Records in the transport that bronze does not hold yet (assigned partitions)."""
        ends = self.transport.end_offsets()
        pos = self.positions()
        return sum(max(0, ends.get(tp, 0) - start) for tp, start in pos.items())

    def step(self, max_records: int, max_wait_s: float = 0.0, poll_s: float = 0.05) -> int:
        """Read up to ``max_records``, waiting up to ``max_wait_s`` to fill the batch, then
        commit them to bronze. Returns the number of records committed."""
        start = dict(self.positions())
        positions = dict(start)
        chunks: list[pa.Table] = []
        got = 0
        deadline = time.monotonic() + max_wait_s
        while got < max_records:
            batch = self.transport.read(positions, max_records - got)
            positions.update(batch.positions)
            if batch.records.num_rows:
                chunks.append(batch.records)
                got += batch.records.num_rows
                continue
            if not chunks or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
        advanced = {tp: off for tp, off in positions.items() if off != start[tp]}
        if not advanced:
            return 0
        # Positions may move with no record (Kafka's markers of aborted appends): they are
        # committed all the same, in an empty commit, so lag reaches 0.
        records = pa.concat_tables(chunks) if chunks else RECORD_SCHEMA.empty_table()
        rows = self._to_bronze(records)
        made = {tp: (start[tp], advanced[tp]) for tp in advanced}
        try:
            self.store.append(
                RAW_EVENTS,
                rows,
                to_app_ids(advanced, self.group),
                expected=to_app_ids(range_starts(made), self.group),
            )
        except CommitConflict:
            # Another worker committed these partitions first: trust bronze, not memory.
            log.warning("bronze commit conflict; reloading positions from the table")
            self._positions = None
            return 0
        assert self._positions is not None
        self._positions.update(advanced)
        if self.recent is not None:
            self.recent.record(RAW_EVENTS, made, rows)
        self.transport.commit(self.group, advanced)
        return int(records.num_rows)

    def _to_bronze(self, records: pa.Table) -> pa.Table:
        text = records.set_column(
            records.schema.get_field_index("value"), "raw_value", _as_text(records["value"])
        )
        text = text.set_column(
            text.schema.get_field_index("key"), "raw_key", _as_text(records["key"])
        )
        return self.engine.table_over(_BRONZE_SQL, {"records": text}, {"now": datetime.now(UTC)})


def bronze_lag(
    store: TableStore, ends: Mapping[TopicPartition, int], group: str
) -> dict[TopicPartition, int]:
    """Per partition, the records the transport holds (``ends``) beyond the positions bronze
    has recorded for ``group``: what has been read, not Kafka's committed offsets."""
    if not store.exists(RAW_EVENTS):
        return dict(ends)
    read = positions_of(store.open(RAW_EVENTS), list(ends), group)
    return {tp: max(0, end - read[tp]) for tp, end in ends.items()}
