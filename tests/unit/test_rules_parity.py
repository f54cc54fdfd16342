"""The pydantic models (gateway), the msgspec wire types derived from them (the gateway's
fast path) and the silver SQL (DuckDB) give the same verdict."""

from __future__ import annotations

import itertools
import json
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shoplake.contract import wire
from shoplake.contract.events import EVENT_ADAPTER
from shoplake.contract.rules import RULES
from shoplake.engines import duckdb_silver
from shoplake.engines.duckdb import DuckDB
from shoplake.gateway.validation import EventValidator, Verdicts
from shoplake.settings import ReportingSettings, TopicSettings
from shoplake.simulator import ShopSimulator
from tests.unit.test_events import ENVELOPE, VALID, event
from tests.unit.test_silver import CASES

CURRENCIES = sorted(ReportingSettings().rates)


def sql_verdicts(raws: list[bytes]) -> list[str | None]:
    engine = DuckDB()
    values = [r.decode("utf-8", "backslashreplace") for r in raws]
    engine.register(
        "batch",
        pa.table(
            {
                "raw_value": values,
                "topic": ["t"] * len(values),
                "partition": pa.array([0] * len(values), pa.int32()),
                "offset": list(range(len(values))),
            }
        ),
    )
    engine.execute(duckdb_silver.parsed_sql(CURRENCIES))
    got = engine.table('SELECT "offset", problem.reason AS reason FROM parsed ORDER BY 1')
    engine.close()
    return list(got["reason"].to_pylist())


def model_ok(raw: bytes) -> bool:
    try:
        EVENT_ADAPTER.validate_json(raw)
    except ValidationError:
        return False
    return True


EDGES: list[dict[str, Any]] = [
    event("page_view", referrer=""),  # optional text may be empty
    event("page_view", session_id=""),  # but an optional id may not
    event("page_view", schema_version="1"),
    event("page_view", schema_version=2),
    event("page_view", country="de"),
    event("page_view", timestamp="2026-03-01 10:00:00Z"),
    event("page_view", timestamp="2026-13-01T10:00:00Z"),
    event("page_view", timestamp="2026-02-29T10:00:00Z"),  # the calendar is the pattern's
    event("page_view", timestamp="2024-02-29T10:00:00Z"),
    event("page_view", timestamp="1900-02-29T10:00:00Z"),
    event("page_view", timestamp="2000-02-29T10:00:00+01:00"),
    event("page_view", timestamp="2026-04-31T10:00:00Z"),
    event("page_view", timestamp="0000-03-01T10:00:00Z"),
    event("page_view", timestamp="2026-03-01T1\u0660:00:00Z"),  # an Arabic-Indic zero
    event("page_view", timestamp="2026-03-01T10:00:00.\uff15Z"),  # a fullwidth five
    event("page_view", timestamp=1767225600),
    # where engines' casts differ, the pattern decides for all of them
    event("page_view", timestamp="2026-03-01T24:00:00Z"),
    event("page_view", timestamp="2026-03-01T23:59:60Z"),
    event("page_view", timestamp="2026-03-01T10:00:00+18:01"),
    event("page_view", timestamp="2026-03-01T10:00:00+18:00"),
    event("page_view", timestamp="2026-03-01T10:00:00.5-14:00"),
    event("add_to_cart", quantity=2.0),
    event("add_to_cart", quantity=2**31),
    event("add_to_cart", unit_price=True),
    event("add_to_cart", unit_price="9.99"),
    event("purchase", total_amount=1e17),
    event("purchase", total_amount=0),
    event("payment", amount_cents=10**18),
    event("product_update", inventory=-5),
    event("product_update", inventory=1.5),
    event("product_update", user_id=None),
    event("user_session", action="reboot"),
    event("user_session", session_id=None),
    {"event_type": "page_view"},
]


def test_clean_and_broken_events_get_the_same_verdict() -> None:
    raws = [e.value for e in itertools.islice(ShopSimulator(8, bad_ratio=0.3).stream(), 3000)]
    raws += [orjson.dumps(e) for e in EDGES]
    raws += [r if isinstance(r, bytes) else orjson.dumps(r) for r, _ in CASES]
    verdicts = sql_verdicts(raws)
    # The one intended difference: a currency with no rate in settings is valid on the
    # wire, but silver cannot report it, so it quarantines it.
    disagreements = [
        (raw, reason)
        for raw, reason in zip(raws, verdicts, strict=True)
        if model_ok(raw) != (reason is None) and reason != "unknown_currency"
    ]
    assert not disagreements
    assert sum(v is not None for v in verdicts) > 100  # the mix really holds bad records


@pytest.mark.parametrize(
    "kind", ["page_view", "add_to_cart", "purchase", "payment", "user_session", "product_update"]
)
def test_valid_examples_pass_both(kind: str) -> None:
    raw = orjson.dumps(event(kind))
    assert model_ok(raw)
    assert sql_verdicts([raw]) == [None]


# Where msgspec and pydantic could part: Python's "$" before a final newline, duplicate
# keys, lone surrogates, numbers beyond 64 bits or a double, bools for numbers, nested
# items, the tag itself.
WIRE_EDGES: list[bytes] = [
    orjson.dumps(event("page_view", country="US\n")),
    orjson.dumps(event("page_view", timestamp="2026-03-01T10:00:00Z\n")),
    orjson.dumps(event("page_view", timestamp="2026-02-30T10:00:00Z")),
    orjson.dumps(event("page_view", timestamp="2024-02-29T10:00:00Z")),
    orjson.dumps(event("page_view", timestamp="2100-02-29T10:00:00Z")),
    orjson.dumps(event("page_view", timestamp="2026-11-31T10:00:00Z")),
    orjson.dumps(event("page_view", timestamp="2026-03-01T10:0\u0660:00Z")),
    orjson.dumps(event("add_to_cart", currency="EUR\n")),
    # codes are checked as the Literal of every code: escapes, other letters, other lengths
    orjson.dumps(event("page_view", country="US")).replace(b'"US"', b'"\\u0055S"'),
    orjson.dumps(event("page_view", country="\u00c9S")),
    orjson.dumps(event("add_to_cart", currency="EURO")),
    orjson.dumps(event("add_to_cart", currency="EU")),
    orjson.dumps(event("add_to_cart", currency="eur")),
    orjson.dumps(event("add_to_cart", unit_price=3)),
    orjson.dumps(event("add_to_cart", unit_price=-0.0)),
    orjson.dumps(event("add_to_cart", quantity=True)),
    json.dumps(event("page_view", schema_version=2**70)).encode(),
    json.dumps(event("page_view", schema_version=-(2**63))).encode(),
    json.dumps(event("page_view", schema_version=2**63)).encode(),
    orjson.dumps(event("payment", amount_cents=10**18 - 1)),
    orjson.dumps(event("purchase", items=[{**VALID["purchase"]["items"][0], "colour": "red"}])),
    orjson.dumps(event("purchase", items=[{}])),
    orjson.dumps(event("purchase", items={"product_id": "P"})),
    orjson.dumps(event("purchase", items=None)),
    orjson.dumps(event("page_view", event_type=None)),
    orjson.dumps(event("page_view", event_type=5)),
    orjson.dumps(event("page_view", event_type="PAGE_VIEW")),
    orjson.dumps(event("page_view", device=None, country=None, session_id=None)),
    orjson.dumps(event("page_view", extra={"nested": [1, 2]})),
    b'{"event_type": "page_view", "event_type": "bogus"}',
    orjson.dumps(event("add_to_cart"))[:-1] + b', "quantity": -1}',
    orjson.dumps(event("add_to_cart"))[:-1] + b', "quantity": 3}',
    orjson.dumps(event("page_view"))[:-1] + b', "page_url": "\\ud800"}',
    orjson.dumps(event("purchase"))[:-1].replace(b"19.98", b"1e400") + b"}",
    orjson.dumps(event("page_view")) + b"\r",
    b" " + orjson.dumps(event("user_session")) + b" ",
    orjson.dumps(event("page_view")) + b" trailing",
    b"[]",
    b'"page_view"',
    b"null",
]


def gateway_model_ok(raw: bytes) -> bool:
    """The gateway's pydantic path: orjson, then the models."""
    try:
        doc = orjson.loads(raw)
        EVENT_ADAPTER.validate_python(doc)
    except (orjson.JSONDecodeError, ValidationError):
        return False
    return isinstance(doc, dict)


def wire_ok(raw: bytes) -> bool:
    try:
        wire.DECODER.decode(raw)
    except msgspec.DecodeError:
        return False
    return True


def test_the_gateways_wire_types_accept_exactly_what_the_models_accept() -> None:
    raws = [e.value for e in itertools.islice(ShopSimulator(9, bad_ratio=0.3).stream(), 3000)]
    raws += [orjson.dumps(e) for e in EDGES] + WIRE_EDGES
    raws += [r if isinstance(r, bytes) else orjson.dumps(r) for r, _ in CASES]
    assert [r for r in raws if wire_ok(r) != gateway_model_ok(r)] == []
    # a JSON body's objects, converted rather than decoded
    docs = [d for d in map(_loads_or_none, raws) if isinstance(d, dict)]
    assert [d for d in docs if _converts(d) != gateway_model_ok(orjson.dumps(d))] == []
    assert 300 < sum(map(wire_ok, raws)) < len(raws) - 300  # both verdicts are well tested


def _loads_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _converts(doc: dict[str, Any]) -> bool:
    try:
        msgspec.convert(doc, wire.WIRE_EVENT)
    except msgspec.ValidationError:
        return False
    return True


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)
# values near the contract's edges, more likely than random ones to sit on a boundary
EDGY_VALUES = st.sampled_from(
    ["", "DE", "de", "EUR", "2026-03-01T10:00:00Z", "2026-02-29T10:00:00Z", 0, -1, 1, 2.5,
     2**31 - 1, 2**31, 10**18, 1e16, 2**63, "product", "captured", "login", "price_change",
     [], [{}], None, True]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(sorted(VALID)),
    changes=st.dictionaries(
        st.sampled_from(sorted({f for fields in VALID.values() for f in fields} | set(ENVELOPE))),
        JSON_VALUES | EDGY_VALUES,
        max_size=3,
    ),
    dropped=st.sets(st.sampled_from(sorted(ENVELOPE)), max_size=2),
)
def test_wire_types_and_models_agree_on_mutated_events(
    kind: str, changes: dict[str, Any], dropped: set[str]
) -> None:
    doc = {k: v for k, v in {**event(kind), **changes}.items() if k not in dropped}
    raw = json.dumps(doc).encode()  # orjson cannot write integers beyond 64 bits
    assert wire_ok(raw) == gateway_model_ok(raw), raw
    assert _converts(doc) == gateway_model_ok(raw), raw


def test_the_fast_path_gives_the_models_verdicts() -> None:
    """The gateway's answer — messages, rejections and their reasons — is the same with
    the wire types as with the pydantic models alone."""
    lines = [e.value for e in itertools.islice(ShopSimulator(10, bad_ratio=0.3).stream(), 2000)]
    lines += [*WIRE_EDGES, orjson.dumps(event("payment", currency="XYZ"))]
    docs = [d for d in map(_loads_or_none, lines) if d is not None]
    validator = EventValidator(TopicSettings(), CURRENCIES)
    fast = [validator.judge(list(lines)), validator.judge(list(docs))]
    slow = [Verdicts(), Verdicts()]  # every item judged by the models alone
    for items, verdicts in zip([lines, docs], slow, strict=True):
        for index, item in enumerate(items):
            validator._explain(index, item, verdicts)
    assert fast == slow
    assert len(fast[0].messages) > 1000 and len(fast[0].rejections) > 150


def test_each_rule_checked_once_gives_the_first_problem_of_one_case_per_type() -> None:
    """Silver checks each distinct rule once and takes a type's first broken rule in
    order (rule_sql.rule_columns): the same reason and detail, record by record, as one
    CASE of every check of the type in order (problem_expression)."""
    raws = [e.value for e in itertools.islice(ShopSimulator(9, bad_ratio=0.5).stream(), 4000)]
    raws += [orjson.dumps(e) for e in EDGES]
    raws += [r if isinstance(r, bytes) else orjson.dumps(r) for r, _ in CASES]
    engine = DuckDB()
    values = [r.decode("utf-8", "backslashreplace") for r in raws]
    batch = {
        "raw_value": values,
        "topic": ["t"] * len(values),
        "partition": pa.array([0] * len(values), pa.int32()),
        "offset": list(range(len(values))),
    }
    engine.register("batch", pa.table(batch))
    engine.execute(duckdb_silver.parsed_sql(CURRENCIES))
    one_case = " ".join(
        f"WHEN event_type = '{t}' THEN {duckdb_silver.problem_expression(t, CURRENCIES)}"
        for t in RULES
    )
    got = engine.table(
        f"SELECT problem, CASE {one_case} END AS reference, event_type FROM parsed "
        "WHERE event_type <> 'unknown'"
    ).to_pylist()
    engine.close()
    assert len(got) > 3500
    assert [r["problem"] for r in got] == [r["reference"] for r in got]
    broken = {r["problem"]["reason"] for r in got if r["problem"] is not None}
    assert {"missing_field", "bad_type", "bad_value", "bad_timestamp"} <= broken
