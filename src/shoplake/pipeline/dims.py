"""The star schema's dimensions: silver.dim_customers, dim_products and dim_date.

dim_customers and dim_products hold one row per key, recomputed from the silver events
for the keys new input touches and merged in; dim_date is a fixed calendar.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.contract.tables import (
    DIM_CUSTOMERS,
    DIM_DATE,
    ORDERS,
    PRODUCT_UPDATES,
    TableSpec,
)
from shoplake.pipeline.gold import DerivedModel
from shoplake.pipeline.positions import (
    LINEAGE,
    HeldAlong,
    Positions,
    Ranges,
    in_ranges,
    positions_of,
    range_ends,
)
from shoplake.tables.base import IsIn, TableStore
from shoplake.transport.base import TopicPartition

if TYPE_CHECKING:
    from shoplake.engines.base import Input
    from shoplake.pipeline.registry import ModelDecl


class KeyedModel(DerivedModel):
    """A table of one row per key: a step recomputes the keys the new input touches from
    all of their history and merges them in. Subclasses give the SQL its input tables."""

    touched: ClassVar[str]  # the name the SQL model reads the touched keys under

    @property
    def key(self) -> str:
        (key,) = self.decl.keys
        return key

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        keys = [self.lineage(s, ranges, [self.key])[self.key] for s in self.decl.inputs]
        touched = pc.drop_null(pc.unique(pa.chunked_array(keys, pa.string())))
        return self.compute(touched), []

    def compute(self, keys: pa.Array | None) -> pa.Table:
        """Rows for ``keys`` (None: every key)."""
        raise NotImplementedError

    def _read(self, spec: TableSpec, columns: list[str], keys: pa.Array | None) -> Input:
        return self.input_rows(spec, columns, None if keys is None else IsIn(self.key, keys))

    def _run(self, inputs: dict[str, Input], keys: pa.Array | None, first: str) -> pa.Table:
        """The SQL over ``inputs``, for ``keys`` (None: every key in input ``first``, which
        the SQL then reads as the touched keys too: it reads only their key column)."""
        touched = inputs[first] if keys is None else pa.table({self.key: keys})
        return self.engine.table_over(
            self.sql, {**inputs, self.touched: touched}, {"now": datetime.now(UTC)}
        )


class DimProductsModel(KeyedModel):
    """silver.product_updates → silver.dim_products (current state of each product)."""

    touched = "touched_products"

    def compute(self, keys: pa.Array | None) -> pa.Table:
        updates = self._read(PRODUCT_UPDATES, list(PRODUCT_UPDATES.schema.names), keys)
        return self._run({"product_updates": updates}, keys, "product_updates")


# Which event a customer's country and device were taken from, per customer.
MARKS = pa.schema(
    [
        ("user_id", pa.string()),
        ("country_ts", pa.timestamp("us", tz="UTC")),
        ("country_id", pa.string()),
        ("device_ts", pa.timestamp("us", tz="UTC")),
        ("device_id", pa.string()),
    ]
)


class DimCustomersModel(KeyedModel):
    """Every event of a customer → silver.dim_customers (first/last seen, country, device).

    A step folds its new events into the customers' rows. A row is exact when it holds
    exactly the events of the positions consumed; for such a customer the model keeps
    which events its country and device came from (its marks), so every new event folds
    in exactly, however late (``_FOLD_EXACT``). Any other customer's row is folded where
    that is exact (see ``fold_customers``) or recomputed from all of their history, read
    up to the positions consumed: that makes the row exact and the customer's marks known
    from then on. (Customers are few and active, so a step touches most of them: without
    the marks, one late event in a step meant reading the whole history again.)"""

    touched = "touched_users"
    _SEEN: ClassVar[list[str]] = ["user_id", "event_id", "event_ts", "country", "device"]
    _PLACED: ClassVar[list[str]] = ["user_id", "order_id", "event_ts"]
    _MAX_MARKED = 200_000  # customers whose marks are held (least recently touched go)
    _RECOMPUTED_ALONG = 1_000  # at most, with a step's recompute (its history is read)

    def __init__(self, decl: ModelDecl[Any], store: TableStore, *args: Any, **kw: Any) -> None:
        super().__init__(decl, store, *args, **kw)
        # Rows read as Arrow can be cut to the positions consumed; an engine that reads
        # the tables itself keeps recomputing instead.
        self._exact = not self.engine.capabilities.reads_tables
        self._marks = MARKS.empty_table()  # the most recently touched last
        self._along: HeldAlong[pa.Table] = HeldAlong()  # a step's new marks

    def recompute(self, ranges: Ranges, tps: list[TopicPartition]) -> tuple[pa.Table, list[date]]:
        consumed = positions_of(self.store.open(self.spec), tps)
        if not self._along.continues(consumed):
            self._marks = MARKS.empty_table()
        seen, placed = self._new_events(ranges)
        before = self.store.open(self.spec).scan(where=IsIn("user_id", pc.unique(seen["user_id"])))
        again, counted = self._placed_before(placed, ranges, consumed)
        marked = _of(self._marks, before["user_id"], True)["user_id"]
        now = datetime.now(UTC)
        exact = self._fold_exact(
            _of(before, marked, True),
            _of(seen, marked, True),
            _of(placed, marked, True),
            counted,
            now,
        )
        marks = [exact.select(MARKS.names)]
        others = _of(seen, marked, False)
        folded, redo = fold_customers(
            _of(before, marked, False),
            others,
            _of(placed, marked, False),
            again - set(marked.to_pylist()),
            now,
        )
        if self._exact:  # a customer new to the table: their row is the new events
            fresh = _of(folded, before["user_id"], False)["user_id"]
            marks.append(self._marks_of(_of(others, fresh, True)))
        if redo and self._exact:
            folded, redo = self._take_along(folded, redo, marks)
        parts = [exact.select(DIM_CUSTOMERS.schema.names).cast(DIM_CUSTOMERS.schema), folded]
        if redo:
            redone, redone_marks = self._redo(pa.array(redo, pa.string()), ranges, consumed)
            parts.append(redone.select(folded.column_names).cast(folded.schema))
            marks.append(redone_marks)
        self._along.stage(ranges, consumed, pa.concat_tables([m.cast(MARKS) for m in marks]))
        return pa.concat_tables(parts), []

    def committed(self, ranges: Ranges, rows: pa.Table) -> None:
        staged = self._along.committed(ranges)
        if staged is None or not self._exact:
            return
        kept = pa.concat_tables([_of(self._marks, staged["user_id"], False), staged])
        self._marks = kept.slice(max(0, kept.num_rows - self._MAX_MARKED))

    def _new_events(self, ranges: Ranges) -> tuple[pa.Table, pa.Table]:
        """The step's new events of customers (``_SEEN``), and its new orders (``_PLACED``)."""
        new = {  # the orders' rows read once: they are seen events and placed orders
            s: self.lineage(s, ranges, [*self._SEEN, "order_id"] if s is ORDERS else self._SEEN)
            for s in self.decl.inputs
        }
        seen = pa.concat_tables(  # read from memory or a table: nullability may differ
            [rows.select(self._SEEN) for rows in new.values()], promote_options="permissive"
        )
        placed = new[ORDERS].select(self._PLACED)
        return (
            seen.filter(pc.is_valid(seen["user_id"])),
            placed.filter(pc.is_valid(placed["user_id"])),
        )

    def _take_along(
        self, folded: pa.Table, redo: list[str], marks: list[pa.Table]
    ) -> tuple[pa.Table, list[str]]:
        """A recompute reads every file anyway (customer ids are not clustered): it takes
        along customers of the step ``folded`` whose marks are not known (up to
        ``_RECOMPUTED_ALONG``), so after a few steps every active customer folds exactly
        and none is recomputed. The rows still folded, and the customers to recompute."""
        known = pa.concat_arrays([m["user_id"].combine_chunks() for m in marks])
        along = _of(folded, known, False)["user_id"].slice(0, self._RECOMPUTED_ALONG)
        return _of(folded, along, False), [*redo, *along.to_pylist()]

    def _fold_exact(
        self, before: pa.Table, seen: pa.Table, placed: pa.Table, counted: set[str], now: datetime
    ) -> pa.Table:
        """The exact rows ``before`` with ``seen`` and ``placed`` folded in, and their
        new marks (see ``_FOLD_EXACT``)."""
        if before.num_rows == 0:  # (always, on an engine that reads the tables itself)
            return pa.schema([*DIM_CUSTOMERS.schema, *MARKS.remove(0)]).empty_table()
        marks = _of(self._marks, before["user_id"], True)
        return self.engine.table_over(
            _FOLD_EXACT,
            {
                "before": before,
                "marks": marks,
                "seen": seen,
                "placed": placed,
                "counted": pa.table({"order_id": pa.array(counted, pa.string())}),
            },
            {"now": now},
        )

    def _marks_of(self, seen: pa.Table) -> pa.Table:
        """Each customer's marks: the latest of ``seen`` carrying a country, and a device."""
        return self.engine.table_over(_MARKS, {"seen": seen})

    def _placed_before(
        self, placed: pa.Table, ranges: Ranges, consumed: Positions
    ) -> tuple[set[str], set[str]]:
        """Of the new orders: the customers of those whose order_id has another order
        event outside ``ranges`` (counted already, or to count once), and the order_ids
        with an event among the positions consumed before this step (counted already)."""
        ids = pc.unique(placed["order_id"])
        if len(ids) == 0:
            return set(), set()
        events = self.store.open(ORDERS).scan([*LINEAGE, "order_id"], IsIn("order_id", ids))
        elsewhere = pc.unique(events.filter(pc.invert(in_ranges(events, ranges)))["order_id"])
        again = placed.filter(pc.is_in(placed["order_id"], value_set=elsewhere))
        before = {tp: (0, end) for tp, end in consumed.items()}
        counted = events.filter(in_ranges(events, before))["order_id"]
        return set(again["user_id"].to_pylist()), set(counted.to_pylist())

    def _redo(
        self, users: pa.Array, ranges: Ranges, consumed: Positions
    ) -> tuple[pa.Table, pa.Table]:
        """The rows of ``users`` from all of their history, and their marks: with rows
        read as Arrow, only the events of the positions consumed once this step commits."""
        if not self._exact:
            return self.compute(users), MARKS.empty_table()
        upto = {tp: (0, end) for tp, end in {**consumed, **range_ends(ranges)}.items()}

        def read(spec: TableSpec, columns: list[str]) -> pa.Table:
            rows = self.store.open(spec).scan([*columns, *LINEAGE], IsIn(self.key, users))
            return rows.filter(in_ranges(rows, upto)).select(columns)

        seen = [read(s, self._SEEN) for s in self.decl.inputs]
        rows = self._run({"seen": seen, "orders": read(ORDERS, self._PLACED)}, users, "seen")
        return rows, self._marks_of(pa.concat_tables(seen, promote_options="permissive"))

    def compute(self, keys: pa.Array | None) -> pa.Table:
        seen = [self._read(s, self._SEEN, keys) for s in self.decl.inputs]
        orders = self._read(ORDERS, self._PLACED, keys)
        return self._run({"seen": seen, "orders": orders}, keys, "seen")


def _of(rows: pa.Table, users: pa.Array | pa.ChunkedArray, among: bool) -> pa.Table:
    """The rows of ``users`` (``among``), or of everyone else."""
    mask = pc.is_in(rows["user_id"], value_set=pc.unique(users).cast(pa.string()))
    return rows.filter(mask if among else pc.invert(mask))


# A customer's marks from events ``seen``: the latest (event_ts, event_id) carrying each.
_MARKS = """
SELECT user_id, country.ts AS country_ts, country.id AS country_id,
       device.ts AS device_ts, device.id AS device_id
FROM (
    SELECT user_id,
           MAX(struct_pack(ts := event_ts, id := event_id)) FILTER (WHERE country IS NOT NULL)
               AS country,
           MAX(struct_pack(ts := event_ts, id := event_id)) FILTER (WHERE device IS NOT NULL)
               AS device
    FROM seen
    GROUP BY user_id
) latest
"""

# Exact rows ``before`` with their ``marks``, and the new events ``seen`` and orders
# ``placed`` folded in, whatever their times: first/last seen and order times are minima
# and maxima; an order counts unless its order_id is ``counted`` already (or twice among
# the new); a country or device is taken from a new event later, by (event_ts, event_id),
# than the one it came from. The rows and their new marks.
_FOLD_EXACT = """
WITH spans AS (
    SELECT user_id, MIN(event_ts) AS first_ts, MAX(event_ts) AS last_ts,
           MAX(struct_pack(ts := event_ts, id := event_id, v := country))
               FILTER (WHERE country IS NOT NULL) AS new_country,
           MAX(struct_pack(ts := event_ts, id := event_id, v := device))
               FILTER (WHERE device IS NOT NULL) AS new_device
    FROM seen
    GROUP BY user_id
),
orders AS (
    SELECT p.user_id, MIN(p.event_ts) AS first_order, MAX(p.event_ts) AS last_order,
           COUNT(DISTINCT CASE WHEN c.order_id IS NULL THEN p.order_id END) AS fresh
    FROM placed p
    LEFT JOIN counted c ON c.order_id = p.order_id
    GROUP BY p.user_id
),
folded AS (
    SELECT b.*, s.first_ts, s.last_ts, s.new_country, s.new_device,
           m.country_ts, m.country_id, m.device_ts, m.device_id,
           o.first_order, o.last_order, o.fresh,
           s.new_country IS NOT NULL AND (
               m.country_ts IS NULL OR s.new_country.ts > m.country_ts
               OR (s.new_country.ts = m.country_ts AND s.new_country.id > m.country_id)
           ) AS country_later,
           s.new_device IS NOT NULL AND (
               m.device_ts IS NULL OR s.new_device.ts > m.device_ts
               OR (s.new_device.ts = m.device_ts AND s.new_device.id > m.device_id)
           ) AS device_later
    FROM before b
    JOIN spans s ON s.user_id = b.user_id
    JOIN marks m ON m.user_id = b.user_id
    LEFT JOIN orders o ON o.user_id = b.user_id
)
SELECT user_id,
       CASE WHEN country_later THEN new_country.v ELSE country END AS country,
       CASE WHEN device_later THEN new_device.v ELSE device END AS device,
       LEAST(first_seen_ts, first_ts) AS first_seen_ts,
       GREATEST(last_seen_ts, last_ts) AS last_seen_ts,
       orders_placed + COALESCE(fresh, 0) AS orders_placed,
       LEAST(first_order_ts, first_order) AS first_order_ts,
       GREATEST(last_order_ts, last_order) AS last_order_ts,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS updated_ts,
       CASE WHEN country_later THEN new_country.ts ELSE country_ts END AS country_ts,
       CASE WHEN country_later THEN new_country.id ELSE country_id END AS country_id,
       CASE WHEN device_later THEN new_device.ts ELSE device_ts END AS device_ts,
       CASE WHEN device_later THEN new_device.id ELSE device_id END AS device_id
FROM folded
"""


def fold_customers(
    before: pa.Table, seen: pa.Table, placed: pa.Table, again: set[str], now: datetime
) -> tuple[pa.Table, list[str]]:
    """dim_customers rows ``before`` with new events ``seen`` (user_id, event_id, event_ts,
    country, device) and new orders ``placed`` (user_id, order_id, event_ts) folded in,
    and the customers whose rows cannot be, to recompute:

    - those in ``again`` (a new order's id was placed before: it must count once);
    - those with a new order at or before their row's last_seen_ts (the row may hold it
      already: it may come from older code or another process, which read beyond the
      positions they consumed);
    - those with a new event at or before last_seen_ts that carries another country or
      device than the row's (it may or may not be later than the event that set it).

    Every other new event is later than anything in the row, or changes nothing in it."""
    rows = {r["user_id"]: r for r in before.to_pylist()}
    redo = set(again) | _late(placed, before) | _late(seen, before, contradicting=True)
    spans = seen.group_by("user_id").aggregate([("event_ts", "min"), ("event_ts", "max")])
    latest = {c: _latest(seen, c) for c in ("country", "device")}
    orders = {
        r["user_id"]: r
        for r in placed.group_by("user_id")
        .aggregate([("order_id", "count_distinct"), ("event_ts", "min"), ("event_ts", "max")])
        .to_pylist()
    }
    folded = []
    for span in spans.to_pylist():
        user = span["user_id"]
        if user in redo:
            continue
        old = rows.get(user)
        row = old or {
            "user_id": user, "country": None, "device": None, "first_seen_ts": span["event_ts_min"],
            "last_seen_ts": span["event_ts_max"], "orders_placed": 0, "first_order_ts": None,
            "last_order_ts": None,
        }  # fmt: skip
        later = span["event_ts_max"] > row["last_seen_ts"]
        row["first_seen_ts"] = min(row["first_seen_ts"], span["event_ts_min"])
        row["last_seen_ts"] = max(row["last_seen_ts"], span["event_ts_max"])
        for column, values in latest.items():
            if later or old is None:  # else the new ones agree with the row (see above)
                row[column] = values.get(user, row[column])
        new = orders.get(user)
        if new is not None:  # later than any order in the row
            row["orders_placed"] += new["order_id_count_distinct"]
            row["first_order_ts"] = row["first_order_ts"] or new["event_ts_min"]
            row["last_order_ts"] = new["event_ts_max"]
        row["updated_ts"] = now
        folded.append(row)
    return pa.Table.from_pylist(folded, schema=DIM_CUSTOMERS.schema), sorted(redo)


def _late(events: pa.Table, before: pa.Table, *, contradicting: bool = False) -> set[str]:
    """Customers with one of ``events`` at or before their row's last_seen_ts (with
    ``contradicting``: only such events carrying another country or device)."""
    rows = before.select(["user_id", "last_seen_ts", "country", "device"]).rename_columns(
        ["user_id", "row_last_seen", "row_country", "row_device"]
    )
    late = events.join(rows, "user_id", join_type="inner")
    late = late.filter(pc.less_equal(late["event_ts"], late["row_last_seen"]))
    if contradicting:
        other = [
            pc.and_(
                pc.is_valid(late[c]),
                pc.fill_null(pc.not_equal(late[c], late[f"row_{c}"]), True),
            )
            for c in ("country", "device")
        ]
        late = late.filter(pc.or_(*other))
    return set(late["user_id"].to_pylist())


def _latest(seen: pa.Table, column: str) -> dict[str, str]:
    """Each customer's ``column`` on their latest event that carries one (latest by
    event_ts, then event_id, as the SQL orders them)."""
    carrying = seen.filter(pc.is_valid(seen[column])).sort_by(
        [("user_id", "ascending"), ("event_ts", "descending"), ("event_id", "descending")]
    )
    firsts = carrying.group_by("user_id", use_threads=False).aggregate([(column, "first")])
    return dict(
        zip(firsts["user_id"].to_pylist(), firsts[f"{column}_first"].to_pylist(), strict=True)
    )


# dim_date spans these years: wide enough for any shop's history and plans.
CALENDAR_YEARS = (2000, 2049)


def calendar_rows(first: date, last: date) -> pa.Table:
    """dim_date rows from ``first`` to ``last`` inclusive (ISO weeks, Monday = 1)."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    iso = [d.isocalendar() for d in days]
    return pa.table(
        {
            "date_key": [d.year * 10000 + d.month * 100 + d.day for d in days],
            "date": days,
            "year": [d.year for d in days],
            "quarter": [(d.month - 1) // 3 + 1 for d in days],
            "month": [d.month for d in days],
            "month_name": [calendar.month_name[d.month] for d in days],
            "day_of_month": [d.day for d in days],
            "day_of_week": [c.weekday for c in iso],
            "day_name": [calendar.day_name[d.weekday()] for d in days],
            "iso_week": [c.week for c in iso],
            "is_weekend": [c.weekday >= 6 for c in iso],
        }
    ).cast(DIM_DATE.schema)


def ensure_dim_date(store: TableStore) -> None:
    """Create silver.dim_date with the calendar, once."""
    if store.exists(DIM_DATE) and store.open(DIM_DATE).count() > 0:
        return
    store.ensure(DIM_DATE)
    first, last = CALENDAR_YEARS
    store.append(DIM_DATE, calendar_rows(date(first, 1, 1), date(last, 12, 31)))
