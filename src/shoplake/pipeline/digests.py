"""Day digests: a daily model's inputs held compacted between steps, so a step folds its
new rows into the day instead of reading the whole day again.

A digest keeps, per reporting day and value of its key columns, the group's first row
(least by its ``first`` columns). A model whose SQL reads an input only through distinct
values of those keys and the first row of a group (COUNT DISTINCT, MIN, the first view of
a session; no COUNT(*) or SUM) computes the same rows from the digest as from the raw
rows. Compacting is idempotent: folding in rows the digest already holds changes nothing,
so a day read from the table a little past the consumed positions is still exact. A key
the SQL only compares with a few values (``only``) is held as one of those or NULL.

A *counted* digest keeps each group's row count too (``WEIGHT``; a raw row weighs 1), for
SQL that counts rows as ``SUM(weight)``: it is as small as the day's groups (its
products), however many rows the day has. Counting is not idempotent, so each row is
folded in once: a held day takes exactly the step's new rows, a day read from the table
only its rows below the positions the step consumes (by their lineage).

A step compacts only its new rows and, of the held days, only the groups they fall in
again (``Digest.merge_sql``); the other held groups are carried over as they are (a hash
probe and a copy, no aggregate).

Held days are valid for the positions of every partition the model had consumed when
they were kept: when the model's positions are anything else at the next step (another
worker moved them, a rewind), they are dropped and the days read again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shoplake.pipeline.positions import LINEAGE, HeldAlong, Positions, in_ranges, range_ends

if TYPE_CHECKING:
    from shoplake.contract.tables import TableSpec
    from shoplake.engines.base import Engine, Input
    from shoplake.pipeline.positions import Ranges

_DAY = "_digest_day"  # the reporting day of a compacted row, kept beside it
WEIGHT = "weight"  # of a counted digest's row: how many raw rows it stands for


def weighed(rows: pa.Table) -> pa.Table:
    """Raw rows of an input whose SQL counts rows as ``SUM(weight)``: each weighs 1."""
    return rows.append_column(WEIGHT, pa.array(np.ones(rows.num_rows, np.int64)))


@dataclass(frozen=True)
class Digest:
    """How a model may read one input compacted: one row per reporting day and ``keys``,
    the group's least by ``first`` (which starts with event_ts, the column days are cut
    on); ``counted``: with the group's WEIGHT; ``only``: key columns the SQL only compares
    with these values, any other held as NULL (so a session's page views make a row for
    its product views, one for its checkout views and one for the rest)."""

    keys: tuple[str, ...]
    first: tuple[str, ...]
    counted: bool = False
    only: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.first[:1] != ("event_ts",):
            raise ValueError("a digest's first row is chosen by event_ts first")
        if not {column for column, _ in self.only} <= set(self.keys):
            raise ValueError("a digest narrows only its key columns")

    @property
    def columns(self) -> tuple[str, ...]:
        """The input's columns it holds (a counted one holds WEIGHT besides)."""
        return (*self.keys, *self.first)

    def sql(self, rows: str = "rows") -> str:
        """Compacts ``rows`` (the digest's columns, and WEIGHT if counted) into the
        digest, with each row's day: a hash aggregate, the least of ``first`` taken as
        one struct."""
        keys = ", ".join(self.keys)
        narrowed = dict(self.only)
        held = ", ".join(
            f"CASE WHEN {c} IN ({', '.join(_quoted(v) for v in narrowed[c])}) THEN {c} END AS {c}"
            if c in narrowed
            else c
            for c in self.keys
        )
        first = ", ".join(f"{c} := {c}" for c in self.first)
        summed, weight = (
            (f", SUM({WEIGHT}) AS {WEIGHT}", f", {WEIGHT}") if self.counted else ("", "")
        )
        return f"""
SELECT {keys}, {", ".join(f"_first.{c} AS {c}" for c in self.first)}{weight}, {_DAY} FROM (
    SELECT {keys}, local_date(event_ts) AS {_DAY}, min(struct_pack({first})) AS _first{summed}
    FROM (SELECT {held}, {", ".join(self.first)}{weight} FROM {rows}) narrowed
    GROUP BY local_date(event_ts), {keys}
) grouped
"""

    def merge_sql(self) -> str:
        """``new_rows`` (a step's, as ``sql`` compacts them) of the days in ``held_days``
        folded into ``held`` (compacted days): the held groups they fall in are
        compacted again with them, the others carried over as they are (the aggregate is
        the size of the new rows; ``held`` is only probed and copied)."""
        on = " AND ".join(f"h.{c} IS NOT DISTINCT FROM f.{c}" for c in (_DAY, *self.keys))
        return f"""
WITH fresh AS (
    SELECT * FROM ({self.sql("new_rows")}) compacted
    WHERE {_DAY} IN (SELECT day FROM held_days)
),
regrouped AS (
    SELECT h.* EXCLUDE ({_DAY}) FROM held h SEMI JOIN fresh f ON {on}
    UNION ALL BY NAME
    SELECT * EXCLUDE ({_DAY}) FROM fresh
)
SELECT h.* FROM held h ANTI JOIN fresh f ON {on}
UNION ALL BY NAME
{self.sql("regrouped")}
"""


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# Reads a table's rows of some days: (spec, columns, days) → the rows (days cut in UTC, so
# with some of the neighbouring days'), as the model reads an input by day.
ReadDays = Callable[["TableSpec", Sequence[str], list[date]], "Input"]
# The rows of a table whose lineage lies in the step's ranges.
ReadNew = Callable[["TableSpec", "Ranges", list[str]], pa.Table]


class DayDigests:
    """The digests of one model's inputs for the days it touched last (at most
    ``max_days``, least recently touched dropped first), valid for the positions the
    model has consumed in this process.

    ``inputs`` gives a step's inputs for its touched days: held days with the step's new
    rows folded in; any other day is read from the table and compacted too. The new
    digests are kept only once the step has committed (``keep``): a step that fails
    leaves the held ones as they were, for the ranges it did not consume."""

    def __init__(
        self, digests: Mapping[TableSpec, Digest], engine: Engine, max_days: int = 3
    ) -> None:
        self.digests = dict(digests)
        self.engine = engine
        self.max_days = max_days
        self._days: OrderedDict[date, None] = OrderedDict()  # held, least recent first
        self._held: dict[TableSpec, pa.Table] = {}  # each input's digest of those days
        # a step's touched days, those it keeps, and every input's digest of the held days
        self._along: HeldAlong[tuple[list[date], list[date], dict[TableSpec, pa.Table]]]
        self._along = HeldAlong()

    def inputs(
        self, ranges: Ranges, own: Positions, days: list[date], new: ReadNew, read: ReadDays
    ) -> dict[TableSpec, pa.Table]:
        """Each digested input of the model for ``days``, compacted, given the step's
        new rows (``new``), a way to read whole days (``read``) and the positions of
        every partition the model has consumed before this step (``own``)."""
        if not self._along.continues(own):
            self.clear()
        consumed = {**own, **range_ends(ranges)}
        held = [d for d in days if d in self._days]
        missed = [d for d in days if d not in self._days]
        # The latest days: today's is touched again by the next step, though the step
        # also took late events of other days (or a backfill many).
        keep = sorted(days)[-self.max_days :]
        dropped = [d for d in days if d not in keep]  # touched, not kept: would go stale
        staged: dict[TableSpec, pa.Table] = {}
        compacted: dict[TableSpec, pa.Table] = {}
        for spec, digest in self.digests.items():
            parts: list[pa.Table] = []
            if self._days:  # every held day, the touched ones with their new rows
                parts.append(self._merged(spec, digest, held, new, ranges))
            if missed:
                parts.append(self._read(spec, digest, consumed, missed, read))
            table = pa.concat_tables(parts)  # (``days`` is not empty: one part at least)
            staged[spec] = _without_days(table, dropped)
            compacted[spec] = _of_days(table, days).drop_columns([_DAY])
        self._along.stage(ranges, own, (days, keep, staged))
        return compacted

    def _merged(
        self, spec: TableSpec, digest: Digest, held: list[date], new: ReadNew, ranges: Ranges
    ) -> pa.Table:
        """The held digest with the step's new rows of the ``held`` days folded in (new
        rows of other days are in those days' reads)."""
        rows = new(spec, ranges, list(digest.columns)) if held else None
        if rows is None or not rows.num_rows:
            return self._held[spec]
        return self.engine.table_over(
            digest.merge_sql(),
            {
                "held": self._held[spec],
                "new_rows": weighed(rows) if digest.counted else rows,
                "held_days": pa.table({"day": pa.array(held, pa.date32())}),
            },
        )

    def _read(
        self,
        spec: TableSpec,
        digest: Digest,
        consumed: Positions,
        days: list[date],
        read: ReadDays,
    ) -> pa.Table:
        """The digest of ``days`` read from the table: of a counted one, only the rows
        below the positions the step consumes (each row is counted once)."""
        columns = list(digest.columns)
        if not digest.counted:
            rows: Input = read(spec, digest.columns, days)
        else:
            day_rows = read(spec, [*columns, *LINEAGE], days)
            assert isinstance(day_rows, pa.Table)  # digests are held where rows pass here
            below = {tp: (0, end) for tp, end in consumed.items()}
            rows = weighed(day_rows.filter(in_ranges(day_rows, below)).select(columns))
        return _of_days(self.engine.table_over(digest.sql(), {"rows": rows}), days)

    def keep(self, ranges: Ranges) -> None:
        """The step that asked for ``inputs`` over ``ranges`` has committed: hold its
        days' digests (a touched day it did not keep is dropped: it has missed rows)."""
        step = self._along.committed(ranges)
        if step is None:
            return
        days, keep, staged = step
        for day in days:
            self._days.pop(day, None)
        self._days.update(dict.fromkeys(sorted(keep)))
        evicted = []
        while len(self._days) > self.max_days:
            evicted.append(self._days.popitem(last=False)[0])
        self._held = {spec: _without_days(t, evicted) for spec, t in staged.items()}

    def clear(self) -> None:
        self._days.clear()
        self._held.clear()
        self._along.reset()

    def held_rows(self) -> int:
        return sum(t.num_rows for t in self._held.values())


def _of_days(table: pa.Table, days: list[date]) -> pa.Table:
    """The rows of ``table`` (a digest with each row's day) that fall on ``days``: the
    table itself when they all do (a held day is most of a pass's memory: not copied)."""
    wanted = pa.array(days, pa.date32())
    if pc.all(pc.is_in(pc.unique(table[_DAY]), wanted)).as_py() is not False:
        return table
    return table.filter(pc.is_in(table[_DAY], wanted))


def _without_days(table: pa.Table, days: list[date]) -> pa.Table:
    if not days:
        return table
    return table.filter(pc.invert(pc.is_in(table[_DAY], pa.array(days, pa.date32()))))
