"""shoplake's Prometheus metrics: the gateway's, the pipeline's and the tables' (names
shared with the Grafana dashboard in deploy/grafana)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shoplake.contract.tables import ALL_TABLES, QUARANTINE
from shoplake.errors import ShoplakeError
from shoplake.pipeline.event_ids import DIGEST_BYTES
from shoplake.pipeline.ingest import bronze_lag
from shoplake.tables.base import TableStore
from shoplake.transport.base import Transport


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "shoplake_events_accepted",
            "Events the gateway made durable in the transport.",
            registry=registry,
        )
        self.rejected = Counter(
            "shoplake_events_rejected",
            "Events the gateway rejected, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.requests = Counter(
            "shoplake_gateway_requests",
            "Requests to POST /v1/events, by status code.",
            ["status"],
            registry=registry,
        )
        self.latency = Histogram(
            "shoplake_gateway_request_seconds",
            "Time to answer POST /v1/events, durable append included.",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self._by_status: dict[int, Counter] = {}  # each status's child, looked up once

    def answered(self, status: int) -> None:
        """Counts a request to POST /v1/events answered with ``status``."""
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.requests.labels(str(status))
        child.inc()


class TransportLag(Collector):
    """``shoplake_transport_lag_records``: per partition, the records the transport holds
    beyond the positions bronze has recorded — what is read, not Kafka's offsets."""

    def __init__(self, transport: Transport, store: TableStore, group: str) -> None:
        self.transport = transport
        self.store = store
        self.group = group

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "shoplake_transport_lag_records",
            "Records in the transport not yet in bronze, per topic partition.",
            labels=["topic", "partition"],
        )
        try:
            behind = bronze_lag(self.store, self.transport.end_offsets(), self.group)
        except ShoplakeError:
            return  # an unreachable transport shows as a missing series, not a failed scrape
        for tp, records in behind.items():
            lag.add_metric([tp.topic, str(tp.partition)], records)
        yield lag


class PipelineMetrics:
    """The running pipeline's measurements (it calls these as its Observer)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "shoplake_stage_rows",
            "Rows each stage has processed: bronze (ingested), silver (bronze rows read), "
            "gold (derived rows written).",
            ["stage"],
            registry=registry,
        )
        self.batch = Histogram(
            "shoplake_stage_batch_seconds",
            "Duration of one batch of each stage.",
            ["stage"],
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.latency = Histogram(
            "shoplake_end_to_end_latency_seconds",
            "From an order or payment reaching the transport (the gateway's 202) to gold "
            "including it.",
            registry=registry,
            buckets=(0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120),
        )
        self.recent: deque[float] = deque(maxlen=20_000)
        self._dedupe_held = self._dedupe_in_files = 0  # as the main loop last reported
        Gauge(
            "shoplake_dedupe_index_ids",
            "Event ids silver holds to drop repeats (16 bytes each), summed over its "
            "tables; grows with the events of the dedupe horizon.",
            registry=registry,
        ).set_function(lambda: self._dedupe_held)
        Gauge(
            "shoplake_dedupe_index_file_ids",
            "Of those ids, the ones kept in temporary files read through the page cache "
            "rather than on the heap (pipeline.dedupe_spill_mib).",
            registry=registry,
        ).set_function(lambda: self._dedupe_in_files)

    def stage(self, name: str, rows: int, seconds: float) -> None:
        self.rows.labels(name).inc(rows)
        self.batch.labels(name).observe(seconds)

    def visible_in_gold(self, latencies_s: list[float]) -> None:
        for value in latencies_s:
            self.latency.observe(value)
        self.recent.extend(latencies_s)

    def dedupe_index(self, ids: int, in_files: int) -> None:
        self._dedupe_held, self._dedupe_in_files = ids, in_files

    def memory(self) -> dict[str, float]:
        """The ids silver's dedupe holds, and what they take on the heap and in files."""
        on_heap = self._dedupe_held - self._dedupe_in_files
        return {
            "dedupe_index_ids": self._dedupe_held,
            "dedupe_index_memory_mib": round(on_heap * DIGEST_BYTES / 2**20, 1),
            "dedupe_index_file_mib": round(self._dedupe_in_files * DIGEST_BYTES / 2**20, 1),
        }

    def latency_quantiles(self) -> dict[str, float | None]:
        """p50 and p95 of the latest end-to-end latencies."""
        ordered = sorted(self.recent)
        if not ordered:
            return {"latency_p50_s": None, "latency_p95_s": None}
        p50, p95 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.95))
        return {"latency_p50_s": p50, "latency_p95_s": p95}


class TableState(Collector):
    """``shoplake_table_version{table}``, ``shoplake_table_last_commit_timestamp_seconds
    {table}`` (freshness: ``time() - …``) and ``shoplake_quarantined_records{reason}``,
    read from the tables at scrape time."""

    def __init__(self, store: TableStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        versions = GaugeMetricFamily(
            "shoplake_table_version", "Current version of each table.", labels=["table"]
        )
        reasons = GaugeMetricFamily(
            "shoplake_quarantined_records",
            "Records in silver.quarantine, by reason code.",
            labels=["reason"],
        )
        committed = GaugeMetricFamily(
            "shoplake_table_last_commit_timestamp_seconds",
            "When each table's newest commit was made (Unix time).",
            labels=["table"],
        )
        try:
            for spec in ALL_TABLES:
                if self.store.exists(spec):
                    versions.add_metric([spec.qualified], self.store.open(spec).version)
                    newest = self.store.history(spec, 1)
                    if newest:
                        committed.add_metric([spec.qualified], newest[0].timestamp.timestamp())
            if self.store.exists(QUARANTINE):
                column = self.store.open(QUARANTINE).scan(["reason"])
                for pair in pc.value_counts(column["reason"]).to_pylist():
                    reasons.add_metric([str(pair["values"])], pair["counts"])
        except ShoplakeError:
            return
        yield versions
        yield committed
        yield reasons
