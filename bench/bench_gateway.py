"""Gateway benchmark: ``shoplake serve`` loaded over loopback by wrk, beside its ceiling.

In one run, with wrk (C; Debian: apt-get install wrk) as the load generator:

- ceiling: a trivial endpoint answering 202 on the same server stack
  (bench/gateway_ceiling.py), single-event requests over 32 connections;
- batches: POST /v1/events with NDJSON bodies of 500 events, 8 connections
  (aim >= 150k events/s);
- single events: one event per request, 32 connections (aim >= 80% of the ceiling);
- latency: single events at half that rate from this process, paced (open loop: latency
  counts from the moment a request was due, so a slow answer cannot hide the queue
  behind it; aim p99 <= 50 ms).

Every 202 means the events were fsync'd to the embedded log (group commit).

Run:  .venv/bin/python bench/bench_gateway.py [--seconds 10] [--connections 8]
      [--baseline CHECKOUT]   (another commit's gateway too, e.g. a git worktree)
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from common import command, machine

from shoplake.simulator import ShopSimulator

NDJSON = {"Content-Type": "application/x-ndjson"}


def start(
    command: list[str], home: Path, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHOPLAKE_HOME": str(home), **(env or {})}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except urllib.error.HTTPError:  # the ceiling has no /healthz: it is up
            return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{command} did not start")


def post(conn: http.client.HTTPConnection, body: bytes) -> None:
    conn.request("POST", "/v1/events", body, NDJSON)
    response = conn.getresponse()
    response.read()
    if response.status != 202:
        raise SystemExit(f"gateway answered {response.status}")


def paced(
    port: int, lines: list[bytes], rate: float, connections: int, seconds: float
) -> list[float]:
    """Latencies (s) of single-event requests sent at ``rate`` per second in all."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    interval = connections / rate
    begin = time.perf_counter() + 0.2

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        due = begin + i * interval / connections
        for line in itertools.cycle(lines[i::connections]):
            if due >= begin + seconds:
                return
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            post(conn, line)
            latencies[i].append(time.perf_counter() - due)
            due += interval

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(x for per in latencies for x in per)


def wrk(port: int, body: bytes, connections: int, seconds: float) -> float:
    """Requests/s of ``wrk`` posting ``body`` over ``connections`` for ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/x-ndjson"\n'
            f"wrk.body = [==[{body.decode()}]==]\n"
            "response = function(status, headers, body)\n"
            '  if status ~= 202 then error("status " .. status) end\n'
            "end\n"
        )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "-s", script.name,
         f"http://127.0.0.1:{port}/v1/events"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)
    return float(out.split("Requests/sec:")[1].split()[0])


def gateway_figures(
    src: Path | None, home: Path, port: int, lines: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """wrk's batch and single-event figures, and the paced latency, of ``shoplake serve``
    (from ``src``, a checkout's src/ folder, when given)."""
    env = {} if src is None else {"PYTHONPATH": str(src)}
    singles = args.connections * 4
    gateway = start(
        [sys.executable, "-m", "shoplake.cli", "serve", "--no-auth", "--port", str(port)],
        home, port, env,
    )  # fmt: skip
    try:
        batch = 500 * wrk(port, b"\n".join(lines[:500]), args.connections, args.seconds)
        single = wrk(port, lines[0], singles, args.seconds)
        lat = paced(port, lines, single / 2, singles, args.seconds)
    finally:
        gateway.terminate()
        gateway.wait()
    p99 = lat[int(len(lat) * 0.99) - 1]
    return {"batch": batch, "single": single, "paced": single / 2,
            "p50": statistics.median(lat) * 1000, "p99": p99 * 1000}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8, help="for batches; x4 single")
    parser.add_argument(
        "--baseline", type=Path, help="a checkout of another commit, measured in the same run"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("bench_gateway needs wrk on PATH (Debian: apt-get install wrk)")
    lines = [e.value for e in itertools.islice(ShopSimulator(7).stream(), 20_000)]
    singles = args.connections * 4
    port = 18_000 + os.getpid() % 1000
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        ceiling_server = start(
            [sys.executable, str(Path(__file__).with_name("gateway_ceiling.py")), str(port)],
            Path(tmp), port,
        )  # fmt: skip
        try:
            ceiling = wrk(port, lines[0], singles, args.seconds)
        finally:
            ceiling_server.terminate()
            ceiling_server.wait()
        runs["this checkout"] = gateway_figures(None, Path(tmp) / "a", port, lines, args)
        if args.baseline is not None:
            runs[f"baseline {args.baseline}"] = gateway_figures(
                args.baseline / "src", Path(tmp) / "b", port, lines, args
            )
    print(f"ceiling: trivial endpoint on the same stack, single events, {singles} connections: "
          f"{ceiling:,.0f} requests/s (wrk)")  # fmt: skip
    for name, r in runs.items():
        print(f"-- {name}")
        print(f"  batches of 500, {args.connections} connections (wrk):"
              f"{r['batch']:>12,.0f} events/s    aim >= 150,000")  # fmt: skip
        print(f"  single events, {singles} connections (wrk):"
              f"{r['single']:>14,.0f} requests/s  {r['single'] / ceiling:.0%} of the ceiling"
              " (aim >= 80%)")  # fmt: skip
        print(f"  single events paced at {r['paced']:,.0f}/s (Python client): "
              f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms    aim p99 <= 50 ms")  # fmt: skip
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
