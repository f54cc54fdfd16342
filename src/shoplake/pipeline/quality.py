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
from shoplake.pipeline.gold import DerivedModel, _day_set, _days_table, read_near_days
from shoplake.pipeline.positions import (
    Positions,
    Ranges,
    in_ranges,
    lineage_span,
    positions_of,
    range_ends,
    read_ranges,
)
from shoplake.pipeline.silver import ONE_ROW_PER_EVENT
from shoplake.transport.base import TopicPartition

_LINEAGE = ["topic", "partition", "offset"]
_BRONZE = [*_LINEAGE, "event_type", "ingest_ts"]
_EVENT_TABLES = pa.table(
    {
        "event_type": pa.array(list(EVENT_TABLES), pa.string()),
        "table_name": pa.array([s.name for s in EVENT_TABLES.values()], pa.string()),
    }
)


class DataQualityModel(DerivedModel):
    """bronze + every silver table → gold.data_quality_report, by day of arrival."""

    uses_local_date = True

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        arrived = read_ranges(self.store, RAW_EVENTS, ranges, ["ingest_ts"])
        days = sorted(_day_set(arrived["ingest_ts"], self.timezone))
        consumed = positions_of(self.store.open(self.spec), tps) | range_ends(ranges)
        return self.compute(days, consumed), days

    def rebuild(self, days: list[date], tps: list[TopicPartition]) -> int:
        rows = self.compute(days, positions_of(self.store.open(self.spec), tps))
        self.decl.commit(self.store, rows, None, days)
        return int(rows.num_rows)

    def compute(self, days: list[date] | None, consumed: Positions) -> pa.Table:
        """Rows for ``days`` (None: every day) over the bronze records before ``consumed``."""
        bronze = read_near_days(self.store, RAW_EVENTS, days, _BRONZE, "ingest_date")
        bronze = bronze.filter(in_ranges(bronze, {tp: (0, end) for tp, end in consumed.items()}))
        if days is None:
            days = sorted(_day_set(bronze["ingest_ts"], self.timezone))
        return self.engine.table_over(
            self.sql,
            {
                "bronze": bronze,
                "outcomes": self._outcomes(lineage_span(bronze)),
                "event_tables": _EVENT_TABLES,
                "touched_days": _days_table(days),
            },
            {"now": datetime.now(UTC)},
        )

    def _outcomes(self, ranges: Ranges) -> pa.Table:
        """Where each record in ``ranges`` went: valid (and late or not), quarantined, duplicate."""
        if not ranges:
            return _OUTCOMES.empty_table()

        def read(spec: TableSpec, extra: list[str]) -> pa.Table:
            return read_ranges(self.store, spec, ranges, [*_LINEAGE, *extra])

        parts = [_outcome(read(s, ["is_late"]), "valid") for s in ONE_ROW_PER_EVENT]
        parts.append(_outcome(read(QUARANTINE, ["reason"]), "quarantined"))
        parts.append(_outcome(read(DUPLICATES, []), "duplicate"))
        return pa.concat_tables(parts)


_OUTCOMES = pa.schema(
    [
        pa.field("topic", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("outcome", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("is_late", pa.bool_()),
    ]
)


def _outcome(rows: pa.Table, outcome: str) -> pa.Table:
    """Lineage rows of one table as outcome rows (missing reason / is_late filled in)."""
    n = rows.num_rows
    return pa.table(
        {
            "topic": rows["topic"],
            "partition": rows["partition"],
            "offset": rows["offset"],
            "outcome": pa.array([outcome] * n, pa.string()),
            "reason": rows["reason"] if "reason" in rows.column_names else pa.nulls(n, pa.string()),
            "is_late": rows["is_late"]
            if "is_late" in rows.column_names
            else pa.array([False] * n, pa.bool_()),
        },
        schema=_OUTCOMES,
    )
