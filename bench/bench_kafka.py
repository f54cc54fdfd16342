"""Kafka → bronze → silver, with a real broker running beside the pipeline on this machine.

Fills the topics with simulated events through the Kafka transport (acks=all), then times
the pipeline: ingest (Kafka → bronze.raw_events, positions in every commit) and silver
(bronze → every silver table), each until nothing is left (aim >= 150k events/s).

Run:  .venv/bin/python bench/bench_kafka.py [--events 1000000]   (needs Java 17+ and mvn)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
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

            pipeline = Pipeline(settings)
            started = time.perf_counter()
            pipeline.run("ingestion", until_idle=True)
            ingest_s = time.perf_counter() - started
            silver, _ = pipeline._processing_stages()
            tps = pipeline.transport.partitions()
            batch = settings.pipeline.batch_max_records
            started = time.perf_counter()
            while silver.step(tps, batch).rows_in:
                pass
            silver_s = time.perf_counter() - started
            pipeline.close()
        finally:
            broker.stop()
    both = ingest_s + silver_s
    print(f"events: {produced:,} ({settings.transport.partitions} partitions per topic)")
    for label, seconds in (
        ("produce (acks=all, idempotent)", produce_s),
        ("Kafka -> bronze", ingest_s),
        ("bronze -> silver", silver_s),
        ("Kafka -> bronze -> silver", both),
    ):
        print(f"{label + ':':33}{produced / seconds:>9,.0f} events/s ({seconds:.1f} s)")
    print(f"peak RSS of the pipeline process: {peak_rss_mb():,.0f} MiB")
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
