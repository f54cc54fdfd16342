"""Positions: how every layer knows what it has consumed.

A position is the next offset to read in one (topic, partition) of the transport.
Bronze records the transport positions it covers under the app id
``GROUP/TOPIC/PARTITION``; silver and gold record the bronze positions they have
consumed under ``bronze/TOPIC/PARTITION``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow.compute as pc
import pyarrow.dataset as pads

from shoplake.tables.base import TableHandle
from shoplake.transport.base import TopicPartition

Positions = dict[TopicPartition, int]
Ranges = dict[TopicPartition, tuple[int, int]]


def ingest_app_id(group: str, tp: TopicPartition) -> str:
    return f"{group}/{tp.topic}/{tp.partition}"


def source_app_id(tp: TopicPartition) -> str:
    return f"bronze/{tp.topic}/{tp.partition}"


def to_app_ids(positions: Mapping[TopicPartition, int], group: str | None = None) -> dict[str, int]:
    if group is None:
        return {source_app_id(tp): off for tp, off in positions.items()}
    return {ingest_app_id(group, tp): off for tp, off in positions.items()}


def positions_of(
    handle: TableHandle, tps: Iterable[TopicPartition], group: str | None = None
) -> Positions:
    """Positions per partition recorded in a table snapshot; unrecorded ones are 0."""
    ids = {tp: source_app_id(tp) if group is None else ingest_app_id(group, tp) for tp in tps}
    got = handle.positions(ids.values())
    return {tp: got.get(app_id, 0) for tp, app_id in ids.items()}


def range_ends(ranges: Ranges) -> Positions:
    """The position after each range: what a layer records once it has consumed them."""
    return {tp: end for tp, (_, end) in ranges.items()}


def range_filter(ranges: Ranges) -> pc.Expression | None:
    """A dataset filter selecting the rows whose lineage lies in ``ranges`` (end exclusive)."""
    expr: pc.Expression | None = None
    for (topic, partition), (start, end) in ranges.items():
        one = (
            (pads.field("topic") == topic)
            & (pads.field("partition") == partition)
            & (pads.field("offset") >= start)
            & (pads.field("offset") < end)
        )
        expr = one if expr is None else expr | one
    return expr
