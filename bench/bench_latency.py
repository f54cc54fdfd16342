"""End-to-end latency of the demo's pipeline: gateway 202 → order counted in gold.

Starts ``shoplake demo`` (gateway over HTTP → embedded log → bronze → silver → gold, one
process) on a fresh home, loaded at R events/s two ways, side by side in one run:

- ``in-process``: the demo's own simulator thread posts to its gateway (``--rate R``);
- ``separate sender``: ``shoplake demo --rate 0`` and a ``shoplake generate --continuous
  --rate R --to http://…`` process, as shops are outside the server (the simulator no
  longer competes with the pipeline for the interpreter's lock).

After the run it reads the pipeline's own measurement from /api/health: for every order
and payment, the time from its append to the transport (the moment before the gateway
answers 202) to the end of the round that included it in gold.fct_sales_minute. p50/p95
over the latest 20,000 such events.

Run:  .venv/bin/python bench/bench_latency.py [--rate 5000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from common import command, machine

SHOPLAKE = [sys.executable, "-m", "shoplake.cli"]


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        result: dict[str, Any] = json.loads(r.read())
        return result


def accepted_total(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("shoplake_events_accepted_total "):
                return float(line.split()[1])
    return 0.0


def measure(rate: float, seconds: float, separate_sender: bool) -> dict[str, Any]:
    port = 19_000 + os.getpid() % 1000 + int(separate_sender)
    url = f"http://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as home:
        env = {**os.environ, "SHOPLAKE_HOME": home}
        demo = subprocess.Popen(
            [*SHOPLAKE, "demo", "--rate", "0" if separate_sender else str(rate),
             "--port", str(port), "--duration", str(seconds + 10)],
            env=env, **quiet,
        )  # fmt: skip
        sender = None
        try:
            time.sleep(3)  # the gateway is up
            if separate_sender:
                sender = subprocess.Popen(
                    [*SHOPLAKE, "generate", "--continuous", "--rate", str(rate),
                     "--bad-ratio", "0.02", "--to", url],
                    env=env, **quiet,
                )  # fmt: skip
            time.sleep(10)
            started, accepted_before = time.monotonic(), accepted_total(url)
            time.sleep(seconds - 10)
            accepted = (accepted_total(url) - accepted_before) / (time.monotonic() - started)
            health = get(f"{url}/api/health")
        finally:
            if sender is not None:
                sender.terminate()
                sender.wait(30)
            demo.wait(120)
    runtime = health["runtime"]
    return {
        "accepted": accepted,
        "p50": runtime.get("latency_p50_s"),
        "p95": runtime.get("latency_p95_s"),
        "lag": health["lag"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    print(f"demo at {args.rate:,.0f} events/s for {args.seconds:.0f} s; latency gateway 202 → "
          "gold.fct_sales_minute (aim: p95 ≤ 2 s)")  # fmt: skip
    print(f"{'load':<18}{'accepted/s':>12}{'p50':>9}{'p95':>9}{'lag at end':>12}")
    for separate in (False, True):
        r = measure(args.rate, args.seconds, separate)
        p50 = "n/a" if r["p50"] is None else f"{r['p50']:.2f} s"
        p95 = "n/a" if r["p95"] is None else f"{r['p95']:.2f} s"
        label = "separate sender" if separate else "in-process"
        print(f"{label:<18}{r['accepted']:>12,.0f}{p50:>9}{p95:>9}{r['lag']:>12,}")
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
