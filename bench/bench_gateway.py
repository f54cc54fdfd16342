"""Gateway benchmark: load from this process, the gateway in another, over loopback.

- batches: POST /v1/events with NDJSON bodies of 500 events, from several kept-alive
  connections at once, as fast as the gateway answers (aim >= 100k events/s);
- single events: one event per request, as fast as possible (aim >= 5k requests/s);
- latency: single events at half that rate, paced (open loop: latency counts from the
  moment a request was due, so a slow answer cannot hide the queue behind it).

Every 202 means the events were fsync'd to the embedded log (group commit). When ``wrk``
is installed (Debian: apt-get install wrk), the two closed-loop figures are also measured
with it: a load generator in C takes less of the CPU the gateway shares with it.

Run:  .venv/bin/python bench/bench_gateway.py [--events 300000] [--seconds 10]
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
import urllib.request
from pathlib import Path

from common import command, machine

from shoplake.simulator import ShopSimulator

NDJSON = {"Content-Type": "application/x-ndjson"}


def start_gateway(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHOPLAKE_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoplake.cli", "serve", "--no-auth", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gateway did not start")


def post(conn: http.client.HTTPConnection, body: bytes) -> None:
    conn.request("POST", "/v1/events", body, NDJSON)
    response = conn.getresponse()
    response.read()
    if response.status != 202:
        raise SystemExit(f"gateway answered {response.status}")


def batches(port: int, lines: list[bytes], connections: int) -> float:
    bodies = [b"\n".join(lines[i : i + 500]) for i in range(0, len(lines), 500)]
    work = iter(bodies)
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        while True:
            with lock:
                body = next(work, None)
            if body is None:
                return
            post(conn, body)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lines) / (time.perf_counter() - started)


def singles(port: int, lines: list[bytes], connections: int, seconds: float) -> float:
    done = [0] * connections
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for line in itertools.cycle(lines[i::connections]):
            if time.perf_counter() >= stop:
                return
            post(conn, line)
            done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - started)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    lines = [e.value for e in itertools.islice(ShopSimulator(7).stream(), args.events)]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        port = 18_000 + os.getpid() % 1000
        gateway = start_gateway(Path(tmp), port)
        try:
            batch_rate = batches(port, lines, args.connections)
            single_rate = singles(port, lines, args.connections * 4, args.seconds)
            lat = paced(port, lines, single_rate / 2, args.connections * 4, args.seconds)
            if shutil.which("wrk"):
                batch_body = b"\n".join(lines[:500])
                wrk_batch = 500 * wrk(port, batch_body, args.connections, args.seconds)
                wrk_single = wrk(port, lines[0], args.connections * 4, args.seconds)
        finally:
            gateway.terminate()
            gateway.wait()
    p50 = statistics.median(lat) * 1000
    p99 = lat[int(len(lat) * 0.99) - 1] * 1000
    print(f"batches of 500, {args.connections} connections:  {batch_rate:,.0f} events/s")
    print(f"single events, {args.connections * 4} connections: {single_rate:,.0f} requests/s")
    print(
        f"single events paced at {single_rate / 2:,.0f}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"({len(lat):,} requests)"
    )
    if shutil.which("wrk"):
        print(
            f"with wrk: batches of 500 {wrk_batch:,.0f} events/s, "
            f"single events {wrk_single:,.0f} requests/s"
        )
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
