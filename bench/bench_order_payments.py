"""silver.order_payments' upserts side by side: a merge on order_id vs the rewrite of the
files near the step's orders (TableSpec.cluster_by, tables/delta.py ``_rewrite_spans``).

Each step is what a pipeline round at ``--rate`` events/s gives the model, in the shop
simulator's mix (2.5% of events are orders, 5% payments): the round's new orders, and
payments for orders placed up to ``--pay-within`` seconds before; every ``--late-every``
steps one refund for an order placed early on. Both ways run the same steps through the
same Delta store, one after the other in this process, and report the time per step over
the first and the last ``--window`` steps, the rows in the table, the files it holds and
the bytes written to its folder (old versions included: vacuum keeps them for days).

Run:  .venv/bin/python bench/bench_order_payments.py [--steps 1200] [--rate 5000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from common import command, machine
from deltalake import DeltaTable

from shoplake.contract.tables import ORDER_PAYMENTS
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.tables.base import Located, merged_spans

START = datetime(2026, 12, 1, 9, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def rows(orders: dict[str, datetime], now: datetime, paid: bool) -> pa.Table:
    ids = list(orders)
    n = len(ids)
    amount = Decimal("42.50")
    return pa.table(
        {
            "order_id": ids,
            "user_id": [f"user-{i[:8]}" for i in ids],
            "session_id": [f"session-{i[:12]}" for i in ids],
            "order_event_id": [f"event-{i}" for i in ids],
            "total_amount": [amount] * n,
            "paid_amount": [amount if paid else Decimal(0)] * n,
            "currency": ["USD"] * n,
            "fully_paid": [paid] * n,
            "order_ts": list(orders.values()),
            "last_payment_ts": [now if paid else None] * n,
            "updated_ts": [now] * n,
        },
        ORDER_PAYMENTS.schema,
    )


def steps(args: argparse.Namespace) -> list[pa.Table]:
    """The steps' order_payments rows, the same for both ways."""
    rng = random.Random(7)
    seconds = args.round_s
    per_step = int(args.rate * seconds * 0.025)
    paid_per_step = int(args.rate * seconds * 0.05 / 2)  # an order's auth and capture
    placed: list[tuple[str, datetime]] = []
    out = []
    for k in range(args.steps):
        now = START + timedelta(seconds=k * seconds)
        new = {
            f"{rng.getrandbits(128):032x}": now - timedelta(microseconds=rng.randrange(10**6))
            for _ in range(per_step)
        }
        recent = placed[-int(args.pay_within / seconds) * per_step :]
        paid = dict(rng.sample(recent, min(paid_per_step, len(recent))))
        if k % args.late_every == args.late_every - 1:
            paid |= dict([placed[rng.randrange(len(placed) // 4)]])
        placed.extend(new.items())
        out.append(pa.concat_tables([rows(new, now, False), rows(paid, now, True)]))
    return out


def located(step: pa.Table) -> Located:
    """As OrderPaymentsModel says where a step's rows lie (no order placed twice here)."""
    points = ((t, t + TICK) for t in step["order_ts"].to_pylist())
    return Located(tuple(merged_spans(points, timedelta(minutes=1))))


def run(way: str, work: list[pa.Table], home: Path, window: int) -> dict[str, float]:
    store = open_store(Settings(home=home))
    store.ensure(ORDER_PAYMENTS)
    took = []
    for k, step in enumerate(work):
        started = time.perf_counter()
        where = located(step) if way == "rewrite" else None
        store.upsert(ORDER_PAYMENTS, step, {"bench/orders/0": k + 1}, located=where)
        took.append(time.perf_counter() - started)
    folder = Path(store.location(ORDER_PAYMENTS))
    table = DeltaTable(str(folder))
    result = {
        "first ms": statistics.mean(took[:window]) * 1000,
        "last ms": statistics.mean(took[-window:]) * 1000,
        "total s": sum(took),
        "rows": float(table.count()),
        "files": float(len(table.file_uris())),
        "written MB": sum(f.stat().st_size for f in folder.rglob("*.parquet")) / 2**20,
    }
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--rate", type=float, default=5000, help="events/s the steps model")
    parser.add_argument("--round-s", type=float, default=1.0, help="seconds a round covers")
    parser.add_argument("--pay-within", type=float, default=30, help="seconds")
    parser.add_argument("--late-every", type=int, default=100, help="steps")
    parser.add_argument("--window", type=int, default=100, help="steps averaged")
    args = parser.parse_args()
    work = steps(args)
    print(machine())
    print(f"{args.steps} steps of {work[0].num_rows} rows or so ({args.rate:.0f} events/s)")
    for way in ("merge", "rewrite"):
        with tempfile.TemporaryDirectory(prefix="bench-op-") as home:
            got = run(way, work, Path(home), args.window)
        print(f"{way:8s} " + "  ".join(f"{k} {v:,.1f}" for k, v in got.items()))
    print(f"reproduce: {command()}")


if __name__ == "__main__":
    main()
