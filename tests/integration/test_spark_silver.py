"""Silver's verdict on Spark equals DuckDB's: the same records quarantined for the same
reason, with the same detail text, on the events the rules-parity test uses."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
import pyarrow as pa
import pytest

from shoplake.engines import duckdb_silver, spark_silver
from shoplake.engines.duckdb import DuckDB
from shoplake.simulator import ShopSimulator
from tests.unit.test_events import event
from tests.unit.test_rules_parity import CURRENCIES, EDGES
from tests.unit.test_silver import CASES

pytestmark = pytest.mark.integration

Verdict = tuple[str, int, int, str, str | None, str | None]

# Edges beyond the parity test's, where the two JSON readers differ most: numbers at the
# integer types' bounds, fractions written as integers, nulls inside items, odd text.
MORE_EDGES: list[dict[str, Any]] = [
    event("product_update", inventory=2**63 - 1),
    event("product_update", inventory=2**63),
    event("product_update", inventory=2**64 - 1),
    event("product_update", inventory=2**64),
    event("product_update", inventory=-(2**63)),
    event("product_update", inventory=2.0),
    event("product_update", price=1.5),
    event("product_update", price=-0.5),
    event("payment", amount_cents=10**18 - 1),
    event("payment", amount_cents=-1),
    event("payment", amount_cents=2**64),
    event("add_to_cart", quantity=2**31 - 1),
    event("add_to_cart", quantity=-3),
    event("add_to_cart", currency="EUR\n"),
    event("page_view", country="DE\n"),
    event("page_view", country="DEU"),
    event("page_view", device=None),
    event("page_view", device=7),
    event("page_view", timestamp="2026-03-01T10:00:00Z\n"),
    event("page_view", timestamp="2026-03-01T10:00:00.123456+05:30"),
    event("page_view", timestamp="2026-02-30T10:00:00Z"),
    event("page_view", page_url=["x"]),
    event("page_view", event_type=5),
    event("purchase", items=[None]),
    event("purchase", items={"product_id": "P1"}),
    event("purchase", items=[{"product_id": "P1", "category": "c", "quantity": 1}]),
    event("purchase", items=[{"product_id": "", "category": "c", "quantity": 1, "unit_price": 1}]),
    event("purchase", payment_method="ü" * 50),
    {"event_type": "teleport" + "x" * 60},
    {"event_type": None},
]


def records() -> list[str]:
    raws = [e.value for e in itertools.islice(ShopSimulator(8, bad_ratio=0.3).stream(), 3000)]
    raws += [orjson.dumps(e) for e in EDGES]
    raws += [json.dumps(e).encode() for e in MORE_EDGES]  # orjson stops at 64 bits
    raws += [r if isinstance(r, bytes) else orjson.dumps(r) for r, _ in CASES]
    return [r.decode("utf-8", "backslashreplace") for r in raws]


def batch(values: list[str]) -> pa.Table:
    return pa.table(
        {
            "raw_value": values,
            "topic": ["t"] * len(values),
            "partition": pa.array([0] * len(values), pa.int32()),
            "offset": list(range(len(values))),
        }
    )


def rows(table: pa.Table) -> list[Verdict]:
    return sorted(
        (r["topic"], r["partition"], r["offset"], r["event_type"], r["reason"], r["detail"])
        for r in table.to_pylist()
    )


def duckdb_verdicts(values: list[str]) -> list[Verdict]:
    engine = DuckDB()
    try:
        engine.register("batch", batch(values))
        engine.execute(duckdb_silver.parsed_sql(CURRENCIES))
        return rows(
            engine.table(
                'SELECT topic, "partition", "offset", event_type, '
                "problem.reason AS reason, problem.detail AS detail FROM parsed"
            )
        )
    finally:
        engine.close()


def spark_verdicts(spark_engine: Any, values: list[str]) -> list[Verdict]:
    spark_engine.register("batch", batch(values))
    try:  # Spark SQL as it is: not through the engine's DuckDB-dialect transpiler
        return rows(spark_engine.spark.sql(spark_silver.verdict_sql(CURRENCIES)).toArrow())
    finally:
        spark_engine.unregister("batch")


def same_detail(want: str | None, got: str | None) -> bool:
    """Equal text, or the same words about the same number: a JSON number DuckDB holds
    as a DOUBLE it writes its own way (``1e30``, ``100000000000000000.0``), Spark its
    own (``1.0E30``, ``1.0E17``)."""
    if want == got:
        return True
    if want is None or got is None:
        return False
    words, _, number = want.rpartition(": ")
    other_words, _, other_number = got.rpartition(": ")
    try:
        return words == other_words and float(number) == float(other_number)
    except ValueError:
        return False


def test_spark_and_duckdb_give_every_record_the_same_verdict(spark_engine: Any) -> None:
    values = records()
    want = duckdb_verdicts(values)
    got = spark_verdicts(spark_engine, values)
    assert len(got) == len(want) == len(values)
    # Lineage, event type and reason first (the verdict), then the detail text too.
    verdicts = [(w[:5], g[:5]) for w, g in zip(want, got, strict=True) if w[:5] != g[:5]]
    assert not verdicts
    details = [
        (values[w[2]], w[5], g[5])
        for w, g in zip(want, got, strict=True)
        if not same_detail(w[5], g[5])
    ]
    assert not details
    reasons = {w[4] for w in want}
    assert sum(w[4] is not None for w in want) > 100  # the mix really holds bad records
    assert {"invalid_json", "missing_field", "bad_type", "bad_value", "bad_timestamp"} <= reasons
    assert {"negative_amount", "empty_items", "unknown_currency", "unknown_event_type"} <= reasons


def test_the_known_differences_of_the_json_readers(spark_engine: Any) -> None:
    """Where the verdicts still differ, pinned so a fix (or a new difference) shows:
    Spark's try_parse_json ignores text after the first JSON value, which DuckDB calls
    invalid; and it refuses duplicate keys, which DuckDB accepts (the first one wins)."""
    good = orjson.dumps(event("page_view")).decode()
    values = [good + " trailing", good[:-1] + ', "device": "mobile"}']
    duck = [(v[4], v[5]) for v in duckdb_verdicts(values)]
    spark = [(v[4], v[5]) for v in spark_verdicts(spark_engine, values)]
    assert duck == [("invalid_json", "payload is not a JSON object"), (None, None)]
    assert spark == [(None, None), ("invalid_json", "payload is not a JSON object")]
