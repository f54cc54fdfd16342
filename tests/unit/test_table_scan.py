"""The TableStore's scans and merges take structured predicates (tables/base.py): each
format translates them itself, so the pipeline never writes a format's filter syntax."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from shoplake.contract.tables import ORDER_PAYMENTS, PAGE_VIEWS, TableSpec
from shoplake.settings import Settings
from shoplake.tables import TableStore, open_store
from shoplake.tables.base import AllOf, Compare, IsIn, all_of, arrow_filter
from shoplake.tables.delta import _FileFragments
from shoplake.tables.row_groups import RowGroupBounds
from tests.conftest import order_payment_rows

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def order_payments(ids: list[str], paid: list[int]) -> pa.Table:
    return order_payment_rows({i: BASE + timedelta(minutes=k) for k, i in enumerate(ids)}, paid)


@pytest.fixture
def store(settings: Settings) -> TableStore:
    store = open_store(settings)
    store.ensure(ORDER_PAYMENTS)
    return store


def ids(store: TableStore, spec: TableSpec, where: object, column: str = "order_id") -> list[str]:
    rows = store.open(spec).scan([column], where)  # type: ignore[arg-type]
    assert rows.column_names == [column]
    return sorted(rows[column].to_pylist())


def row_groups_read(dataset: pads.Dataset, where: pc.Expression) -> int:
    """How many row groups a scan of ``dataset`` for ``where`` reads: Arrow skips those
    whose statistics rule it out (and a file with none left)."""
    fragments = dataset.get_fragments(filter=where)  # by partition
    return sum(len(f.split_by_row_group(filter=where)) for f in fragments)


def test_a_scan_filters_string_columns_of_merged_files_too(store: TableStore) -> None:
    """delta-rs writes a merge's string columns as string_view, which Arrow's filters
    cannot compare with strings: the adapter's translation copes, whatever wrote the file."""
    store.append(ORDER_PAYMENTS, order_payments(["a", "b", "c"], [10, 0, 10]))
    store.upsert(ORDER_PAYMENTS, order_payments(["b", "d"], [10, 3]))  # a merged file
    assert ids(store, ORDER_PAYMENTS, IsIn("order_id", ["b", "d", "zz"])) == ["b", "d"]
    assert ids(store, ORDER_PAYMENTS, IsIn("order_id", pa.array(["a", "d"]))) == ["a", "d"]
    assert ids(store, ORDER_PAYMENTS, Compare("order_id", "=", "c")) == ["c"]
    assert ids(store, ORDER_PAYMENTS, Compare("order_id", "!=", "c")) == ["a", "b", "d"]
    chunked = pa.chunked_array([["a"], ["b"]])
    assert ids(store, ORDER_PAYMENTS, IsIn("order_id", chunked)) == ["a", "b"]


def test_conjunctions_and_comparisons_of_every_kind(store: TableStore) -> None:
    store.append(ORDER_PAYMENTS, order_payments(["a", "b", "c", "d"], [0, 5, 10, 10]))
    third = BASE + timedelta(minutes=2)
    assert ids(store, ORDER_PAYMENTS, Compare("order_ts", ">=", third)) == ["c", "d"]
    assert ids(store, ORDER_PAYMENTS, Compare("order_ts", "<", third)) == ["a", "b"]
    assert ids(store, ORDER_PAYMENTS, Compare("order_ts", "<=", third)) == ["a", "b", "c"]
    assert ids(store, ORDER_PAYMENTS, Compare("order_ts", ">", third)) == ["d"]
    both = AllOf((Compare("fully_paid", "=", True), Compare("order_ts", "<", third + timedelta(1))))
    assert ids(store, ORDER_PAYMENTS, both) == ["c", "d"]
    assert ids(store, ORDER_PAYMENTS, all_of(None, IsIn("order_id", ["a"]), None)) == ["a"]
    assert all_of(None, None) is None
    assert ids(store, ORDER_PAYMENTS, None) == ["a", "b", "c", "d"]
    assert store.open(ORDER_PAYMENTS).scan(where=IsIn("order_id", [])).num_rows == 0
    everything = store.open(ORDER_PAYMENTS).scan()
    assert everything.schema == ORDER_PAYMENTS.schema and everything.num_rows == 4


def test_a_scan_prunes_by_partition(settings: Settings) -> None:
    """A predicate on the partition column reads only the partitions it names."""
    store = open_store(settings)
    store.ensure(PAGE_VIEWS)
    days = [date(2026, 1, d) for d in (1, 2, 3)]
    for day in days:
        rows = {f.name: pa.array([_default(f.type)], f.type) for f in PAGE_VIEWS.schema}
        rows["event_date"] = pa.array([day], pa.date32())
        rows["event_id"] = pa.array([f"e-{day.day}"])
        store.append(PAGE_VIEWS, pa.table(rows, PAGE_VIEWS.schema))
    handle = store.open(PAGE_VIEWS)
    got = handle.scan(["event_id"], IsIn("event_date", days[1:]))
    assert sorted(got["event_id"].to_pylist()) == ["e-2", "e-3"]
    files = handle.dataset().get_fragments(filter=pa.compute.field("event_date") == days[0])
    assert len(list(files)) == 1  # one file per day: what the predicate prunes


def test_files_record_statistics_of_the_filtered_columns_only(settings: Settings) -> None:
    """A table's files keep min/max of the columns the pipeline filters on (cheaper to
    list), and scans on those still prune files: one per user here."""
    store = open_store(settings)
    store.ensure(PAGE_VIEWS)
    for k in range(3):
        rows = {f.name: pa.array([_default(f.type)] * 2, f.type) for f in PAGE_VIEWS.schema}
        rows["user_id"] = pa.array([f"U{k}", f"U{k}"])
        rows["event_ts"] = pa.array([BASE + timedelta(hours=k)] * 2, pa.timestamp("us", "UTC"))
        store.append(PAGE_VIEWS, pa.table(rows, PAGE_VIEWS.schema))
    handle = store.open(PAGE_VIEWS)
    assert handle.count() == 6
    stats = DeltaTable(store.location(PAGE_VIEWS)).get_add_actions(flatten=True).column_names
    recorded = {c.removeprefix("min.") for c in stats if c.startswith("min.")}
    assert recorded == set(PAGE_VIEWS.stats_columns) and "device" not in recorded
    assert {"user_id", "event_ts", "offset"} <= recorded
    assert row_groups_read(handle.dataset(), pa.compute.field("user_id") == "U1") == 1
    late = Compare("event_ts", ">=", BASE + timedelta(hours=2))
    assert handle.scan(["user_id"], late)["user_id"].to_pylist() == ["U2", "U2"]


def test_a_scan_for_a_list_of_keys_reads_only_the_files_whose_range_holds_them(
    store: TableStore,
) -> None:
    """Keys that grow with time (order ids) sit in a few files: a scan for a list of them
    prunes the others by their statistics, and still finds exactly the keys asked for."""
    for k in range(6):
        store.append(ORDER_PAYMENTS, order_payments([f"O{k}-a", f"O{k}-b"], [1, 2]))
    handle = store.open(ORDER_PAYMENTS)
    absent = [f"O2-x{i:03d}" for i in range(100)]  # Arrow prunes by a short list itself
    wanted = IsIn("order_id", ["O2-b", "O3-a", *absent])
    assert ids(store, ORDER_PAYMENTS, wanted) == ["O2-b", "O3-a"]
    assert row_groups_read(handle.dataset(), arrow_filter(ORDER_PAYMENTS, wanted)) == 2
    with_null = IsIn("order_id", pa.array(["O1-a", None]))  # no range: nothing is pruned
    assert ids(store, ORDER_PAYMENTS, with_null) == ["O1-a"]


def test_a_table_made_before_limited_statistics_gets_them(settings: Settings) -> None:
    """A home from before tables limited their files' statistics: opening it sets the
    property, so the files written from then on record the filtered columns only."""
    store = open_store(settings)
    uri = store.location(PAGE_VIEWS)
    Path(uri).mkdir(parents=True)
    DeltaTable.create(uri, schema=PAGE_VIEWS.schema, partition_by=list(PAGE_VIEWS.partition_by))
    open_store(settings).ensure(PAGE_VIEWS)
    config = DeltaTable(uri).metadata().configuration
    assert config["delta.dataSkippingStatsColumns"] == ",".join(PAGE_VIEWS.stats_columns)
    rows = {f.name: pa.array([_default(f.type)], f.type) for f in PAGE_VIEWS.schema}
    rows["event_ts"] = pa.array([BASE], pa.timestamp("us", "UTC"))
    version = DeltaTable(uri).version()
    again = open_store(settings)
    again.ensure(PAGE_VIEWS)  # set already: no second commit
    assert DeltaTable(uri).version() == version
    again.append(PAGE_VIEWS, pa.table(rows, PAGE_VIEWS.schema))
    assert DeltaTable(uri).version() == version + 1
    stats = DeltaTable(uri).get_add_actions(flatten=True).column_names
    recorded = {c.removeprefix("min.") for c in stats if c.startswith("min.")}
    assert recorded == set(PAGE_VIEWS.stats_columns)


def _default(kind: pa.DataType) -> object:
    if pa.types.is_string(kind):
        return "x"
    if pa.types.is_timestamp(kind):
        return BASE
    if pa.types.is_date(kind):
        return date(2026, 1, 1)
    if pa.types.is_boolean(kind):
        return False
    if pa.types.is_decimal(kind):
        return Decimal(0)
    return 0


def test_a_merge_deletes_the_keys_its_predicate_names(store: TableStore) -> None:
    store.append(ORDER_PAYMENTS, order_payments(["a", "b", "c"], [10, 10, 10]))
    gone = AllOf((IsIn("currency", ["EUR", "USD"]), Compare("paid_amount", "=", 0)))
    store.upsert(ORDER_PAYMENTS, order_payments(["b", "c", "x"], [0, 7, 0]), delete_when=gone)
    rows = store.open(ORDER_PAYMENTS).scan(["order_id", "paid_amount"]).sort_by("order_id")
    # b deleted, c updated, x (deleted at the source) never inserted
    assert rows.to_pylist() == [
        {"order_id": "a", "paid_amount": Decimal("10.00")},
        {"order_id": "c", "paid_amount": Decimal("7.00")},
    ]
    # a literal with a quote stays one literal: the source row matches, so is not inserted
    quote = Compare("user_id", "=", "u-it's")
    store.upsert(ORDER_PAYMENTS, order_payments(["it's"], [10]), delete_when=quote)
    assert ids(store, ORDER_PAYMENTS, None) == ["a", "c"]


def test_a_scan_for_a_long_list_of_keys_reads_only_the_row_groups_that_may_hold_one(
    tmp_path: Path,
) -> None:
    """A round's new order ids and a refund of an old order span the whole table, so their
    range prunes nothing: each row group's bounds are looked up in the keys instead. Rows
    found are exactly those asked for; a file without bounds is read whole."""
    keys = [f"O{n:08d}" for n in range(1300)]
    pq.write_table(pa.table({"order_id": keys[:1000]}), tmp_path / "a.parquet", row_group_size=100)
    pq.write_table(pa.table({"order_id": keys[1000:1200]}), tmp_path / "b.parquet")
    pq.write_table(
        pa.table({"order_id": keys[1200:]}), tmp_path / "c.parquet", write_statistics=False
    )
    dataset = pads.dataset(tmp_path, format="parquet")
    new = [f"O{n:08d}" for n in range(1150, 1199, 2)] + [f"O{n:08d}-x" for n in range(1100, 1130)]
    wanted = IsIn("order_id", pa.array([keys[505], keys[1250], *new]))
    bounds = RowGroupBounds()
    narrowed = bounds.narrowed(dataset, wanted)
    read = {Path(f.path).name: [g.id for g in f.row_groups] for f in narrowed.get_fragments()}
    assert read == {"a.parquet": [5], "b.parquet": [0], "c.parquet": [0]}
    found = narrowed.to_table(filter=pc.field("order_id").isin(wanted.values))["order_id"]
    assert sorted(found.to_pylist()) == sorted([keys[505], keys[1250], *new[:25]])
    short = IsIn("order_id", [keys[505], keys[1250]])  # Arrow prunes a short list itself
    assert bounds.narrowed(dataset, short) is dataset
    spread = IsIn("order_id", keys[::50])  # one key in every row group: nothing to leave out
    assert bounds.narrowed(dataset, spread) is dataset


def test_a_store_scan_for_a_long_list_of_keys_finds_them_in_compacted_files(
    store: TableStore,
) -> None:
    """Through the store: many small files compacted into one of several row groups, then
    a scan for a round's keys plus an old one returns exactly those rows."""
    for k in range(4):
        store.append(ORDER_PAYMENTS, order_payments([f"O{k}-{i:03d}" for i in range(60)], [1] * 60))
    store.compact(ORDER_PAYMENTS)
    store.append(ORDER_PAYMENTS, order_payments([f"O9-{i:03d}" for i in range(60)], [1] * 60))
    wanted = [
        "O0-007",
        *[f"O9-{i:03d}" for i in range(0, 60, 2)],
        *[f"O9-{i:03d}x" for i in range(30)],
    ]
    assert ids(store, ORDER_PAYMENTS, IsIn("order_id", wanted)) == sorted(
        ["O0-007", *[f"O9-{i:03d}" for i in range(0, 60, 2)]]
    )


def test_a_tables_files_are_read_as_their_partitions_say_whatever_the_value(
    tmp_path: Path,
) -> None:
    """The store lists a version's files from the log itself (not delta-rs's dataset):
    partition values that paths escape, and a null one, read back as written and
    prune as delta-rs's own dataset does."""
    uri = str(tmp_path / "t")
    values = ["a b", "c/d", "ä:1", "x%y", None, "=", "e"]
    write_deltalake(uri, pa.table({"k": values, "n": range(7)}), partition_by=["k"])
    table = DeltaTable(uri)
    filesystem = pafs.SubTreeFileSystem(uri, pafs.LocalFileSystem())
    ours = _FileFragments().dataset(table, filesystem)
    theirs = table.to_pyarrow_dataset(filesystem=filesystem)
    for where in (None, pc.field("k") == "x%y", pc.field("k").is_null(), pc.field("n") > 3):
        got, want = (d.to_table(filter=where).sort_by("n") for d in (ours, theirs))
        assert got.to_pylist() == want.to_pylist() and got.num_rows
    assert len(list(ours.get_fragments(filter=pc.field("k") == "c/d"))) == 1


def test_a_files_fragment_is_kept_across_versions_until_it_leaves_the_table(
    tmp_path: Path,
) -> None:
    """A file never changes: a later version reuses its fragment (and the footer Arrow
    read into it), and a file compacted away is forgotten."""
    uri = str(tmp_path / "t")
    filesystem = pafs.SubTreeFileSystem(uri, pafs.LocalFileSystem())
    fragments = _FileFragments()
    write_deltalake(uri, pa.table({"n": [1, 2]}))
    table = DeltaTable(uri)
    fragments.dataset(table, filesystem)
    first = dict(fragments._by_path)
    write_deltalake(uri, pa.table({"n": [3]}), mode="append")
    table.update_incremental()
    assert fragments.dataset(table, filesystem).to_table().num_rows == 3
    (path,) = first
    assert len(fragments._by_path) == 2 and fragments._by_path[path] is first[path]
    table.optimize.compact()
    table.update_incremental()
    assert sorted(fragments.dataset(table, filesystem).to_table()["n"].to_pylist()) == [1, 2, 3]
    assert len(fragments._by_path) == 1 and path not in fragments._by_path
