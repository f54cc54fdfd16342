"""The gateway's Prometheus metrics (names shared with the Grafana dashboard)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


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
