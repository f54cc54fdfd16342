"""silver.order_payments is kept sorted by order_ts (TableSpec.cluster_by): an upsert that
says where its rows lie (Located) rewrites only the files near them. A merge rewrote every
file holding a touched order, and with random order ids that was every file, every round."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from shoplake.contract.tables import ORDER_PAYMENTS
from shoplake.settings import Settings
from shoplake.tables import delta, open_store
from shoplake.tables.base import Located, merged_spans
from tests.conftest import order_payment_rows

NOON = datetime(2026, 3, 1, 12, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def orders(placed: dict[str, datetime], paid: int = 0) -> pa.Table:
    return order_payment_rows(placed, [paid] * len(placed))


def at(rows: pa.Table) -> Located:
    """Where ``rows`` lie: their own order_ts (no order of theirs moved), a minute's gaps
    closed (as the model does: one span for a round's recent orders)."""
    points = ((t, t + TICK) for t in rows["order_ts"].to_pylist())
    return Located(tuple(merged_spans(points, timedelta(minutes=1))))


def hour(h: int, n: int = 50) -> dict[str, datetime]:
    """``n`` orders placed in hour ``h`` after noon, a minute apart."""
    return {f"h{h}-{k}": NOON + timedelta(hours=h, minutes=k) for k in range(n)}


def test_rounds_of_orders_and_payments_rewrite_only_the_newest_files(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round places 400 orders and pays for 100 of the round before; a late payment
    comes for an order of the first round. Files are cut small here (delta-rs cuts at
    1,024 rows at least): the old files stay as they are, nothing is lost or doubled."""
    monkeypatch.setattr(delta, "_CLUSTERED_FILE_BYTES", 16 << 10)
    store = open_store(settings)
    store.ensure(ORDER_PAYMENTS)
    placed: dict[str, datetime] = {}
    for r in range(12):
        new = {f"r{r}-{k}": NOON + timedelta(minutes=r, milliseconds=k) for k in range(400)}
        paid = {f"r{r - 1}-{k}": placed[f"r{r - 1}-{k}"] for k in range(100)} if r else {}
        placed |= new
        step = pa.concat_tables([orders(new), orders(paid, paid=10)])
        store.upsert(ORDER_PAYMENTS, step, {"app/t/0": r + 1}, located=at(step))
    before = set(DeltaTable(store.location(ORDER_PAYMENTS)).file_uris())
    assert len(before) >= 5

    late = orders({"r0-300": placed["r0-300"]}, paid=10)
    new = orders({"r12-0": NOON + timedelta(minutes=12)})
    step = pa.concat_tables([late, new])
    store.upsert(ORDER_PAYMENTS, step, {"app/t/0": 13}, located=at(step))

    after = set(DeltaTable(store.location(ORDER_PAYMENTS)).file_uris())
    assert len(before - after) <= 2  # the first round's file and the newest one at most
    rows = store.open(ORDER_PAYMENTS).scan()
    assert sorted(rows["order_id"].to_pylist()) == sorted([*placed, "r12-0"])
    paid_ids = rows.filter(pc.greater(rows["paid_amount"], Decimal(0)))["order_id"]
    assert len(paid_ids) == 11 * 100 + 1 and "r0-300" in paid_ids.to_pylist()
    assert store.open(ORDER_PAYMENTS).positions(["app/t/0"]) == {"app/t/0": 13}
    assert all(_order_ts(f) == sorted(_order_ts(f)) for f in after)  # each file sorted


def test_a_file_the_rows_straddle_is_read_whole_and_stays_sorted(settings: Settings) -> None:
    """An update between two files' spans, or over a file of unknown span, loses nothing."""
    store = open_store(settings)
    store.ensure(ORDER_PAYMENTS)
    store.append(ORDER_PAYMENTS, orders(hour(0) | hour(2)))  # one file over hours 0-2
    new = orders(hour(1))  # inside that file's span: it is rewritten with them
    store.upsert(ORDER_PAYMENTS, new, located=at(new))
    again = orders({"h0-3": hour(0)["h0-3"], "h2-9": hour(2)["h2-9"]}, paid=10)
    store.upsert(ORDER_PAYMENTS, again, located=at(again))
    rows = store.open(ORDER_PAYMENTS).scan()
    assert sorted(rows["order_id"].to_pylist()) == sorted([*hour(0), *hour(1), *hour(2)])
    paid = rows.filter(pc.greater(rows["paid_amount"], Decimal(0)))
    assert sorted(paid["order_id"].to_pylist()) == ["h0-3", "h2-9"]
    for f in DeltaTable(store.location(ORDER_PAYMENTS)).file_uris():
        assert _order_ts(f) == sorted(_order_ts(f))


def _order_ts(uri: str) -> list[datetime]:
    return pq.read_table(uri.removeprefix("file://"), columns=["order_ts"])[0].to_pylist()
