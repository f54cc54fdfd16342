"""End-to-end latency measured from the client's side: order sent → counted in gold.

Starts ``shoplake demo --rate 0`` (gateway, pipeline and dashboard in one process) on a
fresh home and loads it with a separate ``shoplake generate --continuous --rate R --to
http://…`` process, as shops are outside the server. Meanwhile this process sends a
*marker* every ``--marker-every`` seconds: one shopper's page view, cart add, order and
captured payment in one request, in a minute of its own on a day in the past that only
markers touch (three days ago, the next marker a minute later; the simulator's late
events are at most 2 h late), so no other event touches the marker's minute or day.

The clock starts before the marker's request is sent and stops when a Delta reader in
this process (deltalake, polling) first sees the marker's minute in
``gold.fct_sales_minute`` (every 50 ms), and in each daily gold table (every 250 ms) its
day's count of markers (orders, sessions, customers) reach the marker's own ordinal of
the day. (``--day-per-marker``: each marker on a day of its own, the day before the
last's, seen when its day appears. That was this bench's design until 2026-12-06; it
makes every silver table gain a partition a second, which no shop's traffic does.)
Every marker counts; one never seen within ``--grace`` seconds after the run
counts as infinite. The pipeline's own histogram (from the transport append to the end of
the gold round, queueing left out) is printed beside it for comparison only, and so is
where the machine's CPU went while markers were sent: the demo (its children included),
the sender, and this process's readers. Last, where the demo's time went: each pipeline
step's mean duration per minute of the run, from its step trace (pipeline/steptrace.py).

Aims (issue 16): fct_sales_minute p95 <= 1 s, every other gold table p95 <= 5 s.

Run:  .venv/bin/python bench/bench_latency.py [--rate 5000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import itertools
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow.compute as pc
from common import child_pids, command, cpu_seconds, get_json, machine, wait_up
from deltalake import DeltaTable

from shoplake.contract.tables import (
    CATEGORY_PERFORMANCE,
    DAILY_CUSTOMER_ANALYTICS,
    DAILY_SALES_SUMMARY,
    DAILY_TRAFFIC_SOURCES,
    FCT_SALES_MINUTE,
    FUNNEL_DAILY,
    PRODUCT_ANALYTICS,
    TableSpec,
)
from shoplake.pipeline.steptrace import ENV as STEP_TRACE
from shoplake.pipeline.steptrace import step_times
from shoplake.settings import Settings
from shoplake.tables import open_store

SHOPLAKE = [sys.executable, "-m", "shoplake.cli"]
# every gold table a shopper's day of activity adds a row to (data_quality_report is by day
# of arrival, not of the events: no marker of its own is possible there)
DAILY = (DAILY_SALES_SUMMARY, DAILY_TRAFFIC_SOURCES, FUNNEL_DAILY, CATEGORY_PERFORMANCE,
         PRODUCT_ANALYTICS, DAILY_CUSTOMER_ANALYTICS)  # fmt: skip


# Per daily table: what counts a day's markers (None: its rows, one per customer and day).
MARKERS_COUNTED: dict[str, str | None] = {
    DAILY_SALES_SUMMARY.name: "orders_placed",
    DAILY_TRAFFIC_SOURCES.name: "sessions",
    FUNNEL_DAILY.name: "sessions",
    CATEGORY_PERFORMANCE.name: "orders",
    PRODUCT_ANALYTICS.name: "total_purchases",
    DAILY_CUSTOMER_ANALYTICS.name: None,
}


@dataclass
class Marker:
    minute: dt.datetime  # UTC
    day: dt.date  # the minute's day in the reporting time zone
    ordinal: int  # of the markers on that day, 1 for the first
    sent: float  # monotonic, just before the request
    seen: dict[str, float] = field(default_factory=dict)  # table → seconds after sent


def marker_minutes(day_per_marker: bool, zone: ZoneInfo) -> Iterator[tuple[dt.datetime, dt.date]]:
    """Each marker's minute and its local day: from 00:30 UTC three days ago a minute
    apart (a day full, the day before), or noon of a day of its own."""
    first = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    for n in itertools.count():
        if day_per_marker:
            minute = dt.datetime.combine(first - dt.timedelta(days=n), dt.time(12), dt.UTC)
        else:
            day = first - dt.timedelta(days=n // 1380)
            minute = dt.datetime.combine(day, dt.time(0, 30), dt.UTC)
            minute += dt.timedelta(minutes=n % 1380)
        yield minute, minute.astimezone(zone).date()


def marker_events(run: str, i: int, minute: dt.datetime) -> bytes:
    """A shopper's page view, cart add, order and its captured payment at ``minute``."""
    ts = minute.strftime("%Y-%m-%dT%H:%M:%SZ")
    who = {"user_id": f"marker-{run}-{i}", "session_id": f"marker-{run}-{i}",
           "timestamp": ts, "device": "desktop", "country": "DE"}  # fmt: skip
    item = {"product_id": "MARKER", "category": "marker", "quantity": 1, "unit_price": 10.0}
    events = [
        {"event_type": "page_view", "page_type": "product", "page_url": "/p/MARKER",
         "product_id": "MARKER", "category": "marker", "traffic_source": "direct"},
        {"event_type": "add_to_cart", **item, "currency": "USD"},
        {"event_type": "purchase", "order_id": f"marker-{run}-{i}", "items": [item],
         "total_amount": 10.0, "currency": "USD", "payment_method": "card"},
        {"event_type": "payment", "payment_id": f"marker-{run}-{i}",
         "order_id": f"marker-{run}-{i}", "amount_cents": 1000, "currency": "USD",
         "status": "captured"},
    ]  # fmt: skip
    return b"\n".join(
        orjson.dumps({"event_id": f"marker-{run}-{i}-{n}", **who, **e})
        for n, e in enumerate(events)
    )


class Watcher(threading.Thread):
    """Polls one gold table for the markers' minutes or days; notes when each appears."""

    def __init__(self, uri: str, spec: TableSpec, markers: list[Marker], every: float) -> None:
        super().__init__(daemon=True)
        self.uri, self.spec, self.markers, self.every = uri, spec, markers, every
        self.column = "minute_bucket" if spec is FCT_SALES_MINUTE else "partition_date"
        self.stop = threading.Event()

    def _seen(self, table: DeltaTable, waiting: list[Marker]) -> list[Marker]:
        """The waiting markers the table shows: its minute, or its day's count of markers
        up to its ordinal."""
        if self.column == "minute_bucket":
            minutes = [m.minute for m in waiting]
            found = table.to_pyarrow_dataset().to_table(
                columns=[self.column], filter=pc.field(self.column).isin(minutes)
            )
            present = set(found[self.column].to_pylist())
            return [m for m in waiting if m.minute in present]
        counted = MARKERS_COUNTED[self.spec.name]
        days = sorted({m.day for m in waiting})
        found = table.to_pyarrow_dataset().to_table(
            columns=[self.column, *([counted] if counted else [])],
            filter=pc.field(self.column).isin(days),
        )
        if counted is None:
            totals = found.group_by(self.column).aggregate([([], "count_all")])
        else:
            totals = found.group_by(self.column).aggregate([(counted, "sum")])
        count = dict(zip(totals[self.column].to_pylist(), totals.columns[-1].to_pylist(),
                         strict=True))  # fmt: skip
        return [m for m in waiting if count.get(m.day, 0) >= m.ordinal]

    def run(self) -> None:
        table: DeltaTable | None = None
        checked = (-1, 0)  # (version, markers sent) last looked for: the same holds nothing new
        while not self.stop.wait(self.every):
            sent = list(self.markers)
            waiting = [m for m in sent if self.spec.name not in m.seen]
            if not waiting:
                continue
            try:
                if table is None:
                    table = DeltaTable(self.uri)
                else:
                    table.update_incremental()
            except Exception:  # not created yet
                continue
            if (table.version(), len(sent)) == checked:
                continue  # (reading it again only takes the cores the demo is measured on)
            checked = (table.version(), len(sent))
            seen = self._seen(table, waiting)
            now = time.monotonic()
            for m in seen:
                m.seen[self.spec.name] = now - m.sent


def post(port: int, body: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/events", body, {"Content-Type": "application/x-ndjson"})
        response = conn.getresponse()
        answer = response.read()
        if response.status != 202 or orjson.loads(answer)["rejected"]:
            raise SystemExit(f"a marker was refused: {response.status} {answer!r}")
    finally:
        conn.close()


def accepted_total(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("shoplake_events_accepted_total "):
                return float(line.split()[1])
    return 0.0


def cpu_of(pid: int) -> float:
    """CPU seconds of ``pid``, and of its children (the demo's gold lane as a process)
    unless it is this process (whose children are the demo and the sender)."""
    kids = [] if pid == os.getpid() else child_pids(pid)
    return cpu_seconds(pid) + sum(cpu_seconds(kid) for kid in kids)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def measure(args: argparse.Namespace) -> tuple[list[Marker], dict[str, Any]]:
    port = 19_000 + os.getpid() % 1000
    url = f"http://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    markers: list[Marker] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as home:
        trace = Path(home) / "steps.trace"
        env = {**os.environ, "SHOPLAKE_HOME": home, STEP_TRACE: str(trace)}
        store = open_store(Settings(home=Path(home)))
        demo = subprocess.Popen([*SHOPLAKE, "demo", "--rate", "0", "--port", str(port)],
                                env=env, **quiet)  # fmt: skip
        sender = watchers = None
        started, elapsed = time.monotonic(), 0.0
        try:
            wait_up(url)
            sender = subprocess.Popen(
                [*SHOPLAKE, "generate", "--continuous", "--rate", str(args.rate),
                 "--bad-ratio", "0.02", "--to", url],
                env=env, **quiet,
            )  # fmt: skip
            watchers = [
                Watcher(store.location(FCT_SALES_MINUTE), FCT_SALES_MINUTE, markers, 0.05),
                *(Watcher(store.location(s), s, markers, 0.25) for s in DAILY),
            ]
            for w in watchers:
                w.start()
            time.sleep(args.warmup)
            run = f"{os.getpid()}"
            zone = ZoneInfo(Settings(home=Path(home)).reporting.timezone)
            minutes = marker_minutes(args.day_per_marker, zone)
            on_day: defaultdict[dt.date, int] = defaultdict(int)
            started, accepted_before = time.monotonic(), accepted_total(url)
            processes = {"demo": demo.pid, "sender": sender.pid, "readers": os.getpid()}
            cpu_before = {name: cpu_of(pid) for name, pid in processes.items()}
            while time.monotonic() - started < args.seconds:
                minute, day = next(minutes)
                on_day[day] += 1
                body = marker_events(run, len(markers), minute)
                markers.append(Marker(minute, day, on_day[day], time.monotonic()))
                post(port, body)
                time.sleep(args.marker_every)
            elapsed = time.monotonic() - started
            cpu = {n: (cpu_of(pid) - cpu_before[n]) / elapsed for n, pid in processes.items()}
            accepted = (accepted_total(url) - accepted_before) / elapsed
            health = get_json(f"{url}/api/health")
            deadline = time.monotonic() + args.grace
            while time.monotonic() < deadline and any(len(m.seen) < len(watchers) for m in markers):
                time.sleep(0.2)
        finally:
            for w in watchers or []:
                w.stop.set()
            if sender is not None:
                sender.terminate()
                sender.wait(30)
            demo.terminate()
            demo.wait(120)
            store.close()
            steps = step_breakdown(trace.read_text(), started, elapsed) if trace.exists() else []
    runtime = health["runtime"]
    return markers, {"accepted": accepted, "lag": health["lag"], "cpu": cpu,
                     "own_p50": runtime.get("latency_p50_s"),
                     "own_p95": runtime.get("latency_p95_s"), "steps": steps}  # fmt: skip


def step_breakdown(trace: str, started: float, elapsed: float, top: int = 24) -> list[str]:
    """Lines: the steps that took the most time while markers were sent, each one's mean
    seconds a run per minute (the trace's clock is the machine's monotonic one, as ours)."""
    minutes = max(1, math.ceil(elapsed / 60))
    took: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(minutes)])
    for name, at, seconds in step_times(trace):
        minute = int((at - started) // 60)
        if 0 <= minute < minutes:
            took[name][minute].append(seconds)
    ranked = sorted(took, key=lambda n: -sum(map(sum, took[n])))[:top]
    head = "".join(f"{f'min {m + 1}':>9}" for m in range(minutes))
    lines = [f"{'step (mean s a run, runs)':<40}{head}"]
    for name in ranked:
        cells = "".join(
            f"{sum(runs) / len(runs):>6.2f}{len(runs):>3}" if runs else f"{'-':>9}"
            for runs in took[name]
        )
        lines.append(f"{name[:39]:<40}{cells}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000, help="background events/s")
    parser.add_argument("--seconds", type=float, default=60, help="how long markers are sent")
    parser.add_argument("--marker-every", type=float, default=1.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=15, help="seconds of load first")
    parser.add_argument("--grace", type=float, default=30, help="seconds to wait for gold")
    parser.add_argument("--day-per-marker", action="store_true",
                        help="each marker on a day of its own (the old design)")  # fmt: skip
    args = parser.parse_args()
    markers, run = measure(args)
    print(f"demo at {args.rate:,.0f} events/s by a separate sender "
          f"(accepted {run['accepted']:,.0f}/s, lag at the end {run['lag']:,}); "
          f"{len(markers)} markers ({'a day each' if args.day_per_marker else 'one day'}); "
          "clock: request sent → seen by a Delta reader")  # fmt: skip
    print(f"{'table':<28}{'p50':>8}{'p95':>8}{'max':>8}{'never seen':>12}   aim")
    for spec in (FCT_SALES_MINUTE, *DAILY):
        lat = [m.seen.get(spec.name, math.inf) for m in markers]
        aim = "p95 <= 1 s" if spec is FCT_SALES_MINUTE else "p95 <= 5 s"
        print(f"{spec.name:<28}{percentile(lat, 0.5):>7.2f}s{percentile(lat, 0.95):>7.2f}s"
              f"{max(lat):>7.2f}s{sum(map(math.isinf, lat)):>12}   {aim}")  # fmt: skip
    own50, own95 = run["own_p50"], run["own_p95"]
    if own50 is not None:
        print(f"(the pipeline's own histogram, append → gold round, queueing left out: "
              f"p50 {own50:.2f} s, p95 {own95:.2f} s)")  # fmt: skip
    cores = os.cpu_count() or 1
    shares = ", ".join(f"{name} {used:.2f}" for name, used in run["cpu"].items())
    print(
        f"CPU while markers were sent, in cores of {cores}: {shares}; "
        f"total {sum(run['cpu'].values()):.2f}"
    )
    if run["steps"]:
        print("where the demo's time went, minute by minute:")
        print("\n".join(run["steps"]))
    print(f"machine: {machine()}")
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
