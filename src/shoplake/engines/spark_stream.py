"""Kafka → bronze.raw_events on Spark Structured Streaming, exactly once.

Bronze stays the one record of what has been consumed, as with the Python worker
(pipeline/ingest.py): every Kafka partition's rows of a micro-batch are appended in a
commit of their own that records the partition's next offset under
``GROUP/TOPIC/PARTITION`` (``ingest_app_id``), so both workers read and write the same
positions and either can take over from the other. On Delta, Spark writes the commit,
the position as its Delta transaction (``txnAppId``/``txnVersion``). Iceberg has no such
transactions: there a partition's rows of the batch (at most ``batch_max_records``) pass
through the driver to the table store, which records the position in the snapshot
summary, as it does for the Python worker.

- Each run starts at bronze's recorded positions (earliest where none), with a fresh
  Spark checkpoint: Spark's own checkpoint never decides what is read.
- In ``foreachBatch`` the rows of a partition below its recorded position are dropped
  (another worker, or a run killed between two partitions' commits, wrote them). Delta
  itself skips a commit whose version is not above the recorded one, and fails one
  racing a concurrent commit of the same app id; on Iceberg the position is read again
  just before the commit, and the store fails a commit that races one moving it. Rows
  and position of a partition are one atomic commit, so a crash at any
  point leaves each partition either wholly written up to its position or not at all.
- A batch's end offsets come from the checkpoint's offset log (written before the batch
  runs): they include Kafka's transaction markers, so the recorded position is where a
  reader continues, as the Python worker records it, and lag reaches 0.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoplake.contract.events import EVENT_TYPES
from shoplake.contract.tables import RAW_EVENTS
from shoplake.errors import ConfigError, ErrorKind, ShoplakeError, TableError, TransportError
from shoplake.pipeline.positions import ingest_app_id
from shoplake.process_dirs import remove_orphans
from shoplake.settings import Settings
from shoplake.transport.base import TopicPartition

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from shoplake.tables.base import TableStore

log = logging.getLogger(__name__)

# librdkafka-only properties: the Java client spells credentials as a JAAS line.
_LIBRDKAFKA_ONLY = {"sasl.username", "sasl.password", "enable.ssl.certificate.verification"}

_JAAS = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def kafka_options(settings: Settings) -> dict[str, str]:
    """The Kafka source's client properties (``kafka.``-prefixed) from the settings."""
    extra = {k: v.get_secret_value() for k, v in settings.transport.kafka_config.items()}
    options = {
        f"kafka.{k}": v for k, v in extra.items() if k not in _LIBRDKAFKA_ONLY and k != "logger"
    }
    user, password = extra.get("sasl.username"), extra.get("sasl.password")
    if user is not None and password is not None and "sasl.jaas.config" not in extra:
        module = _JAAS.get(extra.get("sasl.mechanism", "PLAIN").upper())
        if module is None:
            raise ConfigError(
                "the Spark Kafka source needs sasl.jaas.config in "
                "SHOPLAKE_TRANSPORT__KAFKA_CONFIG for this sasl.mechanism"
            )
        quoted = [json.dumps(user), json.dumps(password)]
        options["kafka.sasl.jaas.config"] = (
            f"{module} required username={quoted[0]} password={quoted[1]};"
        )
    options["kafka.bootstrap.servers"] = settings.transport.kafka_bootstrap
    # aborted appends are never read, as with the Python worker
    options["kafka.isolation.level"] = "read_committed"
    return options


def _backslash_text() -> Callable[[bytes | None], str | None]:
    """Bytes as text, bytes that are not UTF-8 as \\x escapes (the Python worker's
    _as_text). Nested: Spark's Python workers get it by value, so they need no shoplake."""

    def text(data: bytes | None) -> str | None:
        return None if data is None else bytes(data).decode("utf-8", "backslashreplace")

    return text


def _start_offsets(
    store: TableStore, partitions: list[TopicPartition], group: str
) -> dict[str, dict[str, int]]:
    """startingOffsets: bronze's position per partition, -2 (earliest) where none."""
    recorded = store.open(RAW_EVENTS).positions(ingest_app_id(group, tp) for tp in partitions)
    out: dict[str, dict[str, int]] = {}
    for tp in partitions:
        out.setdefault(tp.topic, {})[str(tp.partition)] = recorded.get(ingest_app_id(group, tp), -2)
    return out


def _checkpoint(home: Path) -> Path:
    """A fresh checkpoint for this run; those of runs no longer alive are removed."""
    root = home / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    remove_orphans(root, "bronze-")
    path = root / f"bronze-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    return path


def _batch_ends(checkpoint: Path, batch_id: int) -> dict[TopicPartition, int]:
    """The end offset of each partition in micro-batch ``batch_id``, from the offset log
    Spark writes before running the batch: a version line, the batch metadata, then one
    line per source (ours: {"topic": {"partition": end}})."""
    lines = (checkpoint / "offsets" / str(batch_id)).read_text().splitlines()
    ends = json.loads(lines[2])
    return {
        TopicPartition(topic, int(p)): int(end)
        for topic, parts in ends.items()
        for p, end in parts.items()
    }


class _BronzeBatches:
    """The foreachBatch function: one commit per Kafka partition of a batch."""

    def __init__(
        self,
        spark: SparkSession,
        store: TableStore,
        group: str,
        checkpoint: Path,
        *,
        iceberg: bool,
    ) -> None:
        self.spark = spark
        self.store = store
        self.group = group
        self.checkpoint = checkpoint
        self.location = store.location(RAW_EVENTS)
        self.iceberg = iceberg
        self.written = 0
        self.error: BaseException | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        try:
            self._write(batch, batch_id)
        except BaseException as exc:
            self.error = exc  # the query fails with it; run() raises this one
            raise

    def _write(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        ends = _batch_ends(self.checkpoint, batch_id)
        ids = {tp: ingest_app_id(self.group, tp) for tp in ends}
        recorded = self.store.open(RAW_EVENTS).positions(ids.values())
        # -1: no position yet; rows below a recorded position are in bronze already
        todo = {tp: recorded.get(ids[tp], -1) for tp, end in ends.items()}
        todo = {tp: start for tp, start in todo.items() if ends[tp] > start}
        if not todo:
            return
        keep = F.lit(False)
        for tp, start in todo.items():
            keep = keep | (_of(tp) & (F.col("offset") >= start))
        rows = _to_bronze(batch.where(keep), datetime.now(UTC)).persist()
        try:
            counts = {
                TopicPartition(r["topic"], r["partition"]): int(r["n"])
                for r in rows.groupBy("topic", "partition").agg(F.count("*").alias("n")).collect()
            }
            for tp in sorted(todo):
                if not counts.get(tp) and ids[tp] not in recorded:
                    continue  # nothing read and nothing to move: no empty commit
                if self.iceberg:
                    self.written += self._commit_iceberg(rows.where(_of(tp)), ids[tp], ends[tp])
                else:
                    self._commit_delta(rows.where(_of(tp)), ids[tp], ends[tp])
                    self.written += counts.get(tp, 0)
        finally:
            rows.unpersist()

    def _commit_delta(self, rows: DataFrame, app_id: str, end: int) -> None:
        # Delta skips this commit if the app id already has this version or a later one,
        # and fails it if a concurrent commit recorded the app id meanwhile.
        (
            rows.write.format("delta")
            .mode("append")
            .option("txnAppId", app_id)
            .option("txnVersion", end)
            .save(self.location)
        )

    def _commit_iceberg(self, rows: DataFrame, app_id: str, end: int) -> int:
        """Iceberg has no transaction ids: the rows go through the table store, which
        records the position in the snapshot with them and fails the commit if another
        worker moved it since it was read here (as the Python worker's). What another
        worker committed since the batch began is dropped first. Returns the rows written."""
        from pyspark.sql import functions as F

        now = self.store.open(RAW_EVENTS).positions([app_id]).get(app_id, -1)
        if now >= end:
            return 0
        data = rows.where(F.col("offset") >= now).toArrow()
        self.store.append(RAW_EVENTS, data, {app_id: end}, expected={app_id: max(now, 0)})
        return int(data.num_rows)


def _of(tp: TopicPartition) -> Column:
    from pyspark.sql import functions as F

    return (F.col("topic") == tp.topic) & (F.col("partition") == tp.partition)


def _to_bronze(records: DataFrame, now: datetime) -> DataFrame:
    """Kafka records as bronze rows, column for column as the Python worker makes them."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    escaped = F.udf(_backslash_text(), StringType(), useArrow=False)
    value = F.coalesce(F.col("value"), F.lit(b""))
    # The UDF sees only records that are not valid UTF-8 (rare): a filter, not a CASE,
    # since Spark evaluates a Python UDF for every row whatever CASE surrounds it.
    valid = F.is_valid_utf8(value) & (F.col("key").isNull() | F.is_valid_utf8(F.col("key")))
    plain = records.where(valid).select(
        F.col("key").cast("string").alias("raw_key"),
        value.cast("string").alias("raw_value"),
        "topic",
        "partition",
        "offset",
        "timestamp",
    )
    odd = records.where(~valid).select(
        escaped(F.col("key")).alias("raw_key"),
        escaped(value).alias("raw_value"),
        "topic",
        "partition",
        "offset",
        "timestamp",
    )
    known = F.array(*[F.lit(t) for t in EVENT_TYPES])
    named = F.expr("try_variant_get(try_parse_json(raw_value), '$.event_type', 'string')")
    return plain.unionByName(odd).select(
        "raw_key",
        "raw_value",
        F.col("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("timestamp").alias("source_ts"),
        F.lit(now).cast("timestamp").alias("ingest_ts"),
        F.when(F.array_contains(known, named), named)
        .otherwise(F.lit("unknown"))
        .alias("event_type"),
        F.to_date(F.lit(now).cast("timestamp")).alias("ingest_date"),
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("===", "at ", "JVM stacktrace")):
            return line
    return type(exc).__name__


def _terminal_error(exc: BaseException) -> ShoplakeError:
    """A failed query as one line: Kafka's errors as TransportError, the rest TableError."""
    line = _one_line(exc)
    if "kafka" in line.lower():
        return TransportError(f"Spark bronze stream: {line}", kind=ErrorKind.TERMINAL)
    return TableError(f"Spark bronze stream failed: {line}")


def run_bronze_stream(
    settings: Settings, spark: SparkSession, *, until_idle: bool, stop: threading.Event
) -> int:
    """Ingest the Kafka topics into bronze until ``stop`` is set (or, with ``until_idle``,
    until what Kafka held at the start is in bronze), on ``spark`` (a session whose
    application has the Kafka source: spark_packages); returns the records written."""
    from shoplake.tables import open_store
    from shoplake.transport.kafka import KafkaTransport

    if settings.transport.kind != "kafka":
        raise ConfigError("the Spark bronze stream reads Kafka: set SHOPLAKE_TRANSPORT__KIND=kafka")
    group = settings.pipeline.consumer_group
    transport = KafkaTransport(settings)  # creates missing topics, as the Python worker does
    try:
        partitions = transport.partitions()
    finally:
        transport.close()
    store = open_store(settings)
    store.ensure(RAW_EVENTS)
    checkpoint = _checkpoint(settings.home)
    try:
        batches = _BronzeBatches(
            spark, store, group, checkpoint, iceberg=settings.tables.format == "iceberg"
        )
        reader = (
            spark.readStream.format("kafka")
            .options(**kafka_options(settings))
            .option("subscribe", ",".join(sorted({tp.topic for tp in partitions})))
            .option("startingOffsets", json.dumps(_start_offsets(store, partitions, group)))
            .option("maxOffsetsPerTrigger", str(settings.pipeline.batch_max_records))
            .load()
        )
        writer = reader.writeStream.foreachBatch(batches).option(
            "checkpointLocation", str(checkpoint)
        )
        if until_idle:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{settings.pipeline.batch_max_seconds} seconds")
        _await(writer.start(), stop, batches)
        return batches.written
    finally:
        store.close()
        shutil.rmtree(checkpoint, ignore_errors=True)


def _await(query: Any, stop: threading.Event, batches: _BronzeBatches) -> None:
    """Wait for the query to end (availableNow) or ``stop``; then raise its error, if any."""
    from pyspark.errors import PySparkException

    try:
        while query.isActive and not stop.is_set():
            query.awaitTermination(0.5)
        if query.isActive:
            query.stop()  # between batches: a batch under way finishes or is redone
    except PySparkException as exc:
        if isinstance(batches.error, ShoplakeError):
            raise batches.error from exc
        raise _terminal_error(batches.error or exc) from exc
    failed = query.exception()
    if failed is not None:
        if isinstance(batches.error, ShoplakeError):
            raise batches.error
        raise _terminal_error(batches.error or failed)
