"""Kafka → bronze → silver, with a real broker running beside the pipeline on this machine.

Fills the topics with simulated events through the Kafka transport (acks=all), then times
the pipeline two ways, each into a home of its own:

- together (issue 16's measure, aim >= 100k events/s): ``shoplake run --job ingestion``
  in its own process (Kafka → bronze.raw_events) while this process steps silver (bronze →
  every silver table) as bronze grows; the rate is events in silver per second of wall
  time, from the start until silver has taken every event;
- phases: ingest until nothing is left, then silver until nothing is left, each timed.

Events are counted as sent (transaction markers take offsets, not events). With --spark,
the Spark runtime does the phases too: bronze by Structured Streaming, silver as Spark jobs
(local[*]).

Run:  .venv/bin/python bench/bench_kafka.py [--events 1000000] [--spark]
      (needs Java 17+ and mvn; --spark the spark extra)
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import command, machine, peak_rss_mb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for tests/

from shoplake.contract.tables import RAW_EVENTS
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.simulator.sinks import route
from shoplake.transport import open_transport
from tests.integration.kafka_broker import KafkaBroker


def timed_pipeline(settings: Settings) -> tuple[float, float]:
    """Seconds for Kafka → bronze, then bronze → silver, each until nothing is left."""
    pipeline = Pipeline(settings)
    started = time.perf_counter()
    pipeline.run("ingestion", until_idle=True)  # on Spark: its Structured Streaming query
    ingest_s = time.perf_counter() - started
    silver, _ = pipeline._processing_stages()
    tps = pipeline.transport.partitions()
    batch = settings.pipeline.batch_max_records
    started = time.perf_counter()
    while silver.step(tps, batch).rows_in:
        pass
    silver_s = time.perf_counter() - started
    pipeline.close()
    return ingest_s, silver_s


def together(settings: Settings, bootstrap: str) -> tuple[float, int]:
    """Wall seconds until silver has taken every record ingest brings, with ingest in a
    process of its own and silver in this one, both running at once; bronze's rows."""
    env = {**os.environ, "SHOPLAKE_HOME": str(settings.home), "SHOPLAKE_TRANSPORT__KIND": "kafka",
           "SHOPLAKE_TRANSPORT__KAFKA_BOOTSTRAP": bootstrap,
           "SHOPLAKE_PIPELINE__CONSUMER_GROUP": settings.pipeline.consumer_group}  # fmt: skip
    pipeline = Pipeline(settings)
    silver, _ = pipeline._processing_stages()
    tps = pipeline.transport.partitions()
    batch = settings.pipeline.batch_max_records
    started = time.perf_counter()
    ingest = subprocess.Popen(
        [sys.executable, "-m", "shoplake.cli", "run", "--job", "ingestion", "--until-idle"],
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    while True:
        if silver.step(tps, batch).rows_in:
            continue
        if ingest.poll() is not None and (
            ingest.returncode or not pipeline.store.exists(RAW_EVENTS) or not silver.pending(tps)
        ):
            break
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if ingest.returncode:
        raise SystemExit(f"the ingestion worker failed (exit {ingest.returncode})")
    rows = pipeline.store.open(RAW_EVENTS).count()
    pipeline.close()
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--spark", action="store_true", help="Time the Spark runtime too.")
    args = parser.parse_args()
    timings: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        broker = KafkaBroker(Path(tmp) / "kafka")
        broker.start()
        try:
            settings = Settings(
                home=Path(tmp) / "home",
                transport={"kind": "kafka", "kafka_bootstrap": broker.bootstrap},
            )
            transport = open_transport(settings)
            stream = ShopSimulator(42).stream()
            started = time.perf_counter()
            produced = 0
            while produced < args.events:
                chunk = list(itertools.islice(stream, min(50_000, args.events - produced)))
                transport.append([route(e.value, settings.topics) for e in chunk])
                produced += len(chunk)
            produce_s = time.perf_counter() - started
            transport.close()

            both = settings.model_copy(
                update={
                    "home": Path(tmp) / "home-together",
                    "pipeline": settings.pipeline.model_copy(
                        update={"consumer_group": "bench-together"}
                    ),
                }
            )
            together_s, together_rows = together(both, broker.bootstrap)
            timings["embedded"] = timed_pipeline(settings)
            if args.spark:
                on_spark = Settings(
                    home=Path(tmp) / "spark-home",
                    transport=settings.transport,
                    engine={"kind": "spark"},
                )
                timings["spark local[*]"] = timed_pipeline(on_spark)
        finally:
            broker.stop()
    print(f"events: {produced:,} ({settings.transport.partitions} partitions per topic)")
    print(f"{'produce (acks=all, idempotent):':33}{produced / produce_s:>9,.0f} events/s")
    print(f"-- embedded, ingest and silver at once (bronze rows: {together_rows:,})")
    print(f"{'Kafka -> bronze -> silver:':33}{produced / together_s:>9,.0f} events/s "
          f"({together_s:.1f} s)   aim >= 100,000")  # fmt: skip
    for runtime, (ingest_s, silver_s) in timings.items():
        print(f"-- {runtime}, one phase after the other")
        for label, seconds in (
            ("Kafka -> bronze", ingest_s),
            ("bronze -> silver", silver_s),
            ("Kafka -> bronze -> silver", ingest_s + silver_s),
        ):
            print(f"{label + ':':33}{produced / seconds:>9,.0f} events/s ({seconds:.1f} s)")
    print(f"peak RSS of this process (silver; the phases): {peak_rss_mb():,.0f} MiB")
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
