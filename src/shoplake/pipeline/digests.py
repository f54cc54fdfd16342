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
again (``Digest.regroup_sql``); once it has committed, those groups replace theirs in the
held table (a DELETE and an INSERT of the step's size, where the other groups stay).

Held days are valid for the positions of every partition the model had consumed when
they were kept: when the model's positions are anything else at the next step (another
worker moved them, a rewind), they are dropped and the days read again.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from shoplake.engines.base import HeldQuery, registered
from shoplake.pipeline.positions import LINEAGE, HeldAlong, Positions, in_ranges, range_ends

if TYPE_CHECKING:
    from shoplake.contract.tables import TableSpec
    from shoplake.engines.base import Engine, Input
    from shoplake.pipeline.positions import Ranges

log = logging.getLogger(__name__)

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

    def on(self, held: str, other: str) -> str:
        """Rows of ``held`` and ``other`` (aliases) in the same group: NULL keys too."""
        return " AND ".join(
            f"{held}.{c} IS NOT DISTINCT FROM {other}.{c}" for c in (_DAY, *self.keys)
        )

    def regroup_sql(self, held: str) -> str:
        """``new_rows`` (a step's, as ``sql`` compacts them) of the days in ``held_days``
        compacted together with the groups of ``held`` (a table of compacted days) they
        fall in: the rows that replace those groups. The aggregate is the size of the new
        rows; ``held`` is only probed."""
        return f"""
WITH fresh AS (
    SELECT * FROM ({self.sql("new_rows")}) compacted
    WHERE {_DAY} IN (SELECT day FROM held_days)
),
regrouped AS (
    SELECT h.* EXCLUDE ({_DAY}) FROM {held} h SEMI JOIN fresh f ON {self.on("h", "f")}
    UNION ALL BY NAME
    SELECT * EXCLUDE ({_DAY}) FROM fresh
)
{self.sql("regrouped")}
"""

    def read_sql(self, held: str, staged: str, days: list[date]) -> str:
        """The digest of ``days``: the ``held`` table's rows with the groups ``staged``
        holds (a step's, not yet kept) replaced by them."""
        of_days = f"{_DAY} IN ({_dates(days)})"
        return f"""
SELECT * EXCLUDE ({_DAY}) FROM (
    SELECT h.* FROM (SELECT * FROM {held} WHERE {of_days}) h
    ANTI JOIN {staged} s ON {self.on("h", "s")}
    UNION ALL BY NAME
    SELECT * FROM {staged} WHERE {of_days}
) digest
"""


def _dates(days: Sequence[date]) -> str:
    return ", ".join(f"DATE '{d.isoformat()}'" for d in days)


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
    model has consumed in this process. They are tables of the engine
    (``capabilities.holds_tables``): read in place by the model's SQL, changed in place
    by a step, and spilled to disk past the engine's memory limit rather than held on
    this process's heap.

    ``inputs`` gives a step's inputs for its touched days: held days with the step's new
    rows folded in; any other day is read from the table and compacted too. What a step
    changes is staged beside the held table and applied only once the step has committed
    (``keep``): a step that fails leaves the held days as they were, for the ranges it
    did not consume."""

    _made = itertools.count()  # tables of different models may share an engine
    CHECKPOINT_EVERY = 10  # kept steps (a live lane keeps one every ~5 s)

    def __init__(
        self, digests: Mapping[TableSpec, Digest], engine: Engine, max_days: int = 3
    ) -> None:
        self.digests = dict(digests)
        self.engine = engine
        self.max_days = max_days
        n = next(self._made)
        # each input's held table, and the one a step stages its changed groups in
        self._tables = {
            spec: (f"digest_{n}_{spec.name}", f"digest_{n}_{spec.name}_staged")
            for spec in self.digests
        }
        self._kept = 0  # steps whose groups were applied
        self._days: OrderedDict[date, None] = OrderedDict()  # held, least recent first
        # a step's touched days, and those it keeps
        self._along: HeldAlong[tuple[list[date], list[date]]] = HeldAlong()

    def inputs(
        self, ranges: Ranges, own: Positions, days: list[date], new: ReadNew, read: ReadDays
    ) -> dict[TableSpec, HeldQuery]:
        """Each digested input of the model for ``days``, compacted, given the step's
        new rows (``new``), a way to read whole days (``read``) and the positions of
        every partition the model has consumed before this step (``own``)."""
        if not self._along.continues(own):
            self.clear()
        consumed = {**own, **range_ends(ranges)}
        held = [d for d in days if d in self._days]
        missed = [d for d in days if d not in self._days]
        given = {}
        for spec, digest in self.digests.items():
            table, staged = self._tables[spec]
            parts: list[str] = []
            inputs: dict[str, Input] = {}
            rows = new(spec, ranges, list(digest.columns)) if held else None
            if rows is not None and rows.num_rows:
                parts.append(digest.regroup_sql(table))
                inputs["new_rows"] = weighed(rows) if digest.counted else rows
                inputs["held_days"] = pa.table({"day": pa.array(held, pa.date32())})
            if missed:
                parts.append(f"SELECT * FROM ({digest.sql()}) WHERE {_DAY} IN ({_dates(missed)})")
                inputs["rows"] = self._read(spec, digest, consumed, missed, read)
            if not parts:  # (``days`` is not empty: the table exists when none is missed)
                parts.append(f"SELECT * FROM {table} LIMIT 0")
            union = "\nUNION ALL BY NAME\n".join(f"SELECT * FROM ({part})" for part in parts)
            self._run(f"CREATE OR REPLACE TABLE {staged} AS {union}", inputs)
            if not self._days:  # (nothing held: the held table may not exist yet)
                self.engine.execute(f"CREATE TABLE IF NOT EXISTS {table} AS FROM {staged} LIMIT 0")
            given[spec] = HeldQuery(digest.read_sql(table, staged, days))
        # The latest days: today's is touched again by the next step, though the step
        # also took late events of other days (or a backfill many).
        self._along.stage(ranges, own, (days, sorted(days)[-self.max_days :]))
        return given

    def _read(
        self,
        spec: TableSpec,
        digest: Digest,
        consumed: Positions,
        days: list[date],
        read: ReadDays,
    ) -> Input:
        """The rows of ``days`` the digest compacts: of a counted one, only the rows
        below the positions the step consumes (each row is counted once)."""
        if not digest.counted:
            return read(spec, digest.columns, days)
        day_rows = read(spec, [*digest.columns, *LINEAGE], days)
        assert isinstance(day_rows, pa.Table)  # digests are held where rows pass here
        below = {tp: (0, end) for tp, end in consumed.items()}
        return weighed(day_rows.filter(in_ranges(day_rows, below)).select(list(digest.columns)))

    def _run(self, sql: str, inputs: Mapping[str, Input]) -> None:
        with registered(self.engine, inputs):
            self.engine.execute(sql)

    def keep(self, ranges: Ranges) -> None:
        """The step that asked for ``inputs`` over ``ranges`` has committed: apply its
        staged groups to the held days (a touched day it did not keep is dropped: it has
        missed rows)."""
        step = self._along.committed(ranges)
        if step is None:
            return
        days, keep = step
        for day in days:
            self._days.pop(day, None)
        self._days.update(dict.fromkeys(sorted(keep)))
        gone = [d for d in days if d not in keep]
        while len(self._days) > self.max_days:
            gone.append(self._days.popitem(last=False)[0])
        not_gone = f" WHERE {_DAY} NOT IN ({_dates(gone)})" if gone else ""
        try:
            for spec, digest in self.digests.items():
                table, staged = self._tables[spec]
                self.engine.execute(
                    f"DELETE FROM {table} h USING {staged} s WHERE {digest.on('h', 's')}"
                )
                if gone:
                    self.engine.execute(f"DELETE FROM {table} WHERE {_DAY} IN ({_dates(gone)})")
                self.engine.execute(f"INSERT INTO {table} BY NAME FROM {staged}{not_gone}")
                self.engine.execute(f"DROP TABLE {staged}")
            self._kept += 1
            if self._kept % self.CHECKPOINT_EVERY == 0:
                # Compresses what changed since (an in-memory database does not on its
                # own): the held rows take ~40% of the memory (docs/benchmarks.md).
                self.engine.execute("CHECKPOINT")
        except Exception as exc:  # the step has committed: its model goes on reading days
            held = ", ".join(table for table, _ in self._tables.values())
            log.warning("day digests %s dropped, the next step reads its days: %s", held, exc)
            self.clear()  # half applied: hold nothing rather than something wrong
        except BaseException:
            self.clear()
            raise

    def clear(self) -> None:
        self._days.clear()
        self._along.reset()
        for tables in self._tables.values():
            for name in tables:
                self.engine.execute(f"DROP TABLE IF EXISTS {name}")

    def held_rows(self) -> int:
        """Rows held (for benchmarks and tests)."""
        if not self._days:
            return 0
        counts = " UNION ALL ".join(
            f"SELECT count(*) AS n FROM {table}" for table, _ in self._tables.values()
        )
        return int(self.engine.table(f"SELECT sum(n) AS n FROM ({counts})")["n"][0].as_py())
