"""gold.data_quality_report: what became of every record that arrived, per day and table.

Each bronze record ends in exactly one place — its silver table, silver.quarantine or
silver.duplicates — so the report is computed from those tables by lineage, not from
counters, and a from-scratch recomputation gives the same numbers.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime

import pyarrow as pa

from shoplake.contract.tables import (
    DATA_QUALITY_REPORT,
    DUPLICATES,
    EVENT_TABLES,
    QUARANTINE,
    RAW_EVENTS,
    TableSpec,
)
from shoplake.pipeline.gold import DerivedModel, _day_set, _days_table, _near
from shoplake.pipeline.positions import LINEAGE, Positions, Ranges, positions_of, topic_spans
from shoplake.pipeline.silver import ONE_ROW_PER_EVENT
from shoplake.tables.base import AllOf, Compare, IsIn, TableScan
from shoplake.transport.base import TopicPartition

_ARRIVAL = ("event_type", "ingest_ts")
_BRONZE = [*LINEAGE, *_ARRIVAL]
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
    """bronze + every silver table → gold.data_quality_report, by day of arrival.

    A step reports on the bronze records of its ranges only and adds that to the rows of
    their days: each record is in the ranges of exactly one step, committed with the
    rows, so the counts add up to what a recomputation of the whole day gives (``check``
    compares the two) and a step costs what it adds, not what the day holds."""

    uses_local_date = True

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        if self.engine.capabilities.reads_tables:  # the engine reads bronze itself
            arrived = self.lineage(RAW_EVENTS, ranges, ["ingest_ts"])
            bronze: list[pa.Table | TableScan] = self._lineage(RAW_EVENTS, ranges, *_ARRIVAL)
        else:
            arrived = self.lineage(RAW_EVENTS, ranges, _BRONZE)
            bronze = [arrived]
        days = sorted(_day_set(arrived["ingest_ts"], self.timezone))
        now = datetime.now(UTC)
        added = self._report(bronze, ranges, days, now)
        before = self.store.open(self.spec).scan(where=IsIn("partition_date", _dates(days)))
        return added_up(before, added, now), days

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
        everything = {tp: (0, end) for tp, end in consumed.items()}
        spans = self.engine.table_over(
            _CONSUMED_SPAN, {"bronze": bronze, "consumed": _consumed(everything)}
        )
        ranges = {
            TopicPartition(r["topic"], r["partition"]): (r["lo"], r["hi"])
            for r in spans.to_pylist()
        }
        if days is None:
            days = self.days_in({"bronze": (bronze, "ingest_ts")})
        return self._report([bronze], ranges, days, datetime.now(UTC), everything)

    def _report(
        self,
        bronze: list[pa.Table | TableScan],
        ranges: Ranges,
        days: list[date],
        now: datetime,
        consumed: Ranges | None = None,
    ) -> pa.Table:
        """The report over the ``bronze`` records in ``consumed`` (default ``ranges``),
        their outcomes read from silver in ``ranges``."""
        valid = [part for s in ONE_ROW_PER_EVENT for part in self._lineage(s, ranges, "is_late")]
        return self.engine.table_over(
            self.sql,
            {
                "bronze": bronze,
                "consumed": _consumed(ranges if consumed is None else consumed),
                "valid": valid,
                "quarantined": self._lineage(QUARANTINE, ranges, "reason"),
                "duplicates": self._lineage(DUPLICATES, ranges),
                "event_tables": _EVENT_TABLES,
                "touched_days": _days_table(days),
            },
            {"now": now},
        )

    def _lineage(self, spec: TableSpec, ranges: Ranges, *extra: str) -> list[pa.Table | TableScan]:
        """The rows of ``spec`` that may lie in ``ranges``, with their lineage and ``extra``
        columns, as scans per topic (the SQL matches the lineage exactly)."""
        columns = [*LINEAGE, *extra]
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
        held = self.recent.held(spec, ranges, columns)  # the main loop's commits
        if held is not None:
            return [held]
        return [self.input_rows(spec, columns, where) for _, where in topic_spans(ranges)]


_COUNTS = ("rows_in", "rows_valid", "rows_quarantined", "duplicates_dropped", "late_events")


def added_up(before: pa.Table, added: pa.Table, now: datetime) -> pa.Table:
    """The report rows ``before`` with a later step's rows ``added`` for the same days
    added in, every row as of ``now``: counts and quarantine reasons summed, freshness
    from the newest arrival of either. A few rows per day: summed here, not by the engine."""
    rows = {(r["partition_date"], r["table_name"]): r for r in before.to_pylist()}
    for row in rows.values():  # the newest arrival of before is older by the time since
        row["freshness_s"] += (now - row["processed_ts"]).total_seconds()
        row["processed_ts"] = now
    for new in added.to_pylist():
        old = rows.setdefault((new["partition_date"], new["table_name"]), new)
        if old is new:
            continue
        for column in _COUNTS:
            old[column] += new[column]
        old["quarantine_reasons"] = _summed_reasons(
            old["quarantine_reasons"], new["quarantine_reasons"]
        )
        old["freshness_s"] = min(old["freshness_s"], new["freshness_s"])
    return pa.Table.from_pylist(list(rows.values()), schema=DATA_QUALITY_REPORT.schema)


def _summed_reasons(a: str, b: str) -> str:
    """Two reports' ``{"reason": count}`` summed, in the SQL's form (reasons sorted)."""
    counts = Counter(json.loads(a)) + Counter(json.loads(b))
    return json.dumps(dict(sorted(counts.items())))


def _consumed(ranges: Ranges) -> pa.Table:
    return pa.table(
        {
            "topic": pa.array([tp.topic for tp in ranges], pa.string()),
            "partition": pa.array([tp.partition for tp in ranges], pa.int32()),
            "start_offset": pa.array([start for start, _ in ranges.values()], pa.int64()),
            "end_offset": pa.array([end for _, end in ranges.values()], pa.int64()),
        }
    )


def _dates(days: list[date]) -> pa.Array:
    return pa.array(days, pa.date32())
