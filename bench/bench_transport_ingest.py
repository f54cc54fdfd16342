"""Embedded transport: durable append rate, and ingest rate from the log to bronze.

    .venv/bin/python bench/bench_transport_ingest.py --events 2000000

Input: simulated events (generated once, cached under bench/out/). Appends are
fsync'd transactions of --batch events each; ingest commits bronze batches of
--ingest-batch records, positions included, exactly as `shoplake run` does.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import command, machine, peak_rss_mb, simulated_ndjson

from shoplake.contract.tables import RAW_EVENTS
from shoplake.engines.duckdb import DuckDB
from shoplake.pipeline.ingest import BronzeIngest
from shoplake.settings import Settings
from shoplake.simulator.sinks import route
from shoplake.tables import open_store
from shoplake.transport.embedded import EmbeddedLog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="events per durable append")
    parser.add_argument("--ingest-batch", type=int, default=200_000)
    parser.add_argument(
        "--dir", type=Path, default=None, help="scratch directory (default: a temp dir)"
    )
    args = parser.parse_args()

    source = simulated_ndjson(args.events)
    settings_home = Path(tempfile.mkdtemp(prefix="shoplake-bench-", dir=args.dir))
    settings = Settings(home=settings_home)
    try:
        lines = source.read_bytes().splitlines()
        messages = [route(line, settings.topics) for line in lines]
        size_mb = sum(len(line) for line in lines) / 2**20

        log = EmbeddedLog.open(settings.log_path, settings)
        t0 = time.perf_counter()
        for i in range(0, len(messages), args.batch):
            log.append(messages[i : i + args.batch])
        append_s = time.perf_counter() - t0

        # the same with small appends, as a gateway answering per request would make them
        small_log = EmbeddedLog.open(settings.home / "small" / "log.sqlite", settings)
        sample = messages[:200_000]
        t0 = time.perf_counter()
        for i in range(0, len(sample), 500):
            small_log.append(sample[i : i + 500])
        small_s = time.perf_counter() - t0
        small_log.close()

        store = open_store(settings)
        ingest = BronzeIngest(log, store, settings.pipeline.consumer_group, engine=DuckDB())
        t0 = time.perf_counter()
        commits = 0
        while ingest.step(args.ingest_batch):
            commits += 1
        ingest_s = time.perf_counter() - t0
        bronze_rows = store.open(RAW_EVENTS).count()
        assert bronze_rows == len(messages), (bronze_rows, len(messages))
        log.close()

        n = len(messages)
        print(f"machine: {machine()}")
        print(f"input: {n} simulated events, {size_mb:.0f} MiB NDJSON")
        print(
            f"embedded log durable append: {n / append_s:,.0f} events/s "
            f"({append_s:.1f} s, fsync'd batches of {args.batch})"
        )
        print(
            f"embedded log durable append, batches of 500: {len(sample) / small_s:,.0f} events/s "
            f"({len(sample)} events in {small_s:.1f} s)"
        )
        print(
            f"ingest log -> bronze.raw_events: {n / ingest_s:,.0f} events/s "
            f"({ingest_s:.1f} s, {commits} commits of <= {args.ingest_batch})"
        )
        print(f"peak RSS: {peak_rss_mb():,.0f} MiB")
        print(f"reproduce: {command()}")
    finally:
        shutil.rmtree(settings_home, ignore_errors=True)


if __name__ == "__main__":
    main()
