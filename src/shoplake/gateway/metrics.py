"""The gateway's Prometheus metrics (names shared with the Grafana dashboard)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shoplake.contract.tables import RAW_EVENTS
from shoplake.errors import ShoplakeError
from shoplake.pipeline.positions import positions_of
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
            ends = self.transport.end_offsets()
            read = (
                positions_of(self.store.open(RAW_EVENTS), list(ends), self.group)
                if self.store.exists(RAW_EVENTS)
                else dict.fromkeys(ends, 0)
            )
        except ShoplakeError:
            return  # an unreachable transport shows as a missing series, not a failed scrape
        for tp, end in ends.items():
            lag.add_metric([tp.topic, str(tp.partition)], max(0, end - read[tp]))
        yield lag
