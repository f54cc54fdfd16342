"""End-to-end latency of the demo's pipeline: gateway 202 → order counted in gold.

Starts ``shoplake demo --rate R`` (simulator → gateway over HTTP → embedded log → bronze →
silver → gold, one process) on a fresh home and, after the warm-up, reads the pipeline's
own measurement from /api/health: for every order and payment, the time from its append to
the transport (the moment before the gateway answers 202) to the end of the gold round
that included it in gold.fct_sales_minute. p50/p95 over the latest 20,000 such events.

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

from common import command, machine


def get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as r:
        result: dict[str, object] = json.loads(r.read())
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    port = 19_000 + os.getpid() % 1000
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as home:
        demo = subprocess.Popen(
            [sys.executable, "-m", "shoplake.cli", "demo", "--rate", str(args.rate),
             "--port", str(port), "--duration", str(args.seconds + 10)],
            env={**os.environ, "SHOPLAKE_HOME": home},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(args.seconds + 3)
            health = get(f"http://127.0.0.1:{port}/api/health")
        finally:
            demo.wait(120)
    runtime = health["runtime"]
    assert isinstance(runtime, dict)
    p50, p95 = runtime.get("latency_p50_s"), runtime.get("latency_p95_s")
    print(f"demo at {args.rate:,.0f} events/s for {args.seconds:.0f} s")
    print(
        f"accepted {runtime.get('accepted_per_s', 0):,.0f}/s, bronze "
        f"{runtime.get('bronze_per_s', 0):,.0f}/s, silver {runtime.get('silver_per_s', 0):,.0f}/s "
        f"(last 10 s); transport lag {health['lag']:,} records"
    )
    shown = "n/a" if p50 is None else f"p50 {p50:.2f} s, p95 {p95:.2f} s"
    print(f"end-to-end latency, gateway 202 → gold.fct_sales_minute: {shown}  (aim: p95 ≤ 2 s)")
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
