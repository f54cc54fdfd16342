"""Day digests: a daily model's inputs held compacted between steps, so a step folds its
new rows into the day instead of reading the whole day again.

A digest keeps, per reporting day and value of its key columns, the group's first row
(least by its ``first`` columns). A model whose SQL reads an input only through distinct
values of those keys and the first row of a group (COUNT DISTINCT, MIN, the first view of
a session; no COUNT(*) or SUM) computes the same rows from the digest as from the raw
rows. Compacting is idempotent: folding in rows the digest already holds changes nothing,
so a day read from the table a little past the consumed positions is still exact.

A *counted* digest keeps each group's row count too (``WEIGHT``; a raw row weighs 1), for
SQL that counts rows as ``SUM(weight)``: it is as small as the day's groups (its
products), however many rows the day has. Counting is not idempotent, so each row is
folded in once: a held day takes exactly the step's new rows, a day read from the table
only its rows below the positions the step consumes (by their lineage).

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
    on); ``counted``: with the group's WEIGHT."""

    keys: tuple[str, ...]
    first: tuple[str, ...]
    counted: bool = False

    def __post_init__(self) -> None:
        if self.first[:1] != ("event_ts",):
            raise ValueError("a digest's first row is chosen by event_ts first")

    @property
    def columns(self) -> tuple[str, ...]:
        """The input's columns it holds (a counted one holds WEIGHT besides)."""
        return (*self.keys, *self.first)

    def sql(self) -> str:
        """Compacts ``rows`` (the digest's columns, and WEIGHT if counted) into the
        digest, with each row's day: a hash aggregate, the least of ``first`` taken as
        one struct."""
        keys = ", ".join(self.keys)
        first = ", ".join(f"{c} := {c}" for c in self.first)
        summed, weight = (
            (f", SUM({WEIGHT}) AS {WEIGHT}", f", {WEIGHT}") if self.counted else ("", "")
        )
        return f"""
SELECT {keys}, {", ".join(f"_first.{c} AS {c}" for c in self.first)}{weight}, {_DAY} FROM (
    SELECT {keys}, local_date(event_ts) AS {_DAY}, min(struct_pack({first})) AS _first{summed}
    FROM rows
    GROUP BY local_date(event_ts), {keys}
) grouped
"""


# Reads a table's rows of some days: (spec, columns, days) → the rows (days cut in UTC, so
# with some of the neighbouring days'), as the model reads an input by day.
ReadDays = Callable[["TableSpec", Sequence[str], list[date]], "Input"]
# The rows of a table whose lineage lies in the step's ranges.
ReadNew = Callable[["TableSpec", "Ranges", list[str]], pa.Table]


class DayDigests:
    """The digests of one model's inputs for the days it touched last (at most
    ``max_days``, least recently touched dropped first), valid for the positions the
    model has consumed in this process.

    ``inputs`` gives a step's inputs for its touched days: a held day is its digest with
    the step's new rows folded in; any other day is read from the table and compacted too.
    The new digests are kept only once the step has committed (``keep``): a step that
    fails leaves the held ones as they were, for the ranges it did not consume."""

    def __init__(
        self, digests: Mapping[TableSpec, Digest], engine: Engine, max_days: int = 3
    ) -> None:
        self.digests = dict(digests)
        self.engine = engine
        self.max_days = max_days
        self._held: OrderedDict[date, dict[TableSpec, pa.Table]] = OrderedDict()
        # the days a step touched, and the digests of those it may keep
        self._along: HeldAlong[tuple[list[date], dict[date, dict[TableSpec, pa.Table]]]]
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
        held = [d for d in days if d in self._held]
        missed = [d for d in days if d not in self._held]
        # The latest days: today's is touched again by the next step, though the step
        # also took late events of other days (or a backfill many).
        keep = sorted(days)[-self.max_days :]
        staged: dict[date, dict[TableSpec, pa.Table]] = {d: {} for d in keep}
        compacted: dict[TableSpec, pa.Table] = {}
        for spec, digest in self.digests.items():
            if digest.counted:
                table = self._counted(spec, digest, ranges, consumed, held, missed, new, read)
            else:
                parts: list[Input] = [self._held[d][spec] for d in held]
                if held:  # (rows of a missed day among them are in its read too: harmless)
                    parts.append(new(spec, ranges, list(digest.columns)))
                if missed:
                    parts.append(read(spec, digest.columns, missed))
                table = self.engine.table_over(digest.sql(), {"rows": parts})
            for day in keep:
                mine = table.filter(pc.equal(table[_DAY], pa.scalar(day, pa.date32())))
                staged[day][spec] = mine.drop_columns([_DAY])
            compacted[spec] = table.drop_columns([_DAY])
        self._along.stage(ranges, own, (days, staged))
        return compacted

    def _counted(
        self,
        spec: TableSpec,
        digest: Digest,
        ranges: Ranges,
        consumed: Positions,
        held: list[date],
        missed: list[date],
        new: ReadNew,
        read: ReadDays,
    ) -> pa.Table:
        """A counted digest of ``held`` and ``missed`` days, each row counted once: the
        held days with the step's new rows of those days, the missed ones read from the
        table up to ``consumed``."""
        parts: list[pa.Table] = []
        columns = list(digest.columns)
        if held:
            rows = [self._held[d][spec] for d in held]
            rows.append(weighed(new(spec, ranges, columns)))
            parts.append(self._of_days(digest, rows, held))
        if missed:
            day_rows = read(spec, [*columns, *LINEAGE], missed)
            assert isinstance(day_rows, pa.Table)  # digests are held where rows pass here
            below = {tp: (0, end) for tp, end in consumed.items()}
            day_rows = day_rows.filter(in_ranges(day_rows, below)).select(columns)
            parts.append(self._of_days(digest, [weighed(day_rows)], missed))
        return pa.concat_tables(parts)

    def _of_days(self, digest: Digest, rows: list[pa.Table], days: list[date]) -> pa.Table:
        """``rows`` compacted, of ``days`` only (new rows or a read hold other days')."""
        table = self.engine.table_over(digest.sql(), {"rows": rows})
        return table.filter(pc.is_in(table[_DAY], pa.array(days, pa.date32())))

    def keep(self, ranges: Ranges) -> None:
        """The step that asked for ``inputs`` over ``ranges`` has committed: hold its
        days' digests (a touched day it did not keep is dropped: it has missed rows)."""
        step = self._along.committed(ranges)
        if step is None:
            return
        days, staged = step
        for day in days:
            if day in staged:
                self._held[day] = staged[day]
                self._held.move_to_end(day)
            else:
                self._held.pop(day, None)
        while len(self._held) > self.max_days:
            self._held.popitem(last=False)

    def clear(self) -> None:
        self._held.clear()
        self._along.reset()

    def held_rows(self) -> int:
        return sum(t.num_rows for tables in self._held.values() for t in tables.values())
