"""``shoplake demo``: simulator, gateway, transport, pipeline and dashboard in one process."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import click
import pyarrow.compute as pc
import uvicorn
from prometheus_client import CollectorRegistry

from shoplake.contract.tables import FCT_SALES_MINUTE, ORDERS, QUARANTINE, RAW_EVENTS
from shoplake.errors import ShoplakeError
from shoplake.gateway.app import create_app, server_config
from shoplake.gateway.metrics import PipelineMetrics
from shoplake.pipeline.runner import Pipeline, RunStats
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.simulator.sinks import HttpSink, pump
from shoplake.stopsignals import stop_on_signals
from shoplake.tables import TableStore, open_store
from shoplake.transport import open_transport

log = logging.getLogger(__name__)


class _Throughput:
    """Events per second of each stage over the last ~10 s, from the running totals
    (the gateway's from its counters, so events from other senders count too)."""

    def __init__(self, registry: CollectorRegistry, measured: PipelineMetrics) -> None:
        self.gateway = registry.restricted_registry(
            ["shoplake_events_accepted_total", "shoplake_events_rejected_total"]
        )
        self.measured = measured
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=64)

    def _gateway_counts(self) -> tuple[int, dict[str, int]]:
        accepted, rejected = 0, {}
        for metric in self.gateway.collect():
            for sample in metric.samples:
                if sample.name == "shoplake_events_accepted_total":
                    accepted = int(sample.value)
                elif sample.name == "shoplake_events_rejected_total":
                    rejected[sample.labels["reason"]] = int(sample.value)
        return accepted, rejected

    def accepted(self) -> int:
        return self._gateway_counts()[0]

    def record(self, stats: RunStats) -> None:
        now = time.monotonic()
        self.samples.append((now, self.accepted(), stats.ingested, stats.bronze_read))
        while len(self.samples) > 2 and now - self.samples[0][0] > 10:
            self.samples.popleft()

    def snapshot(self) -> dict[str, Any]:
        if len(self.samples) < 2:
            return self.measured.latency_quantiles() | self.measured.memory()
        (t0, *first), (t1, *last) = self.samples[0], self.samples[-1]
        span = max(t1 - t0, 1e-9)
        rates = [(b - a) / span for a, b in zip(first, last, strict=True)]
        out: dict[str, Any] = dict(
            zip(("accepted_per_s", "bronze_per_s", "silver_per_s"), rates, strict=True)
        )
        out["rejected_at_gateway"] = self._gateway_counts()[1]
        return out | self.measured.latency_quantiles() | self.measured.memory()


def run_demo(
    settings: Settings,
    *,
    rate: float,
    duration: float | None,
    seed: int,
    bad_ratio: float,
    port: int,
    status_every: float = 2.0,
) -> None:
    """The simulator posts to the gateway over HTTP, the pipeline fills the tables, the
    dashboard shows them: all in this process, on loopback."""
    gateway = settings.gateway.model_copy(update={"host": "127.0.0.1", "port": port, "auth": False})
    settings = settings.model_copy(update={"gateway": gateway})
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    errors: list[BaseException] = []
    transport = open_transport(settings)
    store = open_store(settings)
    # A new seed per start, so a resumed demo sends new events rather than replays.
    already = sum(transport.end_offsets().values())
    sim = ShopSimulator(seed + already, realtime=True, bad_ratio=bad_ratio)
    sink = HttpSink(url)
    registry = CollectorRegistry()
    measured = PipelineMetrics(registry)
    throughput = _Throughput(registry, measured)
    app = create_app(
        settings, transport, store=store, registry=registry, runtime=throughput.snapshot
    )
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))

    def guarded(target: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced by the main thread
                errors.append(exc)
                stop.set()

        return run

    pipeline = Pipeline(settings)
    pipeline.observer = measured
    threads = [
        threading.Thread(
            target=guarded(lambda: pipeline.run("both", stop=stop, on_round=throughput.record)),
            name="pipeline",
            daemon=True,
        ),
    ]
    if rate > 0:  # else the gateway takes events from other senders only
        threads.append(
            threading.Thread(
                target=guarded(
                    lambda: pump(sim.stream(), sink, num_events=None, rate=rate, stop=stop)
                ),
                name="simulator",
                daemon=True,
            )
        )
    serving = threading.Thread(target=guarded(server.run), name="gateway", daemon=True)
    # Ctrl-C and SIGTERM only ask the loops to stop (see stop_on_signals).
    with stop_on_signals(stop):
        started = time.monotonic()
        serving.start()
        while not server.started and not stop.is_set():
            time.sleep(0.05)
        if not stop.is_set():
            click.echo(
                f"shoplake demo: {rate:g} events/s into {settings.home} — Ctrl-C to stop\n"
                f"dashboard: {url}/   (gateway: {url}/v1/events, API reference: {url}/docs)",
                err=True,
            )
            for t in threads:
                t.start()
        try:
            while not stop.is_set():
                stop.wait(status_every)
                if duration is not None and time.monotonic() - started >= duration:
                    stop.set()
                accepted = throughput.accepted()
                _print_status(settings, store, accepted, time.monotonic() - started)
        finally:
            stop.set()
            for t in threads:
                if t.is_alive() or t.ident is not None:
                    t.join(timeout=60)
            server.should_exit = True
            serving.join(timeout=30)
            pipeline.close()
            transport.close()
            store.close()
    if errors:
        exc = errors[0]
        if isinstance(exc, ShoplakeError):
            raise exc
        raise ShoplakeError(f"demo stopped by an internal error: {exc!r}") from exc
    click.echo(
        f"demo stopped: the gateway accepted {throughput.accepted()} events this run; "
        "run it again to resume from the same data",
        err=True,
    )


def _print_status(settings: Settings, store: TableStore, sent: int, elapsed: float) -> None:
    """One line of totals. Row counts come from the tables' file statistics (a query would
    list and scan every file each time: a fifth of a core at 5,000 events/s)."""
    counted = (RAW_EVENTS, ORDERS, QUARANTINE, FCT_SALES_MINUTE)
    try:
        if not all(store.exists(spec) for spec in counted):
            return  # tables not created yet
        bronze, orders, quarantined = (store.open(s).count() for s in counted[:3])
        sales = store.open(FCT_SALES_MINUTE).scan(["paid_orders", "gmv"])
    except ShoplakeError:
        return
    paid = pc.sum(sales["paid_orders"]).as_py() or 0
    gmv = pc.sum(sales["gmv"]).as_py() or 0
    click.echo(
        f"[{elapsed:6.1f}s] accepted {sent}  bronze {bronze}  silver.orders {orders}  "
        f"quarantined {quarantined}  gold: paid orders {paid}, "
        f"GMV {gmv:.2f} {settings.reporting.currency}"
    )
