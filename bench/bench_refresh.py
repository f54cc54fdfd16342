"""One pass of the gold refresher on a day that already holds ``--events`` events: how
long each REFRESH-lane model takes to take in the next ``--batch`` events (5 s of a
5k events/s shop), the pass in all, and the process's peak RSS.

The home is built once (simulated events stamped now, so the day is today, as in the
demo), then each pass appends a batch, brings silver and silver.order_payments up to
date, and steps the refresher's models one after the other as its thread does. With
``--compare DIR`` the same passes run again from the checkout in DIR (another commit of
shoplake, ``src/`` importable) on a copy of the same home: the two sides of one run.

Run:  .venv/bin/python bench/bench_refresh.py [--events 1000000] [--batch 25000]
          [--passes 3] [--compare /tmp/shoplake-before]
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from common import command, machine, measured_from, peak_rss_mb


def _feed(home: Path, events: int, seed: int) -> None:
    from shoplake.settings import Settings
    from shoplake.simulator import ShopSimulator
    from shoplake.simulator.sinks import route
    from shoplake.transport import open_transport

    settings = Settings(home=home)
    transport = open_transport(settings)
    stream = itertools.islice(ShopSimulator(seed, realtime=True, bad_ratio=0.02).stream(), events)
    try:
        for chunk in iter(lambda: list(itertools.islice(stream, 50_000)), []):
            transport.append([route(e.value, settings.topics) for e in chunk])
    finally:
        transport.close()


def build(home: Path, events: int) -> None:
    from shoplake.pipeline.runner import Pipeline
    from shoplake.settings import Settings

    _feed(home, events, seed=7)
    pipeline = Pipeline(Settings(home=home, pipeline={"catch_up_gold_every_s": 0}))
    pipeline.run("both", until_idle=True)
    pipeline.close()


def measure(home: Path, batch: int, passes: int) -> dict[str, object]:
    """Each pass's seconds per refresher model (this process's shoplake)."""
    from shoplake.engines import open_engine
    from shoplake.pipeline.registry import Lane, build_models
    from shoplake.pipeline.runner import Pipeline
    from shoplake.settings import Settings
    from shoplake.tables import open_store

    settings = Settings(home=home)
    pipeline = Pipeline(settings)
    store = open_store(settings)
    engine = open_engine(settings.engine)
    shared = None
    if "shared" in inspect.signature(build_models).parameters:  # commits with SharedReads
        from shoplake.pipeline.positions import SharedReads

        shared = SharedReads()
        models = build_models(
            store, settings.reporting, engine, lanes=(Lane.REFRESH,), shared=shared
        )
    else:
        models = build_models(store, settings.reporting, engine, lanes=(Lane.REFRESH,))
    tps = pipeline.transport.partitions()
    runs = []
    for n in range(passes):
        _feed(home, batch, seed=100 + n)
        pipeline.run("ingestion", until_idle=True)
        while pipeline.process_once(fast_only=True):
            pass
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        with shared.one_pass() if shared is not None else nullcontext():
            for model in models:
                t = time.perf_counter()
                model.step(tps)
                seconds[model.spec.qualified] = round(time.perf_counter() - t, 3)
        seconds["pass"] = round(time.perf_counter() - started, 3)
        runs.append(seconds)
    pipeline.close()
    store.close()
    return {"passes": runs, "peak_rss_mb": round(_vm_hwm_mb())}


def _vm_hwm_mb() -> float:
    """This process's peak RSS since its exec (ru_maxrss would carry the parent's over)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="the day so far")
    parser.add_argument("--batch", type=int, default=25_000, help="new events per pass")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="another checkout, run on the same home")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one side
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.batch, args.passes)))
        return
    here = Path(__file__).resolve().parents[1]
    sides = {"this checkout": here / "src"}
    if args.compare:
        sides[f"{args.compare}"] = args.compare.resolve() / "src"
    with tempfile.TemporaryDirectory(prefix="bench-refresh-") as tmp:
        built = Path(tmp) / "built"
        started = time.perf_counter()
        build(built, args.events)
        print(f"built a day of {args.events:,} events in {time.perf_counter() - started:.0f} s")
        results = {}
        for name, src in sides.items():
            home = Path(tmp) / "side"
            shutil.copytree(built, home)
            results[name] = measured_from(
                src, __file__, "--measure", str(home), "--batch", str(args.batch),
                "--passes", str(args.passes),
            )  # fmt: skip
            shutil.rmtree(home)
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    for name, result in results.items():
        print(f"\n{name}: peak RSS {result['peak_rss_mb']} MiB")
        passes = result["passes"]
        assert isinstance(passes, list)
        for table in passes[0]:
            figures = "  ".join(f"{p[table]:7.2f}" for p in passes)
            print(f"  {table:36s} {figures}  s")


if __name__ == "__main__":
    main()
