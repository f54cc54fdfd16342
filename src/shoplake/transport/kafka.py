"""The Kafka transport (confluent-kafka): the same port as the embedded log.

Each ``append`` is one Kafka transaction (idempotent producer, ``acks=all``): it commits,
or it is aborted and ``append`` raises, so the gateway answers 503 and no record of it
ever reaches a reader. Readers are ``read_committed`` and read from explicit offsets: the
positions come from bronze, never from Kafka's committed offsets.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from shoplake.errors import ConfigError, ErrorKind, TransportError
from shoplake.settings import Settings
from shoplake.transport.base import (
    RECORD_SCHEMA,
    OutgoingMessage,
    ReadBatch,
    TopicPartition,
    with_all_events_copy,
)

try:
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka import TopicPartition as KafkaPartition
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "the Kafka transport needs confluent-kafka: pip install 'shoplake[kafka]'"
    ) from exc

_TIMEOUT_S = 10.0
log = logging.getLogger(__name__)

# Errors retrying cannot cure: credentials, permissions, configuration. A worker stops on
# them with one clear line; anything else (broker down, leader moving, timeouts) is
# transient and retried.
TERMINAL_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,  # librdkafka: SASL/SSL authentication failed
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
        KafkaError._SSL,  # certificate or TLS settings
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,  # a bad client property (unknown key, invalid value)
        KafkaError.INVALID_CONFIG,
        KafkaError.INVALID_REPLICATION_FACTOR,
        KafkaError.POLICY_VIOLATION,
    }
)


def kafka_error(what: str, exc: BaseException | KafkaError, seen: Any = None) -> TransportError:
    """``exc`` (a KafkaException, or a message's KafkaError) as a TransportError that is
    terminal when retrying cannot help. ``seen`` is a terminal error librdkafka reported
    in the background: bad credentials surface as a mere timeout on the call itself.

    ``fatal()`` alone is not terminal: it ends that client instance, and the adapter
    drops a failed producer and makes a new one on the next append."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    code = err.code() if isinstance(err, KafkaError) else None
    if code in TERMINAL_CODES:
        return TransportError(f"{what}: {_describe(err)}", kind=ErrorKind.TERMINAL)
    if seen is not None:
        return TransportError(f"{what}: {_describe(seen)}", kind=ErrorKind.TERMINAL)
    return TransportError(f"{what}: {_describe(err)}")


def _describe(err: Any) -> str:
    if not isinstance(err, KafkaError):
        return str(err)
    hint = {
        KafkaError._INVALID_ARG: " (check SHOPLAKE_TRANSPORT__KAFKA_CONFIG)",
        KafkaError._AUTHENTICATION: " (check the SASL/SSL credentials)",
        KafkaError.SASL_AUTHENTICATION_FAILED: " (check the SASL/SSL credentials)",
    }.get(err.code(), "")
    return f"{err.str()} [{err.name()}]{hint}"


class _Quieter:
    """librdkafka logs every failed connection attempt, many a second: at INFO (``-v``
    shows them), so a stopped worker's single error line is not buried under them."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def log(self, level: int, msg: str, *args: Any) -> None:
        self._logger.log(min(level, logging.INFO), msg, *args)


class KafkaTransport:
    """Topics of a Kafka cluster as a Transport."""

    def __init__(self, settings: Settings, *, create: bool = True) -> None:
        self.bootstrap = settings.transport.kafka_bootstrap
        self.topics = settings.topics.all()
        self.partition_count = settings.transport.partitions
        self.create = create
        # a terminal error librdkafka reported in the background (bad credentials)
        self._terminal: KafkaError | None = None
        self.all_events = settings.topics.all_events
        self.dead_letter = settings.topics.dead_letter
        self.replication_factor = settings.transport.replication_factor
        self._common: dict[str, Any] = {
            **settings.transport.librdkafka_config(),
            "bootstrap.servers": self.bootstrap,
            "client.id": "shoplake",
            "logger": _Quieter(log),  # librdkafka's own lines go through logging
            "error_cb": self._on_error,
        }
        common = self._common
        try:
            self._admin = AdminClient(common)
            self._reader = Consumer(
                {
                    **common,
                    "group.id": "shoplake-reader",  # never commits: positions live in bronze
                    "isolation.level": "read_committed",  # aborted appends are never read
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                    "fetch.max.bytes": 64 * 2**20,
                }
            )
        except KafkaException as exc:  # a bad property: every client would refuse it
            raise kafka_error(f"Kafka client settings for {self.bootstrap}", exc) from exc
        self._producer_config = {
            **common,
            "transactional.id": settings.transport.kafka_transactional_id
            or f"shoplake-{socket.gethostname()}-{os.getpid()}",
            # an append left open by a killed process holds readers back this long at most
            "transaction.timeout.ms": 30_000,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 2,
            "message.timeout.ms": int(_TIMEOUT_S * 1000),
        }
        self._producer: Any = None  # made on the first append: it needs the broker
        self._lock = threading.Lock()
        self._partitions: list[TopicPartition] | None = None
        self._members: dict[str, _Member] = {}

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's background errors: remember the first terminal one, so the call
        that then times out reports it (once) instead of being retried forever."""
        if err.code() in TERMINAL_CODES and self._terminal is None:
            self._terminal = err
        log.debug("Kafka client error: %s", err)

    def _error(
        self, what: str, exc: BaseException | KafkaError, *, unreachable: bool = False
    ) -> TransportError:
        if self._terminal is None:
            self._admin.poll(0)  # serves error_cb: the reason behind a timeout, if any
        error = kafka_error(what, exc, self._terminal)
        if unreachable and error.transient:
            return kafka_error(f"{what} is unreachable", exc)
        return error

    # -- topics ----------------------------------------------------------------
    def partitions(self) -> list[TopicPartition]:
        if self._partitions is None:
            self._partitions = self._discover()
        return self._partitions

    def _discover(self) -> list[TopicPartition]:
        try:
            meta = self._admin.list_topics(timeout=_TIMEOUT_S)
            written = [*self.topics, *([self.all_events] if self.all_events else [])]
            missing = [t for t in written if t not in meta.topics]
            if missing and self.create:
                self._create(missing)
                deadline = time.monotonic() + _TIMEOUT_S
                # new topics reach the metadata a moment after they are created
                while any(t not in meta.topics for t in missing) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    meta = self._admin.list_topics(timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise self._error(f"Kafka at {self.bootstrap}", exc, unreachable=True) from exc
        out: list[TopicPartition] = []
        for topic in sorted(self.topics):
            if topic in meta.topics:
                out.extend(TopicPartition(topic, p) for p in sorted(meta.topics[topic].partitions))
        return out

    def _create(self, topics: list[str]) -> None:
        replicas = self.replication_factor
        futures = self._admin.create_topics(
            [
                NewTopic(t, num_partitions=self.partition_count, replication_factor=replicas)
                for t in topics
            ]
        )
        for topic, future in futures.items():
            try:
                future.result(_TIMEOUT_S)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise self._error(f"cannot create topic {topic}", exc) from exc

    # -- consumer group membership ----------------------------------------------
    def assigned(self, group: str) -> list[TopicPartition]:
        """The partitions the group's last rebalance gave this process.

        A member consumer joins ``group`` only to take part in rebalances: it pauses
        every partition it is given, so it never fetches; reads go through ``read`` at
        the positions bronze recorded."""
        member = self._members.get(group)
        if member is None:
            member = self._members[group] = _Member(self, group)
        return member.poll()

    # -- producing -------------------------------------------------------------
    def append(self, messages: Sequence[OutgoingMessage]) -> None:
        """Produce ``messages`` in one transaction; returns once it has committed (every
        record acknowledged by all in-sync replicas). On any failure the transaction is
        aborted and TransportError raised: none of the records becomes readable."""
        if not messages:
            return
        messages = with_all_events_copy(messages, self.all_events, self.dead_letter)
        self.partitions()  # topics exist before the first produce
        with self._lock:
            producer = self._transactional_producer()
            try:
                producer.begin_transaction()
                for topic, key, value in messages:
                    while True:
                        try:
                            producer.produce(topic, value=value, key=key)
                            break
                        except BufferError:  # the local queue is full: let it drain
                            producer.poll(0.05)
                producer.commit_transaction(_TIMEOUT_S)
            except KafkaException as exc:
                self._abort(producer)
                raise self._error("Kafka did not accept the events", exc) from exc

    def _transactional_producer(self) -> Any:
        if self._producer is None:
            try:
                producer = Producer(self._producer_config)
                # Fences any earlier producer with this transactional.id and aborts the
                # transaction it left open.
                producer.init_transactions(_TIMEOUT_S)
            except KafkaException as exc:
                raise self._error(f"Kafka at {self.bootstrap}", exc, unreachable=True) from exc
            self._producer = producer
        return self._producer

    def _abort(self, producer: Any) -> None:
        """Throw the failed transaction away with its producer: the next producer's
        init_transactions aborts it at the broker and starts from a clean state (a
        producer kept after a failure can trip over its own sequence numbers)."""
        try:
            producer.purge(in_queue=True, in_flight=True, blocking=False)
        except KafkaException as exc:
            log.info("purging the failed transaction: %s", exc)
        self._producer = None

    # -- reading ---------------------------------------------------------------
    def end_offsets(self) -> dict[TopicPartition, int]:
        """The last stable offset of each partition: below it every transaction has
        committed or aborted, so a read_committed reader can take everything up to it."""
        out = {}
        try:
            for tp in self.partitions():
                _, high = self._reader.get_watermark_offsets(
                    KafkaPartition(tp.topic, tp.partition), timeout=_TIMEOUT_S
                )
                out[tp] = int(high)
        except KafkaException as exc:
            raise self._error(f"Kafka at {self.bootstrap}", exc) from exc
        return out

    def read(self, start: Mapping[TopicPartition, int], max_records: int) -> ReadBatch:
        """Committed records from each partition's start offset up to its last stable
        offset now. A partition read to that end continues there, past the transaction
        markers and aborted records it ends with; one cut short by ``max_records``
        continues after its last record returned."""
        ends = self.end_offsets()
        wanted = {tp: off for tp, off in start.items() if ends.get(tp, 0) > off}
        if not wanted:
            return ReadBatch(RECORD_SCHEMA.empty_table(), {})
        target = min(max_records, sum(ends[tp] - off for tp, off in wanted.items()))
        assignment = [KafkaPartition(tp.topic, tp.partition, off) for tp, off in wanted.items()]
        self._reader.assign(assignment)
        columns: dict[str, list[Any]] = {f.name: [] for f in RECORD_SCHEMA}
        after_last: dict[TopicPartition, int] = {}
        cut_short: set[TopicPartition] = set()
        reached: dict[TopicPartition, int] = {}
        got = 0
        deadline = time.monotonic() + _TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                for msg in self._reader.consume(min(max(target - got, 1), 10_000), timeout=0.2):
                    failed = msg.error()
                    if failed is not None:
                        raise self._error("Kafka read failed", failed)
                    tp = TopicPartition(str(msg.topic()), int(msg.partition() or 0))
                    offset = int(msg.offset() or 0)
                    if offset >= ends[tp]:
                        continue  # past the snapshot of ends taken above
                    if got >= target:
                        cut_short.add(tp)
                        continue
                    columns["topic"].append(tp.topic)
                    columns["partition"].append(tp.partition)
                    columns["offset"].append(offset)
                    columns["key"].append(msg.key())
                    columns["value"].append(msg.value() or b"")
                    columns["timestamp_ms"].append(msg.timestamp()[1])
                    after_last[tp] = offset + 1
                    got += 1
                # position(): the next offset to fetch, already past markers and aborted
                # records, so it reaches the end even when the last offsets hold no record
                reached = {
                    TopicPartition(p.topic, p.partition): p.offset
                    for p in self._reader.position(assignment)
                }
                if got >= target or all(
                    reached[tp] >= end for tp, end in ends.items() if tp in wanted
                ):
                    break
        except KafkaException as exc:
            raise self._error("Kafka read failed", exc) from exc
        finally:
            self._reader.unassign()
        positions = dict(after_last)
        for tp, off in wanted.items():
            if tp not in cut_short and reached.get(tp, -1) > positions.get(tp, off):
                positions[tp] = min(reached[tp], ends[tp])
        table = pa.table(columns, schema=RECORD_SCHEMA)
        records = table.sort_by(
            [("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")]
        )
        return ReadBatch(records, positions)

    # -- consumer group bookkeeping (advisory) ---------------------------------
    def commit(self, group: str, positions: Mapping[TopicPartition, int]) -> None:
        """Advisory (bronze holds the real positions), so a failure is only logged: a
        group with members takes commits only from a member, which may have just lost
        the partitions in a rebalance."""
        if not positions:
            return
        member = self._members.get(group)
        consumer = member.consumer if member else self._group_consumer(group)
        offsets = [KafkaPartition(tp.topic, tp.partition, off) for tp, off in positions.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.info("advisory offset commit for %s skipped: %s", group, exc)
        finally:
            if member is None:
                consumer.close()

    def committed(self, group: str) -> dict[TopicPartition, int]:
        consumer = self._group_consumer(group)
        try:
            got = consumer.committed(
                [KafkaPartition(tp.topic, tp.partition) for tp in self.partitions()],
                timeout=_TIMEOUT_S,
            )
        except KafkaException as exc:
            raise self._error(f"Kafka at {self.bootstrap}", exc) from exc
        finally:
            consumer.close()
        return {TopicPartition(p.topic, p.partition): p.offset for p in got if p.offset >= 0}

    def _group_consumer(self, group: str) -> Any:
        return Consumer({**self._common, "group.id": group, "enable.auto.commit": False})

    def close(self) -> None:
        for member in self._members.values():
            member.close()
        self._reader.close()


class _Member:
    """A paused consumer in a group: it learns its share of the partitions, nothing more."""

    def __init__(self, transport: KafkaTransport, group: str) -> None:
        transport.partitions()  # the topics exist before anyone subscribes
        self.transport = transport
        self.group = group
        self.owned: set[TopicPartition] = set()
        self.joined = False
        self.consumer = Consumer(
            {
                **transport._common,
                "group.id": group,
                "enable.auto.commit": False,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
            }
        )
        self.consumer.subscribe(
            transport.topics, on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        consumer.assign(partitions)
        consumer.pause(partitions)
        self.owned |= {TopicPartition(p.topic, p.partition) for p in partitions}
        self.joined = True

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.owned -= {TopicPartition(p.topic, p.partition) for p in partitions}
        consumer.unassign()

    def poll(self) -> list[TopicPartition]:
        """Serve the group protocol (and its callbacks); the first call waits to join."""
        deadline = time.monotonic() + _TIMEOUT_S
        try:
            self.consumer.poll(0)
            while not self.joined and time.monotonic() < deadline:
                self.consumer.poll(0.1)
        except KafkaException as exc:
            raise self.transport._error("Kafka group membership failed", exc) from exc
        if not self.joined:
            if self.transport._terminal is not None:
                # e.g. not allowed to join the group: librdkafka only reports it in the background
                raise kafka_error("Kafka group membership failed", self.transport._terminal)
            # not idle: owning nothing yet, a worker would read nothing and `run --until-idle`
            # would stop with the records still in Kafka (a member given no partitions has
            # joined: its on_assign gets an empty list)
            raise TransportError(
                f"Kafka group {self.group!r} not joined within {_TIMEOUT_S:.0f} s; retrying"
            )
        return sorted(self.owned)

    def close(self) -> None:
        self.consumer.close()  # leaves the group: the others rebalance at once
