"""Memory of the demo over a few minutes at a steady load, by process: the demo itself and
its children (the gold refresh lane with ``SHOPLAKE_PIPELINE__GOLD_REFRESH_PROCESS=true``).

Starts ``shoplake demo --rate 0`` on a fresh home and a ``shoplake generate --continuous``
sender at R events/s, samples RSS every 5 s, and reports mean and max over the second half
of the run (the first half is warm-up). A short side-by-side check; the 30-minute curve is
bench_soak.py's. ``--compare DIR`` runs the same from another checkout (``src/`` of DIR)
afterwards; settings come from the environment, as for the demo.

Run:  .venv/bin/python bench/bench_demo_memory.py [--seconds 180] [--rate 5000]
          [--compare /tmp/shoplake-before]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import child_pids, command, machine, own_rss_mb, wait_up


def measure(src: Path | None, seconds: float, rate: float) -> dict[str, float]:
    """Mean and max RSS (MiB) of the demo, its children and both, over the second half."""
    home = tempfile.mkdtemp(prefix="bench-demo-memory-")
    env = {**os.environ, "SHOPLAKE_HOME": home}
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    port = str(19_500 + os.getpid() % 400)
    shoplake = [sys.executable, "-m", "shoplake.cli"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    demo = subprocess.Popen([*shoplake, "demo", "--rate", "0", "--port", port], env=env, **quiet)
    sender = None
    samples: list[tuple[float, float, float]] = []
    try:
        wait_up(f"http://127.0.0.1:{port}")
        sender = subprocess.Popen(
            [*shoplake, "generate", "--continuous", "--rate", str(rate), "--bad-ratio", "0.02",
             "--to", f"http://127.0.0.1:{port}"],
            env=env, **quiet,
        )  # fmt: skip
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            time.sleep(5)
            children = sum(r for r in map(own_rss_mb, child_pids(demo.pid)) if r == r)
            samples.append((elapsed, own_rss_mb(demo.pid), children))
    finally:
        if sender is not None:
            sender.terminate()
            sender.wait(30)
        demo.terminate()
        demo.wait(120)
        shutil.rmtree(home, ignore_errors=True)
    late = [s for s in samples if s[0] >= seconds / 2]
    out: dict[str, float] = {}
    for name, values in (
        ("demo", [s[1] for s in late]),
        ("children", [s[2] for s in late]),
        ("total", [s[1] + s[2] for s in late]),
    ):
        out[f"{name}_mean"] = statistics.mean(values)
        out[f"{name}_max"] = max(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--rate", type=float, default=5000, help="events/s")
    parser.add_argument("--compare", type=Path, help="another checkout, measured after")
    args = parser.parse_args()
    sides: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.compare is not None:
        sides.append((str(args.compare), args.compare))
    print(f"demo at {args.rate:,.0f} events/s for {args.seconds:.0f} s; RSS (MiB) over the "
          "second half, mean / max")  # fmt: skip
    print(f"{'side':<28} {'demo':>13} {'children':>13} {'total':>13}")
    for label, src in sides:
        m = measure(src, args.seconds, args.rate)
        parts = ("demo", "children", "total")
        cells = [f"{m[f'{k}_mean']:,.0f} / {m[f'{k}_max']:,.0f}" for k in parts]
        print(f"{label:<28} " + " ".join(f"{c:>13}" for c in cells))
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
