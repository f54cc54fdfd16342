"""Process: bronze.raw_events → silver (silver.order_payments is a model: see gold).

Each silver table records the bronze positions it has consumed. A step reads bronze
from the smallest of those positions, derives every table from that one batch, and
appends to each table only the rows past its own position, with the new position in
the same commit. A crash between two tables' commits is therefore harmless: the next
step catches the lagging table up. Each table deduplicates on event_id against itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, cast

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import (
    CART_EVENTS,
    DUPLICATES,
    EVENT_TABLES,
    ORDER_ITEMS,
    ORDERS,
    PAGE_VIEWS,
    PAYMENTS,
    PRODUCT_UPDATES,
    QUARANTINE,
    RAW_EVENTS,
    TS,
    USER_SESSIONS,
    TableSpec,
)
from shoplake.engines.base import Engine, RawEventRules, table_input
from shoplake.errors import ConfigError
from shoplake.pipeline.event_ids import EventIdIndex, ids_in_mib
from shoplake.pipeline.positions import (
    Positions,
    Ranges,
    RecentCommits,
    SharedReads,
    in_ranges,
    lineage_span,
    positions_of,
    range_starts,
    read_ranges,
    to_app_ids,
)
from shoplake.pipeline.steptrace import step
from shoplake.tables.base import (
    ROWS_UNCHANGED,
    AllOf,
    Compare,
    TableHandle,
    TableStore,
    within,
)
from shoplake.transport.base import TopicPartition

if TYPE_CHECKING:
    from shoplake.engines.base import Input

# What silver.order_payments, and so gold.fct_sales_minute, is made of: a step commits
# them first (see SilverProcessor.step's ``after_orders``).
ORDER_TABLES: tuple[TableSpec, ...] = (ORDERS, PAYMENTS)
# Silver tables appended from bronze: the engine derives each from the batch.
SILVER_FROM_BRONZE: tuple[TableSpec, ...] = (
    QUARANTINE,
    PAGE_VIEWS,
    CART_EVENTS,
    ORDERS,
    ORDER_ITEMS,
    PAYMENTS,
    USER_SESSIONS,
    PRODUCT_UPDATES,
)
# Tables of one row per valid event: each event is in one of them or in DUPLICATES.
ONE_ROW_PER_EVENT = (PAGE_VIEWS, CART_EVENTS, ORDERS, PAYMENTS, USER_SESSIONS, PRODUCT_UPDATES)
# Every table the processor writes, each with its own positions.
SILVER_TABLES: tuple[TableSpec, ...] = (*SILVER_FROM_BRONZE, DUPLICATES)
_LINEAGE = ["topic", "partition", "offset"]
_LINEAGE_SCHEMA = pa.schema(
    [("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64())]
)


# A day kept past the horizon, so the events of yesterday that arrive around midnight do
# not make each batch read that day of the table back in (see EventIdIndex.slide_to).
_KEPT_DAY = timedelta(days=1)


@dataclass
class StepResult:
    rows_in: int = 0
    rows_written: int = 0
    duplicates_dropped: int = 0
    backlog: int = 0  # bronze records still pending after this step
    # When each order and payment of the batch reached the transport (epoch seconds): the
    # runner measures end-to-end latency from these once gold includes them.
    order_times: list[float] = field(default_factory=list)


class SilverProcessor:
    """bronze.raw_events → every silver table of events, order_items, quarantine and
    duplicates."""

    def __init__(
        self,
        store: TableStore,
        ingest_group: str,
        currencies: list[str],
        *,
        watermark_minutes: float = 10.0,
        dedupe_horizon_days: int = 7,
        dedupe_spill_mib: float | None = None,
        engine: Engine,
        recent: RecentCommits | None = None,
    ) -> None:
        self.store = store
        self.group = ingest_group
        self.recent = recent or RecentCommits()
        self.rules = RawEventRules(tuple(currencies), watermark_minutes)
        self.dedupe_horizon = timedelta(days=dedupe_horizon_days)
        self._spill_ids = None if dedupe_spill_mib is None else ids_in_mib(dedupe_spill_mib)
        if not engine.capabilities.validates_raw_events:
            raise ConfigError(
                f"silver's validation does not run on the {engine.name} engine yet: "
                "use SHOPLAKE_ENGINE__KIND=duckdb"
            )
        self.engine = engine
        # (position, newest valid event time before it) per partition, as of the last step
        self._high_water: dict[TopicPartition, tuple[int, datetime | None]] = {}
        self._held: dict[TableSpec, EventIdIndex] = {}  # per table, for dedupe
        for spec in SILVER_TABLES:
            store.ensure(spec)

    @property
    def dedupe_ids(self) -> int:
        """The event ids held for dedupe, over every table."""
        return sum(len(index) for index in self._held.values())

    @property
    def dedupe_ids_in_files(self) -> int:
        """Of them, those kept in files (``dedupe_spill_mib``) rather than on the heap."""
        return sum(index.in_files for index in self._held.values())

    def step(
        self,
        tps: list[TopicPartition],
        max_records: int,
        *,
        after_orders: Callable[[StepResult], None] | None = None,
    ) -> StepResult:
        """Process up to ``max_records`` new bronze rows of partitions ``tps``.

        ``after_orders(result so far)`` is called once ORDER_TABLES have committed the
        batch, before the other tables: what reads only them (gold.fct_sales_minute)
        need not wait for the page views."""
        if not self.store.exists(RAW_EVENTS):
            return StepResult()
        bronze = self.store.open(RAW_EVENTS)
        bronze_end = positions_of(bronze, tps, self.group)
        handles = {spec: self.store.open(spec) for spec in SILVER_TABLES}
        own = {spec: positions_of(handle, tps) for spec, handle in handles.items()}
        start = {tp: min(p[tp] for p in own.values()) for tp in tps}
        pending = {tp: (start[tp], bronze_end[tp]) for tp in tps}
        ranges = _bounded(pending, max_records)
        if not ranges:
            return StepResult()
        batch = self.recent.lineage_rows(
            self.store, RAW_EVENTS, ranges, ["raw_value", "event_type", "source_ts", *_LINEAGE]
        )
        backlog = _size(pending) - _size(ranges)
        result = StepResult(rows_in=batch.num_rows, backlog=backlog)
        orders = pc.is_in(batch["event_type"], pa.array(["purchase", "payment"]))
        stamps = pc.filter(batch["source_ts"], orders).cast(pa.int64())
        result.order_times = [us / 1e6 for us in stamps.to_pylist() if us is not None]
        wanted_by = {spec: _wanted(ranges, own[spec]) for spec in SILVER_TABLES}
        now = datetime.now(UTC)
        high_water = self._high_water_before(ranges)
        with step("silver parse"):
            parsed = self.engine.parse_raw_events(
                batch.select(["raw_value", *_LINEAGE]),
                high_water,
                self.rules,
                [spec.name for spec in SILVER_FROM_BRONZE if wanted_by[spec]],
                now,
            )
        written: dict[TableSpec, pa.Table] = {}
        fresh = {
            spec: _first_per_key(_past(parsed.rows[spec.name], own[spec]), spec.key)
            for spec in SILVER_FROM_BRONZE
            if wanted_by[spec]
        }
        with step("silver dedupe"):
            known = self._known_ids(fresh, handles)

        def append(spec: TableSpec, rows: pa.Table) -> None:
            wanted = wanted_by[spec]
            if spec in known:
                keep = pc.invert(pc.is_in(rows["event_id"], value_set=known[spec]))
                rows = rows.filter(keep)
            made = {tp: (own[spec][tp], end) for tp, end in wanted.items()}
            version = self.store.append(
                spec, rows, to_app_ids(wanted), expected=to_app_ids(range_starts(made))
            )
            if "event_id" in spec.key:
                self._extend_held(spec, rows, version)
            self.recent.record(spec, made, rows)
            if spec in ONE_ROW_PER_EVENT:
                written[spec] = rows.select(_LINEAGE).cast(_LINEAGE_SCHEMA)
            result.rows_written += rows.num_rows

        first = [spec for spec in ORDER_TABLES if spec in fresh]
        if first:
            with step("silver append orders"):
                for spec in first:
                    append(spec, fresh[spec])
            if after_orders is not None:
                after_orders(result)
        with step("silver append"):
            for spec, rows in fresh.items():
                if spec not in ORDER_TABLES:
                    append(spec, rows)
        wanted = wanted_by[DUPLICATES]
        if wanted:
            # Tables that were in step with silver.duplicates took this whole batch just
            # now: what they hold of it is what they were given (no read back needed).
            in_step = all(own[t] == own[DUPLICATES] for t in ONE_ROW_PER_EVENT)
            held = pa.concat_tables(written.values()) if in_step and written else None
            with step("silver duplicates"):
                dropped = self._duplicates(_past(parsed.valid, own[DUPLICATES]), held)
                dropped = dropped.append_column(
                    "detected_ts", pa.array([now] * dropped.num_rows, TS)
                )
                made = {tp: (own[DUPLICATES][tp], end) for tp, end in wanted.items()}
                fenced = to_app_ids(range_starts(made))
                self.store.append(DUPLICATES, dropped, to_app_ids(wanted), expected=fenced)
            self.recent.record(DUPLICATES, made, dropped)
            result.duplicates_dropped += dropped.num_rows
        self._remember_high_water(ranges, high_water, parsed.high_water)
        return result

    def pending(self, tps: list[TopicPartition]) -> int:
        """Bronze records of ``tps`` that some silver table has not consumed."""
        bronze_end = positions_of(self.store.open(RAW_EVENTS), tps, self.group)
        own = [positions_of(self.store.open(spec), tps) for spec in SILVER_TABLES]
        return sum(max(0, bronze_end[tp] - min(p[tp] for p in own)) for tp in tps)

    def _known_ids(
        self, fresh: dict[TableSpec, pa.Table], handles: dict[TableSpec, TableHandle]
    ) -> dict[TableSpec, pa.Array]:
        """Per table keyed by event_id: the ids of its ``fresh`` rows it already holds
        (snapshot ``handles``) within the horizon; tables with none to check are left
        out."""
        since = {
            spec: pc.min(rows["event_date"]).as_py() - self.dedupe_horizon
            for spec, rows in fresh.items()
            if "event_id" in spec.key and rows.num_rows
        }
        if not self.engine.capabilities.reads_tables:
            return {
                spec: self._held_of(spec, handles[spec], day, fresh[spec]["event_id"])
                for spec, day in since.items()
            }
        if not since:
            return {}
        # An engine that reads the tables looks all of them up in one query: only the ids
        # found come back to this process.
        specs = list(since)
        inputs: dict[str, Input] = {}
        for i, spec in enumerate(specs):
            where = Compare("event_date", ">=", since[spec])
            inputs[f"held_{i}"] = handles[spec].described_scan(["event_id"], where)
            inputs[f"fresh_{i}"] = fresh[spec].select(["event_id"])
        found = self.engine.table_over(
            " UNION ALL ".join(
                f"SELECT {i} AS i, event_id FROM held_{i} "
                f"WHERE event_id IN (SELECT event_id FROM fresh_{i})"
                for i in range(len(specs))
            ),
            inputs,
        )
        return {
            spec: pc.filter(found["event_id"], pc.equal(found["i"], i)).combine_chunks()
            for i, spec in enumerate(specs)
        }

    def _held_of(
        self, spec: TableSpec, handle: TableHandle, since: date, ids: pa.Array
    ) -> pa.Array:
        """Those of ``ids`` that ``spec`` holds from ``since`` on, looked up in the index
        kept from the last step when the table's rows are still those that step left
        (later commits only compacted it), else in one built from the table. An index
        that starts after ``since`` reads only the days it lacks."""
        index = self._held.get(spec)
        if index is not None and self._rows_unchanged(spec, index.version, handle.version):
            index.version = handle.version  # at most compacted or vacuumed since
        if index is None or index.version != handle.version:
            held = handle.scan(["event_id", "event_date"], Compare("event_date", ">=", since))
            index = EventIdIndex(handle.version, since, self._spill_ids)
            index.add(held["event_id"], held["event_date"])
            self._held[spec] = index
        elif since < index.since:  # an event from an earlier day: only those days are read
            older = handle.scan(
                ["event_id", "event_date"], within("event_date", (since, index.since))
            )
            index.reach_back(since, older["event_id"], older["event_date"])
        else:
            index.slide_to(since, _KEPT_DAY)
        return index.held(ids, since)  # not the days it keeps past the horizon

    def _rows_unchanged(self, spec: TableSpec, version: int, now: int) -> bool:
        """Whether every commit of ``spec`` after ``version`` up to ``now`` left its rows
        as they were (table upkeep), so an index of its ids at ``version`` still holds."""
        if now <= version:
            return now == version  # no commit since: nothing to read
        # one commit more: the caller's own may have followed them
        operations = {c.version: c.operation for c in self.store.history(spec, now - version + 1)}
        return all(operations.get(v) in ROWS_UNCHANGED for v in range(version + 1, now + 1))

    def _extend_held(self, spec: TableSpec, appended: pa.Table, version: int) -> None:
        """After the append that made ``version``: its ids join the kept ones if no
        commit that changed rows came between."""
        index = self._held.pop(spec, None)
        if index is None or not self._rows_unchanged(spec, index.version, version - 1):
            return
        index.add(appended["event_id"], appended["event_date"])
        index.version = version
        self._held[spec] = index

    def _duplicates(self, valid: pa.Table, held: pa.Table | None = None) -> pa.Table:
        """The valid events that are not in their silver table: the repeats dropped there.

        Runs after every table has committed the batch. ``held``: the lineage the event
        tables hold of it, when known; else read back from them, which gives the same
        answer after a crash between their commits."""
        if valid.num_rows == 0:
            return _with_table_name(valid)
        present = held
        if present is None:
            span = lineage_span(valid)
            present = pa.concat_tables(
                [read_ranges(self.store, s, span, _LINEAGE) for s in ONE_ROW_PER_EVENT]
            )
        return _with_table_name(valid.join(present, keys=_LINEAGE, join_type="left anti"))

    # -- the watermark -------------------------------------------------------------
    def _high_water_before(self, ranges: Ranges) -> pa.Table:
        """Newest valid event time before each range, from memory or else from silver."""
        rows: list[tuple[TopicPartition, datetime | None]] = []
        for tp, (start, _) in ranges.items():
            remembered = self._high_water.get(tp)
            if remembered is not None and remembered[0] == start:
                rows.append((tp, remembered[1]))
            else:
                rows.append((tp, self._newest_before(tp, start)))
        return pa.table(
            {
                "topic": pa.array([tp.topic for tp, _ in rows], pa.string()),
                "partition": pa.array([tp.partition for tp, _ in rows], pa.int32()),
                "max_ts": pa.array([ts for _, ts in rows], TS),
            }
        )

    def _newest_before(self, tp: TopicPartition, start: int) -> datetime | None:
        if start == 0:
            return None
        before = AllOf(
            (
                Compare("topic", "=", tp.topic),
                Compare("partition", "=", tp.partition),
                Compare("offset", "<", start),
            )
        )
        earlier = [
            table_input(self.engine, self.store.open(spec), ["event_ts"], before)
            for spec in (*ONE_ROW_PER_EVENT, DUPLICATES)
        ]
        newest = self.engine.table_over(
            "SELECT max(event_ts) AS newest FROM earlier", {"earlier": earlier}
        )
        return cast("datetime | None", newest["newest"][0].as_py())

    def _remember_high_water(self, ranges: Ranges, before: pa.Table, batch_max: pa.Table) -> None:
        newest = {
            TopicPartition(r["topic"], r["partition"]): r["max_ts"] for r in batch_max.to_pylist()
        }
        for row in before.to_pylist():
            tp = TopicPartition(row["topic"], row["partition"])
            times = [t for t in (row["max_ts"], newest.get(tp)) if t is not None]
            self._high_water[tp] = (ranges[tp][1], max(times) if times else None)


def _wanted(ranges: Ranges, own: Positions) -> Positions:
    """The range ends a table has not reached yet."""
    return {tp: end for tp, (_, end) in ranges.items() if end > own[tp]}


def _with_table_name(events: pa.Table) -> pa.Table:
    names = {etype: spec.name for etype, spec in EVENT_TABLES.items()}
    table_name = [names[t] for t in events["event_type"].to_pylist()]
    return events.append_column("table_name", pa.array(table_name, pa.string()))


def _size(ranges: Ranges) -> int:
    return sum(end - start for start, end in ranges.values())


def _bounded(ranges: Ranges, max_records: int) -> Ranges:
    """Non-empty ranges cut to ``max_records`` in all, shared in proportion to what is pending."""
    pending = {tp: end - start for tp, (start, end) in ranges.items() if end > start}
    total = sum(pending.values())
    if total <= max_records:
        return {tp: ranges[tp] for tp in pending}
    out: Ranges = {}
    for tp, n in pending.items():
        start = ranges[tp][0]
        out[tp] = (start, start + max(1, n * max_records // total))
    return out


def _first_per_key(rows: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Keep the first row (in lineage order) of each key."""
    if rows.num_rows == 0 or "event_id" not in key:
        return rows
    indexed = rows.append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
    firsts = indexed.group_by(list(key), use_threads=False).aggregate([("__row", "min")])
    if firsts.num_rows == rows.num_rows:
        return rows
    keep = pc.sort_indices(firsts["__row_min"])
    return rows.take(pc.take(firsts["__row_min"], keep))


def _past(rows: pa.Table, positions: Positions) -> pa.Table:
    """Rows at or after each partition's position (rows a table already holds are dropped)."""
    if rows.num_rows == 0 or not any(positions.values()):
        return rows
    held = in_ranges(rows, {tp: (0, start) for tp, start in positions.items() if start})
    return rows.filter(pc.invert(held))


def touched_orders(
    store: TableStore, ranges: Ranges, recent: RecentCommits | None = None
) -> pa.Array:
    """order_ids of silver orders and payments whose bronze lineage lies in ``ranges``."""
    recent = recent or RecentCommits()
    ids = [
        recent.lineage_rows(store, spec, ranges, ["order_id"])["order_id"]
        for spec in (ORDERS, PAYMENTS)
    ]
    return pc.unique(pa.chunked_array([c for arr in ids for c in arr.chunks], pa.string()))


def pending_ranges(
    store: TableStore,
    spec: TableSpec,
    inputs: tuple[TableSpec, ...],
    tps: list[TopicPartition],
    shared: SharedReads | None = None,
) -> Ranges:
    """Bronze ranges every input has consumed but ``spec`` has not (``shared``: the
    inputs' positions as the pass first read them)."""
    own = positions_of(store.open(spec), tps)
    ends = [
        positions_of(store.open(s), tps) if shared is None else shared.positions(store, s, tps)
        for s in inputs
    ]
    out: Ranges = {}
    for tp in tps:
        end = min(e[tp] for e in ends)
        if end > own[tp]:
            out[tp] = (own[tp], end)
    return out
