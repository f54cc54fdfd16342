"""Day digests: a daily model's inputs held compacted between steps (pipeline/digests.py).

Exactness over whole streams is guarded by tests/unit/test_incremental.py (any split of a
stream gives the same gold as one pass); these tests pin down what is held and when."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shoplake.contract.tables import PAGE_VIEWS, TableSpec
from shoplake.engines import open_engine
from shoplake.engines.base import HeldQuery
from shoplake.pipeline.digests import DayDigests, Digest, weighed
from shoplake.pipeline.positions import HeldAlong, Positions, Ranges
from shoplake.pipeline.registry import DAILY_SALES_MODEL
from shoplake.settings import EngineSettings
from shoplake.transport.base import TopicPartition

TP = TopicPartition("page_views", 0)
FIRST_VIEW = Digest(("session_id", "user_id", "traffic_source"), ("event_ts", "event_id"))
COLUMNS = list(FIRST_VIEW.columns)


def views(*rows: tuple[str, str, str, str, str]) -> pa.Table:
    """Page views (event_id, session_id, user_id, traffic_source, ISO time)."""
    names = ["event_id", "session_id", "user_id", "traffic_source"]
    table = pa.table({n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)})
    ts = [datetime.fromisoformat(r[4]).astimezone(UTC) for r in rows]
    return table.append_column("event_ts", pa.array(ts, pa.timestamp("us", tz="UTC"))).select(
        COLUMNS
    )


class Silver:
    """The page views table as the digests read it: new rows by range, days whole."""

    def __init__(self) -> None:
        self.rows = views()
        self.batches: dict[tuple[int, int], pa.Table] = {}
        self.days_read: list[list[date]] = []

    def add(self, start: int, rows: pa.Table) -> Ranges:
        self.rows = pa.concat_tables([self.rows, rows])
        end = start + rows.num_rows
        self.batches[(start, end)] = rows
        return {TP: (start, end)}

    def new(self, spec: TableSpec, ranges: Ranges, columns: list[str]) -> pa.Table:
        return self.batches[ranges[TP]].select(columns)

    def read(self, spec: TableSpec, columns: Sequence[str], days: list[date]) -> pa.Table:
        self.days_read.append(days)
        return self.rows.select(list(columns))


def own(ranges: Ranges) -> Positions:
    """The positions a model stands at before a step over ``ranges``."""
    return {tp: start for tp, (start, _) in ranges.items()}


@pytest.fixture
def engine():  # type: ignore[no-untyped-def]
    engine = open_engine(EngineSettings())
    engine.define_local_date("UTC")
    yield engine
    engine.close()


def first_views(table: pa.Table) -> list[tuple[str, str]]:
    return sorted(zip(table["session_id"].to_pylist(), table["event_id"].to_pylist(), strict=True))


D1, D2 = date(2026, 3, 1), date(2026, 3, 2)


def rows_of(engine, held: HeldQuery) -> pa.Table:  # type: ignore[no-untyped-def]
    """What the model's SQL reads of a digest the engine holds."""
    return engine.table_over("SELECT * FROM digest", {"digest": held})


def test_a_held_day_takes_in_the_new_rows_without_reading_the_day_again(engine) -> None:  # type: ignore[no-untyped-def]
    silver, digests = Silver(), DayDigests({PAGE_VIEWS: FIRST_VIEW}, engine)
    first = silver.add(0, views(
        ("e2", "s1", "u1", "ads", "2026-03-01T10:00:05+00:00"),
        ("e1", "s1", "u1", "ads", "2026-03-01T10:00:05+00:00"),  # same time: e1 is first
        ("e3", "s2", "u2", "seo", "2026-03-01T11:00:00+00:00"),
    ))  # fmt: skip
    got = rows_of(
        engine, digests.inputs(first, own(first), [D1], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert first_views(got) == [("s1", "e1"), ("s2", "e3")]
    digests.keep(first)
    assert silver.days_read == [[D1]]

    later = silver.add(3, views(
        ("e4", "s2", "u2", "seo", "2026-03-01T10:59:00+00:00"),  # late: now s2's first
        ("e5", "s1", "u1", "mail", "2026-03-01T12:00:00+00:00"),  # s1 from another source
        ("e6", "s3", "u3", "ads", "2026-03-01T12:30:00+00:00"),
    ))  # fmt: skip
    got = rows_of(
        engine, digests.inputs(later, own(later), [D1], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert silver.days_read == [[D1]]  # held: not read again
    assert first_views(got) == [("s1", "e1"), ("s1", "e5"), ("s2", "e4"), ("s3", "e6")]
    assert got.num_rows == 4 and digests.held_rows() == 2  # kept only once committed
    digests.keep(later)
    assert digests.held_rows() == 4


def test_a_step_that_does_not_commit_leaves_the_held_days_as_they_were(engine) -> None:  # type: ignore[no-untyped-def]
    silver, digests = Silver(), DayDigests({PAGE_VIEWS: FIRST_VIEW}, engine)
    first = silver.add(0, views(("e1", "s1", "u1", "ads", "2026-03-01T10:00:00+00:00")))
    digests.inputs(first, own(first), [D1], silver.new, silver.read)
    digests.keep(first)
    failed = silver.add(1, views(("e2", "s2", "u2", "seo", "2026-03-01T11:00:00+00:00")))
    digests.inputs(failed, own(failed), [D1], silver.new, silver.read)  # its commit fails: no keep
    assert digests.held_rows() == 1
    got = digests.inputs(failed, own(failed), [D1], silver.new, silver.read)  # the retry
    got = rows_of(engine, got[PAGE_VIEWS])
    assert first_views(got) == [("s1", "e1"), ("s2", "e2")]
    assert silver.days_read == [[D1]]


def test_held_days_that_fail_to_take_a_committed_step_are_dropped_and_read_again(
    engine, caplog
) -> None:  # type: ignore[no-untyped-def]
    """The step has committed, so its model goes on: holding nothing is exact, holding
    half of the step's groups would not be."""
    silver, digests = Silver(), DayDigests({PAGE_VIEWS: FIRST_VIEW}, engine)
    first = silver.add(0, views(("e1", "s1", "u1", "ads", "2026-03-01T10:00:00+00:00")))
    digests.inputs(first, own(first), [D1], silver.new, silver.read)
    digests.keep(first)
    second = silver.add(1, views(("e2", "s2", "u2", "seo", "2026-03-01T11:00:00+00:00")))
    digests.inputs(second, own(second), [D1], silver.new, silver.read)
    engine.execute(f"DROP TABLE {digests._tables[PAGE_VIEWS][1]}")  # the staged groups lost
    digests.keep(second)
    assert "day digests" in caplog.text and digests.held_rows() == 0
    third = silver.add(2, views(("e3", "s3", "u3", "seo", "2026-03-01T12:00:00+00:00")))
    got = rows_of(
        engine, digests.inputs(third, own(third), [D1], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert first_views(got) == [("s1", "e1"), ("s2", "e2"), ("s3", "e3")]
    assert silver.days_read == [[D1], [D1]]


def test_positions_that_jump_make_the_held_days_be_read_again(engine) -> None:  # type: ignore[no-untyped-def]
    silver, digests = Silver(), DayDigests({PAGE_VIEWS: FIRST_VIEW}, engine)
    first = silver.add(0, views(("e1", "s1", "u1", "ads", "2026-03-01T10:00:00+00:00")))
    digests.inputs(first, own(first), [D1], silver.new, silver.read)
    digests.keep(first)
    # another writer consumed this one
    silver.add(1, views(("e2", "s2", "u2", "seo", "2026-03-01T11:00:00+00:00")))
    jumped = silver.add(2, views(("e3", "s3", "u3", "seo", "2026-03-01T12:00:00+00:00")))
    got = rows_of(
        engine, digests.inputs(jumped, own(jumped), [D1], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert first_views(got) == [("s1", "e1"), ("s2", "e2"), ("s3", "e3")]  # e2 not lost
    assert silver.days_read == [[D1], [D1]]


def test_only_the_days_touched_last_are_held_the_latest_of_more(engine) -> None:  # type: ignore[no-untyped-def]
    """At most ``max_days`` are held: of a step that touched more (late events of other
    days, a backfill), the latest, as today's is the one the next step touches again."""
    silver, digests = Silver(), DayDigests({PAGE_VIEWS: FIRST_VIEW}, engine, max_days=1)
    first = silver.add(0, views(("e1", "s1", "u1", "ads", "2026-03-01T10:00:00+00:00")))
    digests.inputs(first, own(first), [D1], silver.new, silver.read)
    digests.keep(first)
    second = silver.add(1, views(("e2", "s2", "u2", "ads", "2026-03-02T10:00:00+00:00")))
    got = rows_of(
        engine, digests.inputs(second, own(second), [D2], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert first_views(got) == [("s2", "e2")]  # of the day touched only
    digests.keep(second)
    assert digests.held_rows() == 1  # D2's row only: D1 was dropped
    late = silver.add(2, views(("e3", "s3", "u3", "ads", "2026-03-01T12:00:00+00:00")))
    got = rows_of(
        engine, digests.inputs(late, own(late), [D1, D2], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert first_views(got) == [("s1", "e1"), ("s2", "e2"), ("s3", "e3")]
    digests.keep(late)
    assert digests.held_rows() == 1  # D2 still held, D1 not
    today = silver.add(3, views(("e4", "s4", "u4", "ads", "2026-03-02T11:00:00+00:00")))
    got = rows_of(
        engine, digests.inputs(today, own(today), [D2], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert first_views(got) == [("s2", "e2"), ("s4", "e4")]  # D2 from memory
    assert silver.days_read == [[D1], [D2], [D1]]


def test_a_digest_chooses_its_first_row_by_event_time() -> None:
    with pytest.raises(ValueError, match="event_ts"):
        Digest(("session_id",), ("event_id", "event_ts"))


def test_a_digest_holds_exactly_the_columns_its_model_reads() -> None:
    reads = ((PAGE_VIEWS, ("user_id", "event_ts")),)
    with pytest.raises(TypeError, match="columns the model reads"):
        replace(DAILY_SALES_MODEL, reads=reads, digests=((PAGE_VIEWS, FIRST_VIEW),))
    replace(
        DAILY_SALES_MODEL, reads=reads, digests=((PAGE_VIEWS, Digest(("user_id",), ("event_ts",))),)
    )


PRODUCT_VIEWS = Digest(("product_id",), ("event_ts",), counted=True)


class CountedSilver:
    """Page views (product, time) with their lineage in one partition, offset = row."""

    def __init__(self) -> None:
        self.rows = pa.table(
            {"product_id": pa.array([], pa.string()),
             "event_ts": pa.array([], pa.timestamp("us", tz="UTC"))}
        )  # fmt: skip
        self.reads = 0

    def add(self, *views: tuple[str, str]) -> None:
        ts = [datetime.fromisoformat(t).astimezone(UTC) for _, t in views]
        more = pa.table({"product_id": [p for p, _ in views],
                         "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC"))})  # fmt: skip
        self.rows = pa.concat_tables([self.rows, more])

    def _with_lineage(self) -> pa.Table:
        n = self.rows.num_rows
        return (
            self.rows.append_column("topic", pa.array([TP.topic] * n))
            .append_column("partition", pa.array([TP.partition] * n, pa.int32()))
            .append_column("offset", pa.array(range(n), pa.int64()))
        )

    def new(self, spec: TableSpec, ranges: Ranges, columns: list[str]) -> pa.Table:
        start, end = ranges[TP]
        return self._with_lineage().slice(start, end - start).select(columns)

    def read(self, spec: TableSpec, columns: Sequence[str], days: list[date]) -> pa.Table:
        self.reads += 1
        return self._with_lineage().select(list(columns))


def views_per_product(table: pa.Table) -> dict[str, int]:
    got = table.group_by("product_id").aggregate([("weight", "sum")])
    return dict(zip(got["product_id"].to_pylist(), got["weight_sum"].to_pylist(), strict=True))


def test_a_counted_digest_counts_each_row_once(engine) -> None:  # type: ignore[no-untyped-def]
    """Rows the table holds past the step's ranges (silver moved on) are not counted by
    the day's read, and are counted once when their step comes; a held day takes only
    the new rows; positions that moved under the model make the day be read again."""
    silver, digests = CountedSilver(), DayDigests({PAGE_VIEWS: PRODUCT_VIEWS}, engine)
    silver.add(
        ("p1", "2026-03-01T10:00:00+00:00"),
        ("p1", "2026-03-01T11:00:00+00:00"),
        ("p2", "2026-03-01T12:00:00+00:00"),
        ("p1", "2026-03-01T13:00:00+00:00"),
    )  # offset 3: in silver, not yet consumed
    first = {TP: (0, 3)}
    got = rows_of(
        engine, digests.inputs(first, own(first), [D1], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert views_per_product(got) == {"p1": 2, "p2": 1}
    digests.keep(first)
    silver.add(("p2", "2026-03-01T14:00:00+00:00"))
    second = {TP: (3, 5)}
    got = rows_of(
        engine, digests.inputs(second, own(second), [D1], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert views_per_product(got) == {"p1": 3, "p2": 2}
    assert silver.reads == 1  # the day held: only the new rows
    digests.keep(second)
    assert digests.held_rows() == 2  # one row a product, however many views
    silver.add(("p3", "2026-03-01T15:00:00+00:00"), ("p3", "2026-03-01T16:00:00+00:00"))
    jumped = {TP: (6, 7)}  # another worker consumed offset 5
    got = rows_of(
        engine, digests.inputs(jumped, own(jumped), [D1], silver.new, silver.read)[PAGE_VIEWS]
    )
    assert views_per_product(got) == {"p1": 3, "p2": 2, "p3": 2}
    assert silver.reads == 2


def test_a_counted_digest_of_a_day_read_and_a_day_held_at_once(engine) -> None:  # type: ignore[no-untyped-def]
    """A step touching a held day and a missed one (a late event): the new rows of the
    missed day are in its read, and counted there only."""
    silver, digests = CountedSilver(), DayDigests({PAGE_VIEWS: PRODUCT_VIEWS}, engine)
    silver.add(("p1", "2026-03-02T10:00:00+00:00"))
    first = {TP: (0, 1)}
    digests.inputs(first, own(first), [D2], silver.new, silver.read)
    digests.keep(first)
    silver.add(("p1", "2026-03-01T23:00:00+00:00"), ("p1", "2026-03-02T11:00:00+00:00"))
    late = {TP: (1, 3)}
    got = rows_of(
        engine, digests.inputs(late, own(late), [D1, D2], silver.new, silver.read)[PAGE_VIEWS]
    )
    by_day = got.group_by("event_ts").aggregate([("weight", "sum")])
    assert sorted(by_day["weight_sum"].to_pylist()) == [1, 2]  # D1: 1 view, D2: 2 views
    assert got.num_rows == 2


def test_a_partition_moved_outside_the_steps_ranges_makes_the_held_days_stale(engine) -> None:  # type: ignore[no-untyped-def]
    """Another worker consumed a partition this model's steps do not touch: what the
    model holds lacks those rows, so the next step reads its days again."""
    silver, digests = Silver(), DayDigests({PAGE_VIEWS: FIRST_VIEW}, engine)
    other = TopicPartition("page_views", 1)
    first = silver.add(0, views(("e1", "s1", "u1", "ads", "2026-03-01T10:00:00+00:00")))
    digests.inputs(first, {TP: 0, other: 0}, [D1], silver.new, silver.read)
    digests.keep(first)
    second = silver.add(1, views(("e2", "s2", "u2", "seo", "2026-03-01T11:00:00+00:00")))
    digests.inputs(second, {TP: 1, other: 0}, [D1], silver.new, silver.read)  # as left: held
    assert silver.days_read == [[D1]]
    digests.keep(second)
    third = silver.add(2, views(("e3", "s3", "u3", "seo", "2026-03-01T12:00:00+00:00")))
    digests.inputs(third, {TP: 2, other: 7}, [D1], silver.new, silver.read)
    assert silver.days_read == [[D1], [D1]]


def test_what_a_model_holds_is_stale_once_any_of_its_partitions_moved() -> None:
    """HeldAlong (digests and dim_customers' marks): valid at the positions of every
    partition the last committed step left, the ones it did not move included."""
    other = TopicPartition("page_views", 1)
    along: HeldAlong[str] = HeldAlong()
    assert along.continues({TP: 0, other: 0})  # nothing held yet
    ranges = {TP: (0, 3)}
    along.stage(ranges, {TP: 0, other: 5}, "marks")
    assert along.committed({TP: (0, 3)}) is None  # another step's ranges: not this one's
    assert along.committed(ranges) == "marks"
    assert along.continues({TP: 3, other: 5})
    assert not along.continues({TP: 3, other: 6})  # moved by another worker
    assert not along.continues({TP: 4, other: 5})


def _compacted(engine, digest: Digest, rows: pa.Table, days: list[date]) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    """``rows`` compacted all at once, of ``days``: what a digest held along must equal."""
    if digest.counted:
        rows = weighed(rows)
    table = engine.table_over(digest.sql(), {"rows": rows})
    return _sorted_rows(table.filter(pc.is_in(table["_digest_day"], pa.array(days))))


def _sorted_rows(table: pa.Table) -> list[tuple]:  # type: ignore[type-arg]
    columns = [c for c in table.column_names if c != "_digest_day"]
    return sorted(
        (tuple(row[c] for c in columns) for row in table.to_pylist()),
        key=lambda row: tuple((v is None, str(v)) for v in row),
    )


@pytest.mark.parametrize("counted", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_a_digest_held_along_equals_the_rows_compacted_at_once(engine, counted, seed) -> None:  # type: ignore[no-untyped-def]
    """Steps of random size over two days, with NULL keys, late rows and days dropped by
    ``max_days``: after each step the digest of its touched days is what compacting all
    rows so far gives (held groups the step missed pass through, those it fell in are
    compacted again with it)."""
    import random

    rng = random.Random(seed)
    digest = Digest(("session_id", "user_id"), ("event_ts", "event_id"), counted=counted)
    columns = list(digest.columns)

    def row(i: int) -> tuple[str | None, str | None, str, str]:
        day = rng.choice(("2026-03-01", "2026-03-02", "2026-03-02"))
        at = f"{day}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00+00:00"
        return rng.choice(("s1", "s2", "s3", None)), rng.choice(("u1", "u2", None)), at, f"e{i:03d}"

    table = pa.table({c: pa.array([], pa.string()) for c in columns[:2]})
    all_rows = table.append_column("event_ts", pa.array([], pa.timestamp("us", tz="UTC")))
    all_rows = all_rows.append_column("event_id", pa.array([], pa.string())).select(columns)
    steps: dict[tuple[int, int], pa.Table] = {}

    def new(spec: TableSpec, ranges: Ranges, cols: list[str]) -> pa.Table:
        return steps[ranges[TP]].select(cols)

    def read(spec: TableSpec, cols: Sequence[str], days: list[date]) -> pa.Table:
        n = all_rows.num_rows  # with lineage: a counted read counts below the consumed
        lineage = {"topic": pa.array([TP.topic] * n), "partition": pa.array([0] * n, pa.int32()),
                   "offset": pa.array(range(n), pa.int64())}  # fmt: skip
        return pa.table({**{c: all_rows[c] for c in columns}, **lineage}).select(list(cols))

    digests = DayDigests({PAGE_VIEWS: digest}, engine, max_days=1 + seed % 2)
    start = 0
    while start < 80:
        made = [row(start + k) for k in range(rng.randrange(1, 12))]
        batch = pa.table({
            "session_id": pa.array([m[0] for m in made], pa.string()),
            "user_id": pa.array([m[1] for m in made], pa.string()),
            "event_ts": pa.array([datetime.fromisoformat(m[2]) for m in made],
                                 pa.timestamp("us", tz="UTC")),
            "event_id": [m[3] for m in made],
        }).select(columns)  # fmt: skip
        ranges = {TP: (start, start + len(made))}
        steps[ranges[TP]] = batch
        all_rows = pa.concat_tables([all_rows, batch])
        days = sorted({date.fromisoformat(m[2][:10]) for m in made})
        got = rows_of(engine, digests.inputs(ranges, own(ranges), days, new, read)[PAGE_VIEWS])
        assert _sorted_rows(got) == _compacted(engine, digest, all_rows, days)
        if rng.random() < 0.8:  # else the commit failed: nothing kept, the next step redoes it
            digests.keep(ranges)
            start += len(made)
        else:
            all_rows = all_rows.slice(0, start)


def test_a_key_compared_with_a_few_values_is_held_as_one_of_them_or_null(engine) -> None:  # type: ignore[no-untyped-def]
    """A session's home, category and cart views make one row: the SQL tells only
    product and checkout views apart."""
    digest = Digest(
        ("session_id", "page_type"), ("event_ts",), only=(("page_type", ("product", "checkout")),)
    )
    ts = [datetime(2026, 3, 1, 10, m, tzinfo=UTC) for m in range(5)]
    rows = pa.table({
        "session_id": ["s1"] * 5,
        "page_type": ["home", "product", "category", "product", "cart"],
        "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    got = engine.table_over(digest.sql(), {"rows": rows})
    assert sorted(
        zip(got["page_type"].to_pylist(), got["event_ts"].to_pylist(), strict=True), key=str
    ) == [("product", ts[1]), (None, ts[0])]
    with pytest.raises(ValueError, match="key columns"):
        Digest(("session_id",), ("event_ts",), only=(("page_type", ("product",)),))
