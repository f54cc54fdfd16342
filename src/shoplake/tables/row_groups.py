"""The row groups of a dataset that may hold any of a long list of keys.

Arrow prunes files and row groups by their statistics for a short ``isin`` list only
(~50 values); a longer one reads every row group in the list's range, and once a round's
keys include an old order (a refund) that range is the whole table. Here each row group's
min/max of the key column is looked up in the sorted keys instead (one binary search per
row group), so a scan for a round's order ids reads the few row groups that can hold them.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Collection, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from shoplake.tables.base import AllOf, IsIn, Predicate

# Shorter lists Arrow prunes by itself; the bounds here would only cost footer reads.
LONG_LIST = 48

# A row group's (min, max) of the key column; None: the file records no bounds for it.
# Keys and bounds are str or int (see _long_key_list).
Bounds = tuple[Any, Any] | None


class RowGroupBounds:
    """Each file's row-group bounds of the columns scanned by key, read from its footer
    once (a table's files never change) and forgotten when the file leaves the table
    (``keep_only``, as the table's files are listed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[tuple[str, str], list[Bounds]] = {}

    def narrowed(self, dataset: pads.Dataset, where: Predicate) -> pads.Dataset:
        """``dataset`` reduced to the row groups that may hold a row ``where`` selects by a
        long key list; the dataset itself when no such list or nothing to leave out."""
        keys = _long_key_list(where)
        if keys is None or not isinstance(dataset, pads.FileSystemDataset):
            return dataset
        column, values = keys
        wanted = sorted(values)
        fragments: list[pads.Fragment] = []
        narrowed = False
        for fragment in dataset.get_fragments():
            bounds = self._bounds(fragment, column)
            kept = [i for i, b in enumerate(bounds) if _may_hold(wanted, b)]
            if len(kept) < len(bounds):
                narrowed = True
                if not kept:
                    continue
                fragment = fragment.subset(row_group_ids=kept)  # keeps the footer read
            fragments.append(fragment)
        if not narrowed:
            return dataset
        return pads.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)

    def keep_only(self, paths: Collection[str]) -> None:
        """Forget the files not among ``paths`` (compacted or vacuumed away)."""
        with self._lock:
            self._files = {k: v for k, v in self._files.items() if k[0] in paths}

    def _bounds(self, fragment: pads.Fragment, column: str) -> list[Bounds]:
        key = (fragment.path, column)
        with self._lock:
            known = self._files.get(key)
        if known is None:
            known = _row_group_bounds(fragment, column)
            with self._lock:
                self._files[key] = known
        return known


def _long_key_list(where: Predicate) -> tuple[str, list[Any]] | None:
    """The column and keys of a top-level ``IsIn`` with a long list of string or integer
    keys (their statistics compare as Python values); None if there is none."""
    terms: Sequence[Predicate] = where.terms if isinstance(where, AllOf) else (where,)
    for term in terms:
        if not isinstance(term, IsIn):
            continue
        values = term.values
        if isinstance(values, pa.ChunkedArray | pa.Array):
            if not (pa.types.is_string(values.type) or pa.types.is_integer(values.type)):
                continue
            values = values.to_pylist()
        listed = list(values)
        if len(listed) <= LONG_LIST or any(v is None for v in listed):
            continue
        if all(isinstance(v, str) for v in listed) or all(type(v) is int for v in listed):
            return term.column, listed
    return None


def _row_group_bounds(fragment: pads.Fragment, column: str) -> list[Bounds]:
    metadata = fragment.metadata
    names = metadata.schema.names
    if column not in names:  # a partition column, or one added after the file
        return [None] * metadata.num_row_groups
    index = names.index(column)
    out: list[Bounds] = []
    for i in range(metadata.num_row_groups):
        stats = metadata.row_group(i).column(index).statistics
        if stats is None or not stats.has_min_max:
            out.append(None)
        else:
            out.append((stats.min, stats.max))
    return out


def _may_hold(wanted: list[Any], bounds: Bounds) -> bool:
    if bounds is None:
        return True
    low, high = bounds
    try:
        at = bisect.bisect_left(wanted, low)
        return at < len(wanted) and bool(wanted[at] <= high)
    except TypeError:  # bounds of another type than the keys (bytes): keep the row group
        return True
