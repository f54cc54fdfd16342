"""The transport port: topics split into partitions, records addressed by offset (Kafka's model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import pyarrow as pa


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class OutgoingMessage(NamedTuple):
    topic: str
    key: str | None
    value: bytes


def with_all_events_copy(
    messages: Sequence[OutgoingMessage], all_events: str | None, dead_letter: str
) -> Sequence[OutgoingMessage]:
    """``messages``, and with an all-events topic (seed 001's raw-events) a copy of each
    event on it too, appended with them in the same transaction; records that are not
    events (the dead-letter topic's) are not copied."""
    if not all_events:
        return messages
    copies = [m._replace(topic=all_events) for m in messages if m.topic != dead_letter]
    return [*messages, *copies]


# What read() returns: one row per record, in offset order within each partition.
RECORD_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary(), nullable=False),
        pa.field("timestamp_ms", pa.int64(), nullable=False),
    ]
)


class ReadBatch(NamedTuple):
    """What ``read`` returns: the records, and per partition read the offset where reading
    continues. Offsets need not be dense (Kafka's transaction markers and aborted records
    take offsets no consumer sees), so the next position is not always last offset + 1."""

    records: pa.Table
    positions: dict[TopicPartition, int]


class Transport(Protocol):
    """A durable, partitioned, append-only log."""

    def partitions(self) -> list[TopicPartition]:
        """Every partition of every topic, in a stable order."""
        ...

    def assigned(self, group: str) -> list[TopicPartition]:
        """The partitions this process should ingest as a member of consumer ``group``
        (the embedded log: all of them; Kafka: what the group's rebalance gave it)."""
        ...

    def append(self, messages: Sequence[OutgoingMessage]) -> None:
        """Append messages; when this returns they are durable (fsync'd / acks=all)."""
        ...

    def read(self, start: Mapping[TopicPartition, int], max_records: int) -> ReadBatch:
        """Records at or after each partition's start offset, at most max_records in all."""
        ...

    def end_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset below which every record is readable (the embedded
        log: the next offset it will assign; Kafka: the last stable offset)."""
        ...

    def commit(self, group: str, positions: Mapping[TopicPartition, int]) -> None:
        """Record a consumer group's progress (advisory: bronze keeps the real positions)."""
        ...

    def committed(self, group: str) -> dict[TopicPartition, int]: ...

    def close(self) -> None: ...
