"""gold.data_quality_report: what became of every record that arrived, per day and table.

Each bronze record ends in exactly one place — its silver table, silver.quarantine or
silver.duplicates — so the report is computed from those tables by lineage, not from
counters, and a from-scratch recomputation gives the same numbers.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa

from shoplake.contract.tables import (
    DUPLICATES,
    EVENT_TABLES,
    QUARANTINE,
    RAW_EVENTS,
    TableSpec,
)
from shoplake.pipeline.gold import DerivedModel, _day_set, _days_table, _near
from shoplake.pipeline.positions import (
    Positions,
    Ranges,
    positions_of,
    range_ends,
    topic_spans,
)
from shoplake.pipeline.silver import ONE_ROW_PER_EVENT
from shoplake.tables.base import AllOf, Compare, IsIn, TableScan
from shoplake.transport.base import TopicPartition

_LINEAGE = ["topic", "partition", "offset"]
_BRONZE = [*_LINEAGE, "event_type", "ingest_ts"]
_EVENT_TABLES = pa.table(
    {
        "event_type": pa.array(list(EVENT_TABLES), pa.string()),
        "table_name": pa.array([s.name for s in EVENT_TABLES.values()], pa.string()),
    }
)
# The lineage span, per partition, of the bronze records the report is over: where the
# silver tables are read for their outcomes.
_CONSUMED_SPAN = """
SELECT b.topic, b."partition", MIN(b."offset") AS lo, MAX(b."offset") + 1 AS hi
FROM bronze b
JOIN consumed c ON c.topic = b.topic AND c."partition" = b."partition"
WHERE b."offset" < c.end_offset
GROUP BY b.topic, b."partition"
"""


class DataQualityModel(DerivedModel):
    """bronze + every silver table → gold.data_quality_report, by day of arrival."""

    uses_local_date = True

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        arrived = self.lineage(RAW_EVENTS, ranges, ["ingest_ts"])
        days = sorted(_day_set(arrived["ingest_ts"], self.timezone))
        consumed = positions_of(self.store.open(self.spec), tps) | range_ends(ranges)
        return self.compute(days, consumed), days

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
        rows = self.compute(days, positions_of(self.store.open(self.spec), tps))
        self.decl.commit(self.store, rows, None, days)
        return int(rows.num_rows)

    def compute(self, days: list[date] | None, consumed: Positions) -> pa.Table:
        """Rows for ``days`` (None: every day) over the bronze records before ``consumed``.

        The engine joins bronze with the outcomes; only the span of the records and the
        days come back to this process."""
        near = None if days is None else IsIn("ingest_date", _near(days))
        bronze = self.input_rows(RAW_EVENTS, _BRONZE, near)
        ends = pa.table(
            {
                "topic": pa.array([tp.topic for tp in consumed], pa.string()),
                "partition": pa.array([tp.partition for tp in consumed], pa.int32()),
                "end_offset": pa.array(list(consumed.values()), pa.int64()),
            }
        )
        spans = self.engine.table_over(_CONSUMED_SPAN, {"bronze": bronze, "consumed": ends})
        ranges = {
            TopicPartition(r["topic"], r["partition"]): (r["lo"], r["hi"])
            for r in spans.to_pylist()
        }
        if days is None:
            days = self.days_in({"bronze": (bronze, "ingest_ts")})
        valid = [part for s in ONE_ROW_PER_EVENT for part in self._lineage(s, ranges, "is_late")]
        return self.engine.table_over(
            self.sql,
            {
                "bronze": bronze,
                "consumed": ends,
                "valid": valid,
                "quarantined": self._lineage(QUARANTINE, ranges, "reason"),
                "duplicates": self._lineage(DUPLICATES, ranges),
                "event_tables": _EVENT_TABLES,
                "touched_days": _days_table(days),
            },
            {"now": datetime.now(UTC)},
        )

    def _lineage(self, spec: TableSpec, ranges: Ranges, *extra: str) -> list[pa.Table | TableScan]:
        """The rows of ``spec`` that may lie in ``ranges``, with their lineage and ``extra``
        columns, as scans per topic (the SQL matches the lineage exactly)."""
        columns = [*_LINEAGE, *extra]
        if not ranges:
            return [spec.schema.empty_table().select(columns)]
        if self.engine.capabilities.reads_tables:
            # One scan of the whole span: an engine plans a scan at a higher cost than it
            # reads the rows the join then drops.
            topics = sorted({tp.topic for tp in ranges})
            lo = min(start for start, _ in ranges.values())
            hi = max(end for _, end in ranges.values())
            where = AllOf(
                (IsIn("topic", topics), Compare("offset", ">=", lo), Compare("offset", "<", hi))
            )
            return [self.input_rows(spec, columns, where)]
        return [self.input_rows(spec, columns, where) for _, where in topic_spans(ranges)]
