"""Silver on Spark equals silver on DuckDB: the same records quarantined for the same
reason, with the same detail text, on the events the rules-parity test uses; and the same
typed rows in every silver table, late flags, valid events and high water."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pytest

from shoplake.contract.tables import ORDER_ITEMS, QUARANTINE
from shoplake.engines import duckdb_silver, spark_silver
from shoplake.engines.base import ParsedEvents, RawEventRules
from shoplake.engines.duckdb import DuckDB
from shoplake.simulator import ShopSimulator
from tests.unit.test_events import event
from tests.unit.test_rules_parity import CURRENCIES, EDGES
from tests.unit.test_silver import CASES

# one worker runs every Spark test (pytest -n): one session, one ivy resolution at a time
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("spark")]

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


def batch(values: list[str], partitions: int = 1) -> pa.Table:
    """Bronze rows of ``values``: record i at offset i, in partition i % ``partitions``."""
    return pa.table(
        {
            "raw_value": values,
            "topic": ["t"] * len(values),
            "partition": pa.array([i % partitions for i in range(len(values))], pa.int32()),
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
    invalid; and it refuses duplicate keys, which DuckDB accepts (the first one wins).
    Timestamps the casts would read differently (Spark refuses an offset beyond ±18:00
    and the hour 24, DuckDB takes both) the contract's pattern refuses on both engines."""
    good = orjson.dumps(event("page_view")).decode()
    values = [
        good + " trailing",
        good[:-1] + ', "device": "mobile"}',
        orjson.dumps(event("page_view", timestamp="2026-03-01T10:00:00+18:01")).decode(),
        orjson.dumps(event("page_view", timestamp="2026-03-01T24:00:00Z")).decode(),
    ]
    duck = [(v[4], v[5]) for v in duckdb_verdicts(values)]
    spark = [(v[4], v[5]) for v in spark_verdicts(spark_engine, values)]
    invalid = ("invalid_json", "payload is not a JSON object")
    assert duck[:2] == [invalid, (None, None)]
    assert spark[:2] == [(None, None), invalid]
    assert duck[2:] == spark[2:]
    assert [reason for reason, _ in duck[2:]] == ["bad_timestamp", "bad_timestamp"]


# Typed silver rows: the engine port's parse_raw_events on both engines.

RULES = RawEventRules(CURRENCIES, watermark_minutes=30)
NOW = datetime(2026, 3, 1, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5)))
_LINEAGE = ("topic", "partition", "offset")


def high_water(values: list[str]) -> pa.Table:
    """Partition 0's newest event time before the batch is the median timestamp of its
    records (so some of them are late), partition 1's is unknown (NULL), partition 2 has
    no row."""
    times = []
    for raw in values[::3]:
        try:
            ts = datetime.fromisoformat(json.loads(raw)["timestamp"])
        except (ValueError, TypeError, KeyError):
            continue
        if ts.tzinfo is not None:  # broken records may carry no offset
            times.append(ts)
    return pa.table(
        {
            "topic": ["t", "t"],
            "partition": pa.array([0, 1], pa.int32()),
            "max_ts": pa.array([sorted(times)[len(times) // 2], None], pa.timestamp("us", "UTC")),
        }
    )


def parse_both(spark_engine: Any, values: list[str]) -> tuple[ParsedEvents, ParsedEvents]:
    """parse_raw_events of every silver table on DuckDB, then on Spark."""
    bronze, before = batch(values, partitions=3), high_water(values)
    tables = list(duckdb_silver.TABLE_SQL)
    duck = DuckDB()
    try:
        want = duck.parse_raw_events(bronze, before, RULES, tables, NOW)
    finally:
        duck.close()
    return want, spark_engine.parse_raw_events(bronze, before, RULES, tables, NOW)


def in_order(table: pa.Table) -> list[dict[str, Any]]:
    keys = [k for k in (*_LINEAGE, "line_number") if k in table.column_names]
    return sorted(table.to_pylist(), key=lambda r: tuple(r[k] for k in keys))


def same_json(want: str | None, got: str | None) -> bool:
    """Equal text, or the same JSON, keys in the same order, but for how a number DuckDB
    holds as a DOUBLE is written (``1e30`` there, ``1.0E30`` on Spark)."""
    if want == got:
        return True
    if want is None or got is None:
        return False
    read = lambda text: json.loads(text, object_pairs_hook=list)  # noqa: E731
    return bool(read(want) == read(got))


# Valid events with fields the contract does not name, which silver keeps as properties.
WITH_UNKNOWN_FIELDS: list[dict[str, Any]] = [
    event("page_view", extra={"b": 1, "a": {"d": [True, None], "c": "x"}}),  # key order
    event("add_to_cart", note='ü"q\\ / \u0001\n\t é 😀\u2028', ключ="значение"),
    event("purchase", n=12, big=2**64, small=-(2**63) - 1, dec=1.5, neg_zero=-0.0, cents=19.99),
    event("payment", nil=None, yes=True, obj={}, arr=[], nested=[{"z": "1", "y": [2.5]}]),
    {"zz": 1, **event("user_session"), "aa": "last"},  # unknown before and after known
    event("product_update", **{'we"ird\\key': 1, "tab\tkey": "v"}),
]
# Where the engines write a JSON number differently (a DOUBLE: Java's Double.toString on
# Spark, shortest round trip on DuckDB), pinned: (event, DuckDB's text, Spark's text).
DOUBLE_PROPERTIES: list[tuple[dict[str, Any], str, str]] = [
    (event("page_view", x=1e30), '{"x":1e30}', '{"x":1.0E30}'),
    (event("page_view", x={"y": 1e-7}), '{"x":{"y":1e-7}}', '{"x":{"y":1.0E-7}}'),
]


def property_records() -> list[str]:
    raws = [json.dumps(e, ensure_ascii=False) for e in WITH_UNKNOWN_FIELDS]
    raws.append(json.dumps(WITH_UNKNOWN_FIELDS[1]))  # the same, non-ASCII as \u escapes
    return raws + [json.dumps(e) for e, _, _ in DOUBLE_PROPERTIES]


@pytest.fixture(scope="module")
def parsed(spark_engine: Any) -> Iterator[tuple[list[str], ParsedEvents, ParsedEvents]]:
    """One batch through both engines for every test below (Spark's time is precious)."""
    values = records() + property_records()
    yield values, *parse_both(spark_engine, values)


def test_spark_gives_every_silver_table_the_same_rows_as_duckdb(
    parsed: tuple[list[str], ParsedEvents, ParsedEvents],
) -> None:
    values, want, got = parsed
    assert set(got.rows) == set(want.rows) == set(duckdb_silver.TABLE_SQL)
    for name, wanted in want.rows.items():
        assert got.rows[name].schema == wanted.schema, name
        want_rows, got_rows = in_order(wanted), in_order(got.rows[name])
        assert len(got_rows) == len(want_rows), name
        for w, g in zip(want_rows, got_rows, strict=True):
            # A detail or properties text may write a DOUBLE its own way (see same_json).
            assert same_detail(w.pop("detail", None), g.pop("detail", None)), values[w["offset"]]
            assert same_json(w.pop("properties", None), g.pop("properties", None))
            assert w == g, (name, values[w["offset"]])
    assert got.valid.schema == want.valid.schema
    assert in_order(got.valid) == in_order(want.valid)
    assert got.high_water.schema == want.high_water.schema
    assert in_order(got.high_water) == in_order(want.high_water)
    # The batch really exercises what it compares.
    events = [r for name, t in want.rows.items() if name != QUARANTINE.name for r in t.to_pylist()]
    late = [r["is_late"] for r in events if "is_late" in r]
    assert 0 < sum(late) < len(late)
    assert {r["partition"] for r in events if r.get("is_late")} >= {0, 1}
    assert any(r.get("properties") not in (None, "{}") for r in events)
    items = want.rows[ORDER_ITEMS.name].to_pylist()
    assert any(r["line_number"] > 1 for r in items)
    assert all(isinstance(r["line_amount"], Decimal) for r in items if r["line_amount"] is not None)


def test_quarantined_rows_are_stamped_now_in_utc(
    parsed: tuple[list[str], ParsedEvents, ParsedEvents],
) -> None:
    _, want, got = parsed
    rows = got.rows[QUARANTINE.name].to_pylist()
    assert len(rows) == want.rows[QUARANTINE.name].num_rows > 100
    # 01:30 at UTC+5 is the evening before in UTC: the date is UTC's.
    assert {(r["quarantined_ts"], r["quarantined_date"]) for r in rows} == {
        (NOW.astimezone(UTC), NOW.astimezone(UTC).date())
    }
    assert NOW.astimezone(UTC).date() != NOW.date()
    lineage = [(r["topic"], r["partition"], r["offset"]) for r in rows]
    assert lineage == sorted(lineage)  # in lineage order, as silver appends them


def test_unknown_fields_become_the_same_properties_text(
    parsed: tuple[list[str], ParsedEvents, ParsedEvents],
) -> None:
    values, want, got = parsed
    start = len(values) - len(property_records())
    pinned = len(values) - len(DOUBLE_PROPERTIES)

    def texts(result: ParsedEvents) -> dict[int, str]:
        return {
            r["offset"]: r["properties"]
            for name, table in result.rows.items()
            if "properties" in table.column_names
            for r in table.select(["offset", "properties"]).to_pylist()
            if r["offset"] >= start
        }

    duck, spark = texts(want), texts(got)
    assert sorted(duck) == sorted(spark) == list(range(start, len(values)))
    assert {o: spark[o] for o in range(start, pinned)} == {o: duck[o] for o in range(start, pinned)}
    assert duck[start] == '{"extra":{"b":1,"a":{"d":[true,null],"c":"x"}}}'
    assert duck[start + 1] == duck[start + len(WITH_UNKNOWN_FIELDS)]  # escapes read alike
    for offset, (_, duck_text, spark_text) in enumerate(DOUBLE_PROPERTIES, pinned):
        assert (duck[offset], spark[offset]) == (duck_text, spark_text)
