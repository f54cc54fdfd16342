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

This machine's rates swing ±15% from one minute to the next, so each side (the ceiling,
this checkout, a baseline) is measured in ``--rounds`` alternating rounds and the medians
are reported, with the server's CPU time per event or request (utime + stime of its
process over the wrk run): less noisy than the rate, and what a change saves.

Run:  .venv/bin/python bench/bench_gateway.py [--seconds 10] [--connections 8]
      [--rounds 3] [--baseline CHECKOUT]   (another commit's gateway too, e.g. a worktree)
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
from collections.abc import Iterable
from pathlib import Path

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


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU time the process has used so far (Linux)."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    port: int, body: bytes, connections: int, seconds: float, server: subprocess.Popen[bytes]
) -> tuple[float, float]:
    """Requests/s of ``wrk`` posting ``body`` over ``connections`` for ``seconds``, and the
    ``server``'s CPU µs per request meanwhile."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/x-ndjson"\n'
            f"wrk.body = [==[{body.decode()}]==]\n"
            "response = function(status, headers, body)\n"
            '  if status ~= 202 then error("status " .. status) end\n'
            "end\n"
        )
    used = cpu_seconds(server)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "-s", script.name,
         f"http://127.0.0.1:{port}/v1/events"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    used = cpu_seconds(server) - used
    os.unlink(script.name)
    rate = float(out.split("Requests/sec:")[1].split()[0])
    return rate, used / (rate * seconds) * 1e6


def gateway_round(
    src: Path | None, home: Path, port: int, lines: list[bytes], args: argparse.Namespace
) -> dict[str, float]:
    """One round of wrk's batch and single-event figures of ``shoplake serve`` (from
    ``src``, a checkout's src/ folder, when given), on a fresh home."""
    gateway = serve(src, home, port)
    try:
        batch, batch_cpu = wrk(
            port, b"\n".join(lines[:500]), args.connections, args.seconds, gateway
        )
        single, single_cpu = wrk(port, lines[0], args.connections * 4, args.seconds, gateway)
    finally:
        gateway.terminate()
        gateway.wait()
        shutil.rmtree(home, ignore_errors=True)
    return {"batch": batch * 500, "batch_cpu": batch_cpu / 500, "single": single,
            "single_cpu": single_cpu}  # fmt: skip


def serve(src: Path | None, home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {} if src is None else {"PYTHONPATH": str(src)}
    return start(
        [sys.executable, "-m", "shoplake.cli", "serve", "--no-auth", "--port", str(port)],
        home, port, env,
    )  # fmt: skip


def paced_latency(
    src: Path | None, home: Path, port: int, lines: list[bytes], rate: float, connections: int,
    seconds: float,
) -> tuple[float, float]:  # fmt: skip
    """p50 and p99 (ms) of single events paced at ``rate``."""
    gateway = serve(src, home, port)
    try:
        lat = paced(port, lines, rate, connections, seconds)
    finally:
        gateway.terminate()
        gateway.wait()
    return statistics.median(lat) * 1000, lat[int(len(lat) * 0.99) - 1] * 1000


def listed(rates: Iterable[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8, help="for batches; x4 single")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument(
        "--baseline", type=Path, help="a checkout of another commit, measured in the same run"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("bench_gateway needs wrk on PATH (Debian: apt-get install wrk)")
    lines = [e.value for e in itertools.islice(ShopSimulator(7).stream(), 20_000)]
    singles = args.connections * 4
    port = 18_000 + os.getpid() % 1000
    sides: dict[str, Path | None] = {"this checkout": None}
    if args.baseline is not None:
        sides[f"baseline {args.baseline}"] = args.baseline / "src"
    ceilings: list[tuple[float, float]] = []
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        for r in range(args.rounds):
            ceiling_server = start(
                [sys.executable, str(Path(__file__).with_name("gateway_ceiling.py")), str(port)],
                Path(tmp), port,
            )  # fmt: skip
            try:
                ceilings.append(wrk(port, lines[0], singles, args.seconds, ceiling_server))
            finally:
                ceiling_server.terminate()
                ceiling_server.wait()
            for i, (name, src) in enumerate(sides.items()):
                home = Path(tmp) / f"{r}-{i}"
                rounds[name].append(gateway_round(src, home, port, lines, args))
        # p99 at half of each side's median single-event rate
        paced_at = {n: statistics.median(x["single"] for x in rs) / 2 for n, rs in rounds.items()}
        latency = {
            name: paced_latency(
                src, Path(tmp) / f"paced-{i}", port, lines, paced_at[name], singles, args.seconds
            )
            for i, (name, src) in enumerate(sides.items())
        }
    ceiling = statistics.median(rate for rate, _ in ceilings)
    ceiling_cpu = statistics.median(cpu for _, cpu in ceilings)
    print(f"ceiling: trivial endpoint on the same stack, single events, {singles} connections: "
          f"{ceiling:,.0f} requests/s (wrk), server CPU {ceiling_cpu:.0f} µs a request"
          f"  [rounds: {listed(rate for rate, _ in ceilings)}]")  # fmt: skip
    for name, rs in rounds.items():
        med = {key: statistics.median(x[key] for x in rs) for key in rs[0]}
        p50, p99 = latency[name]
        print(f"-- {name} (medians of {len(rs)} rounds)")
        print(f"  batches of 500, {args.connections} connections (wrk):"
              f"{med['batch']:>12,.0f} events/s    aim >= 150,000"
              f"   server CPU {med['batch_cpu']:.2f} µs an event"
              f"  [rounds: {listed(x['batch'] for x in rs)}]")  # fmt: skip
        print(f"  single events, {singles} connections (wrk):"
              f"{med['single']:>14,.0f} requests/s  {med['single'] / ceiling:.0%} of the ceiling"
              f" (aim >= 80%)   server CPU {med['single_cpu']:.0f} µs a request"
              f"  [rounds: {listed(x['single'] for x in rs)}]")  # fmt: skip
        print(f"  single events paced at {paced_at[name]:,.0f}/s (Python client): "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms    aim p99 <= 50 ms")  # fmt: skip
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
