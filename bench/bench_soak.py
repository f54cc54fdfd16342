"""Soak: the demo under a steady load, SIGKILLed on a schedule, then reconciled.

Starts ``shoplake demo --rate 0`` (gateway, pipeline and dashboard in one process) on a
fresh home and posts valid simulated events to its gateway at R events/s from this
process, in batches, keeping the event id of every event answered 202 (a batch that fails,
while the demo is down, is dropped, never resent, so an id reaches the transport at most
once). Every K seconds the demo is SIGKILLed and started again on the same home. Every
10 s it samples the demo's RSS (its gold refresh lane's process included), the lag and
the pipeline's latency from /api/health.

At the end the demo is stopped, ``shoplake run --until-idle`` drains what is left, and:
every acknowledged event is in bronze exactly once, no transport record is in bronze
twice, silver holds every bronze event id once, and ``shoplake check`` passes.

Run:  .venv/bin/python bench/bench_soak.py [--minutes 60] [--rate 2000] [--kill-every 300]
      .venv/bin/python bench/bench_soak.py --minutes 30 --rate 5000 --kill-every 0 \
          --plot soak-memory.png     # memory only: no kills (issue 16's aim: <= 1 GB, flat)
Writes bench/out/soak.csv and, with matplotlib installed (the bench extra), docs/soak.png;
--plot names both.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import itertools
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from common import OUT, child_pids, command, get_json, machine, own_rss_mb, wait_up

from shoplake.contract.tables import QUARANTINE, RAW_EVENTS
from shoplake.pipeline.silver import SILVER_FROM_BRONZE
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.tables import open_store

SHOPLAKE = [sys.executable, "-m", "shoplake.cli"]
DOCS = Path(__file__).resolve().parents[1] / "docs"


class Sender(threading.Thread):
    """Posts batches at a steady rate; keeps the ids of what was acknowledged."""

    def __init__(self, port: int, rate: float, batch: int = 100) -> None:
        super().__init__(daemon=True)
        self.port, self.rate, self.batch = port, rate, batch
        self.events = (e.event for e in ShopSimulator(7, realtime=True).stream())
        self.acked: list[str] = []
        self.failed_batches = 0
        self.stop = threading.Event()

    def run(self) -> None:
        interval = self.batch / self.rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            events = [e for e in itertools.islice(self.events, self.batch) if e is not None]
            if self._post(events):
                self.acked.extend(e["event_id"] for e in events)
            else:
                self.failed_batches += 1
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()  # behind (demo down): do not burst to catch up

    def _post(self, events: list[dict[str, Any]]) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(
                "POST",
                "/v1/events",
                body=orjson.dumps(events),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            return response.status == 202
        except (OSError, http.client.HTTPException):  # refused, reset, cut short by a kill
            return False
        finally:
            conn.close()


def rss_mb(pid: int) -> float:
    """The RSS of ``pid`` and its descendants (the demo's gold refresh lane is a child
    process), or NaN when ``pid`` is gone."""
    own = own_rss_mb(pid)
    if own != own:  # NaN
        return own
    return own + sum(r for r in map(rss_mb, child_pids(pid)) if r == r)


def health(port: int) -> dict[str, Any]:
    try:
        return get_json(f"http://127.0.0.1:{port}/api/health")
    except (OSError, ValueError):
        return {}


def start_demo(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    demo = subprocess.Popen(
        [*SHOPLAKE, "demo", "--rate", "0", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_up(f"http://127.0.0.1:{port}")
    return demo


def verify(home: Path, acked: list[str]) -> dict[str, Any]:
    """Exactly once: bronze by lineage and for acknowledged ids, silver by event id."""
    store = open_store(Settings(home=home))
    try:
        rows = (
            store.open(RAW_EVENTS)
            .dataset()
            .to_table(columns=["raw_value", "topic", "partition", "offset"])
        )
        lineage = set(
            zip(*(rows[c].to_pylist() for c in ("topic", "partition", "offset")), strict=True)
        )
        bronze = Counter(orjson.loads(v)["event_id"] for v in rows["raw_value"].to_pylist())
        silver: Counter[str] = Counter()
        for spec in SILVER_FROM_BRONZE:
            if spec is not QUARANTINE and spec.key == ("event_id",):
                silver.update(
                    store.open(spec).dataset().to_table(columns=["event_id"])[0].to_pylist()
                )
    finally:
        store.close()
    return {
        "bronze rows": rows.num_rows,
        "transport records twice in bronze": rows.num_rows - len(lineage),
        "acknowledged": len(acked),
        "acknowledged missing from bronze": sum(1 for i in acked if bronze[i] == 0),
        "acknowledged twice in bronze": sum(1 for i in acked if bronze[i] > 1),
        "bronze ids missing from silver": sum(1 for i in bronze if silver[i] == 0),
        "ids twice in silver": sum(1 for n in silver.values() if n > 1),
    }


def plot(samples: list[dict[str, float]], kills: list[float], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    minutes = [s["t"] / 60 for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.2), sharex=True)
    top.plot(minutes, [s["rss_mb"] for s in samples], lw=1, label="RSS")
    dedupe = [s["dedupe_mb"] for s in samples]
    top.plot(minutes, dedupe, lw=1, label="of it: dedupe ids on the heap")
    top.legend(fontsize=7, loc="upper left")
    top.set_ylabel("demo (MiB)")
    bottom.plot(minutes, [s["lag"] for s in samples], lw=1, color="tab:orange")
    bottom.set_ylabel("lag (records)")
    bottom.set_xlabel("minutes")
    for k in kills:
        for ax in (top, bottom):
            ax.axvline(k / 60, color="grey", lw=0.5, ls="--")
    title = "kill -9 at the dashed lines" if kills else "no kills"
    top.set_title(f"soak: demo --rate 0 under load, {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=2000, help="events per second")
    parser.add_argument("--kill-every", type=float, default=300, help="seconds; 0: never")
    parser.add_argument("--sample-every", type=float, default=10, help="seconds")
    parser.add_argument("--plot", default="soak.png", help="file name of the plot in docs/")
    args = parser.parse_args()
    port = 19_500 + os.getpid() % 400
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "SHOPLAKE_HOME": str(home)}
        demo = start_demo(env, port)
        sender = Sender(port, args.rate)
        sender.start()
        began = time.monotonic()
        samples: list[dict[str, float]] = []
        kills: list[float] = []
        next_kill = args.kill_every if args.kill_every > 0 else math.inf
        while (elapsed := time.monotonic() - began) < args.minutes * 60:
            if elapsed >= next_kill:
                demo.send_signal(signal.SIGKILL)
                demo.wait()
                kills.append(elapsed)
                demo = start_demo(env, port)
                next_kill += args.kill_every
            h = health(port)
            runtime = h.get("runtime", {})
            samples.append(
                {
                    "t": round(elapsed, 1),
                    "rss_mb": round(rss_mb(demo.pid), 1),
                    "lag": h.get("lag", float("nan")),
                    "acked": len(sender.acked),
                    "latency_p95_s": runtime.get("latency_p95_s") or float("nan"),
                    "dedupe_mb": runtime.get("dedupe_index_memory_mib", float("nan")),
                    "dedupe_file_mb": runtime.get("dedupe_index_file_mib", float("nan")),
                }
            )
            print(
                f"{elapsed / 60:6.1f} min  RSS {samples[-1]['rss_mb']:7.1f} MiB  "
                f"lag {samples[-1]['lag']:>8}  acked {len(sender.acked):>10,}  "
                f"p95 {samples[-1]['latency_p95_s']:.2f} s  dedupe {samples[-1]['dedupe_mb']} MiB"
                f" (+{samples[-1]['dedupe_file_mb']} in files)",
                flush=True,
            )
            time.sleep(args.sample_every)
        sender.stop.set()
        sender.join()
        demo.send_signal(signal.SIGINT)
        demo.wait(300)
        drained = subprocess.run(
            [*SHOPLAKE, "run", "--until-idle"], env=env, capture_output=True, text=True
        )
        checked = subprocess.run(
            [*SHOPLAKE, "check", "--max-age", "3600"], env=env, capture_output=True, text=True
        )
        result = verify(home, sender.acked)
    samples_csv = OUT / f"{Path(args.plot).stem}.csv"
    with samples_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    drawn = plot(samples, kills, DOCS / args.plot)
    settled = [s["rss_mb"] for s in samples if s["t"] >= 300]
    print(f"\nsoak: {args.minutes:g} min at {args.rate:,.0f} events/s, "
          f"{len(kills)} kill -9 of the demo, {sender.failed_batches} batches refused "
          "while it was down (not resent)")  # fmt: skip
    if settled:
        middle = statistics.median(settled)
        print(f"RSS after the first 5 min: min {min(settled):.0f} MiB, "
              f"median {middle:.0f} MiB, max {max(settled):.0f} MiB "
              f"({(min(settled) / middle - 1) * 100:+.1f}% / "
              f"{(max(settled) / middle - 1) * 100:+.1f}% of the median)")  # fmt: skip
    for key, value in result.items():
        print(f"  {key:<36}{value:>12,}")
    print(f"drain: exit {drained.returncode}; check: exit {checked.returncode}")
    print(checked.stdout)
    missing = "no plot (matplotlib: pip install -e '.[bench]')"
    drew = f"plot: {DOCS / args.plot}" if drawn else missing
    print(f"samples: {samples_csv}; {drew}")
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")
    lost_or_doubled = (
        result["transport records twice in bronze"]
        + result["acknowledged missing from bronze"]
        + result["acknowledged twice in bronze"]
        + result["bronze ids missing from silver"]
        + result["ids twice in silver"]
    )
    sys.exit(1 if lost_or_doubled or drained.returncode or checked.returncode else 0)


if __name__ == "__main__":
    main()
