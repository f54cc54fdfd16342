"""Day digests: a daily model's inputs held compacted between steps, so a step folds its
new rows into the day instead of reading the whole day again.

A digest keeps, per reporting day and value of its key columns, the group's first row
(least by its ``first`` columns). A model whose SQL reads an input only through distinct
values of those keys and the first row of a group (COUNT DISTINCT, MIN, the first view of
a session; no COUNT(*) or SUM) computes the same rows from the digest as from the raw
rows. Compacting is idempotent: folding in rows the digest already holds changes nothing,
so a day read from the table a little past the consumed positions is still exact.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from shoplake.pipeline.positions import HeldAlong

if TYPE_CHECKING:
    from shoplake.contract.tables import TableSpec
    from shoplake.engines.base import Engine, Input
    from shoplake.pipeline.positions import Ranges

_DAY = "_digest_day"  # the reporting day of a compacted row, kept beside it


@dataclass(frozen=True)
class Digest:
    """How a model may read one input compacted: one row per reporting day and ``keys``,
    the group's least by ``first`` (which starts with event_ts, the column days are cut
    on)."""

    keys: tuple[str, ...]
    first: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.first[:1] != ("event_ts",):
            raise ValueError("a digest's first row is chosen by event_ts first")

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.keys, *self.first)

    def sql(self) -> str:
        """Compacts ``rows`` (the digest's columns) into the digest, with each row's day:
        a hash aggregate, the least of ``first`` taken as one struct."""
        keys = ", ".join(self.keys)
        first = ", ".join(f"{c} := {c}" for c in self.first)
        return f"""
SELECT {keys}, {", ".join(f"_first.{c} AS {c}" for c in self.first)}, {_DAY} FROM (
    SELECT {keys}, local_date(event_ts) AS {_DAY}, min(struct_pack({first})) AS _first
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
        self, ranges: Ranges, days: list[date], new: ReadNew, read: ReadDays
    ) -> dict[TableSpec, pa.Table]:
        """Each digested input of the model for ``days``, compacted, given the step's
        new rows (``new``) and a way to read whole days (``read``)."""
        if not self._along.continues(ranges):
            self.clear()
        held = [d for d in days if d in self._held]
        missed = [d for d in days if d not in self._held]
        # The latest days: today's is touched again by the next step, though the step
        # also took late events of other days (or a backfill many).
        keep = sorted(days)[-self.max_days :]
        staged: dict[date, dict[TableSpec, pa.Table]] = {d: {} for d in keep}
        compacted: dict[TableSpec, pa.Table] = {}
        for spec, digest in self.digests.items():
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
        self._along.stage(ranges, (days, staged))
        return compacted

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
