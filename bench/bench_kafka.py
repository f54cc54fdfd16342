"""Kafka → bronze → silver, with a real broker running beside the pipeline on this machine.

Fills the topics with simulated events through the Kafka transport (acks=all), then times
the pipeline: ingest (Kafka → bronze.raw_events, positions in every commit) and silver
(bronze → every silver table), each until nothing is left (aim >= 150k events/s). With
--spark, the Spark runtime does the same from the same topics into a home of its own, side
by side: bronze by Structured Streaming, silver as Spark jobs (local[*]).

Run:  .venv/bin/python bench/bench_kafka.py [--events 1000000] [--spark]
      (needs Java 17+ and mvn; --spark the spark extra)
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

from common import command, machine, peak_rss_mb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for tests/

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
            for chunk in iter(lambda: list(itertools.islice(stream, 50_000)), []):
                transport.append([route(e.value, settings.topics) for e in chunk])
                if sum(transport.end_offsets().values()) >= args.events:
                    break
            produced = sum(transport.end_offsets().values())
            produce_s = time.perf_counter() - started
            transport.close()

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
    for runtime, (ingest_s, silver_s) in timings.items():
        print(f"-- {runtime}")
        for label, seconds in (
            ("Kafka -> bronze", ingest_s),
            ("bronze -> silver", silver_s),
            ("Kafka -> bronze -> silver", ingest_s + silver_s),
        ):
            print(f"{label + ':':33}{produced / seconds:>9,.0f} events/s ({seconds:.1f} s)")
    print(f"peak RSS of the pipeline process: {peak_rss_mb():,.0f} MiB")
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
