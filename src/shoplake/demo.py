"""``shoplake demo``: simulator, transport and pipeline together in one process."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from types import FrameType

import click

from shoplake.errors import ShoplakeError
from shoplake.pipeline.runner import Pipeline
from shoplake.query import Lakehouse
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.simulator.sinks import TransportSink, pump
from shoplake.transport import open_transport

log = logging.getLogger(__name__)

_STATUS_SQL = """
SELECT (SELECT count(*) FROM bronze.raw_events) AS bronze,
       (SELECT count(*) FROM silver.orders) AS orders,
       (SELECT count(*) FROM silver.quarantine) AS quarantined,
       (SELECT coalesce(sum(paid_orders), 0) FROM gold.fct_sales_minute) AS paid_orders,
       (SELECT coalesce(sum(gmv), 0) FROM gold.fct_sales_minute) AS gmv
"""


def run_demo(
    settings: Settings,
    *,
    rate: float,
    duration: float | None,
    seed: int,
    bad_ratio: float,
    status_every: float = 2.0,
) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []
    producer_log = open_transport(settings)
    # A new seed per start, so a resumed demo sends new events rather than replays.
    already = sum(producer_log.end_offsets().values())
    sim = ShopSimulator(seed + already, realtime=True, bad_ratio=bad_ratio)
    sent: Counter[str] = Counter()

    def produce() -> None:
        try:
            pump(
                sim.stream(),
                TransportSink(producer_log, settings.topics),
                num_events=None,
                rate=rate,
                stop=stop,
                on_progress=lambda n, counts: sent.update({"total": n - sent["total"]}),
            )
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
            stop.set()

    pipeline = Pipeline(settings)

    def process() -> None:
        try:
            pipeline.run("both", stop=stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=produce, name="simulator", daemon=True),
        threading.Thread(target=process, name="pipeline", daemon=True),
    ]
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    click.echo(f"shoplake demo: {rate:g} events/s into {settings.home} — Ctrl-C to stop", err=True)
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        while not stop.is_set():
            stop.wait(status_every)
            if duration is not None and time.monotonic() - started >= duration:
                stop.set()
            _print_status(settings, sent["total"], time.monotonic() - started)
    except KeyboardInterrupt:
        stop.set()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        pipeline.close()
        producer_log.close()
        signal.signal(signal.SIGTERM, previous)
    if errors:
        exc = errors[0]
        if isinstance(exc, ShoplakeError):
            raise exc
        raise ShoplakeError(f"demo stopped by an internal error: {exc!r}") from exc
    click.echo("demo stopped; run it again to resume from the same data", err=True)


def _print_status(settings: Settings, sent: int, elapsed: float) -> None:
    try:
        row = Lakehouse(settings).query(_STATUS_SQL).to_pylist()[0]
    except ShoplakeError:
        return  # tables not created yet
    click.echo(
        f"[{elapsed:6.1f}s] sent {sent}  bronze {row['bronze']}  silver.orders {row['orders']}  "
        f"quarantined {row['quarantined']}  gold: paid orders {row['paid_orders']}, "
        f"GMV {row['gmv']} {settings.reporting.currency}"
    )
