"""Batch benchmark: one file of simulated events to every silver and gold table.

Three jobs over the same NDJSON file (2M events by default, the demo's bad-data mix),
each timed as a whole process from a cold start, one after the other:

- shoplake: ``shoplake ingest FILE`` then ``shoplake run --until-idle`` (Delta tables);
- shoplake on Iceberg tables (``--iceberg``): the same with SHOPLAKE_TABLES__FORMAT=iceberg;
- shoplake on Spark (local[*]): the same two commands with ``run --engine spark``:
  ingestion in the Python worker, silver and gold as Spark jobs (``.[spark]``, Java 17+);
- PySpark local mode doing the same silver + gold work (bench/reference_spark.py), the
  engine of the seed projects (``pip install -e '.[bench]'``, Java 17+);
- one hand-written DuckDB script doing the same work (bench/reference_duckdb.py): the
  practical limit on this machine.

Run:  .venv/bin/python bench/bench_batch.py [--events N] [--skip-spark] [--iceberg]
      [--baseline DIR]

--baseline DIR times shoplake from another source tree too (a ``git worktree`` of an
older commit), on the same input in the same run: before and after, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OUT, command, machine, simulated_ndjson

BENCH = Path(__file__).parent
PYTHON = sys.executable
SHOPLAKE = [PYTHON, "-m", "shoplake.cli"]


def measured(steps: list[list[str]], env: dict[str, str]) -> dict[str, float]:
    """Run ``steps`` one after the other in a child process of our own, so that the peak
    memory reported (the largest of its children) is this job's alone."""
    probe = (
        "import json, resource, subprocess, sys, time\n"
        "steps = json.loads(sys.argv[1])\n"
        "t = time.perf_counter()\n"
        "out = [subprocess.run(s, check=True, capture_output=True, text=True).stdout"
        " for s in steps]\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'wall_s': wall, 'peak_rss_mb': rss, 'stdout': out[-1]}))\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", probe, json.dumps(steps)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"job failed: {steps}\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def shoplake_counts(home: Path, env: dict[str, str]) -> dict[str, int]:
    listed = subprocess.run(
        [*SHOPLAKE, "tables", "--json"], env=env, check=True, capture_output=True, text=True
    ).stdout
    tables = [json.loads(line) for line in listed.splitlines() if line.strip()]
    return {t["name"]: t["rows"] for t in tables}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--bad-ratio", type=float, default=0.02)
    parser.add_argument(
        "--skip-spark", action="store_true", help="Leave out the jobs that run on Spark."
    )
    parser.add_argument(
        "--baseline", type=Path, help="A source tree (git worktree) to time shoplake from too."
    )
    parser.add_argument(
        "--iceberg", action="store_true", help="Time shoplake on Iceberg tables too."
    )
    args = parser.parse_args()

    source = simulated_ndjson(args.events, bad_ratio=args.bad_ratio)
    size_mb = source.stat().st_size / 2**20
    print(f"input: {source.name}, {args.events:,} events, {size_mb:,.0f} MiB")
    work = Path(tempfile.mkdtemp(prefix="bench-batch-", dir=OUT))
    results: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    try:
        runs = {"shoplake": ["run", "--until-idle"]}
        if args.baseline:
            runs[f"shoplake @ {args.baseline.name}"] = runs["shoplake"]
        if args.iceberg:
            runs["shoplake on Iceberg tables"] = runs["shoplake"]
        if not args.skip_spark:
            runs["shoplake on Spark (local[*])"] = ["run", "--until-idle", "--engine", "spark"]
        for name, run in runs.items():
            home = work / "".join(c if c.isalnum() else "_" for c in name)
            env = {**os.environ, "SHOPLAKE_HOME": str(home)}
            if name.startswith("shoplake @"):
                env["PYTHONPATH"] = str(args.baseline.resolve() / "src")
            if name == "shoplake on Iceberg tables":
                env["SHOPLAKE_TABLES__FORMAT"] = "iceberg"
            results[name] = measured([[*SHOPLAKE, "ingest", str(source)], [*SHOPLAKE, *run]], env)
            results[name].pop("stdout")
            counts[name] = shoplake_counts(home, env)
            print(f"{name}: {results[name]['wall_s']:.1f} s", flush=True)
        jobs = {"duckdb script": "reference_duckdb.py"}
        if not args.skip_spark:
            jobs["pyspark local"] = "reference_spark.py"
        for name, script in jobs.items():
            out = work / script.removesuffix(".py")
            results[name] = measured(
                [[PYTHON, str(BENCH / script), str(source), str(out)]], dict(os.environ)
            )
            last = str(results[name].pop("stdout")).strip().splitlines()[-1]
            counts[name] = json.loads(last)["rows"]
            print(f"{name}: {results[name]['wall_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["shoplake"]["wall_s"]
    print(f"\n{'job':<30}{'wall s':>9}{'events/s':>12}{'peak RSS MiB':>14}{'÷ shoplake':>12}")
    for name, r in results.items():
        print(
            f"{name:<30}{r['wall_s']:>9.1f}{args.events / r['wall_s']:>12,.0f}"
            f"{r['peak_rss_mb']:>14,.0f}{r['wall_s'] / base:>12.2f}"
        )
    tables = sorted({t for c in counts.values() for t in c if not t.startswith("bronze.")})
    print(f"\n{'rows':<32}" + "".join(f"{n[:16]:>18}" for n in counts))
    for table in tables:
        print(f"{table:<32}" + "".join(f"{c.get(table, '-')!s:>18}" for c in counts.values()))
    print(f"\nmachine: {machine()}\nreproduce: {command()}")


if __name__ == "__main__":
    main()
