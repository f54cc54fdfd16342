"""DuckDB SQL that turns a batch of bronze rows into typed silver rows.

The contract's field rules compile into one ``CASE`` per event type that yields NULL
for a valid record, else ``{'reason': …, 'detail': …}`` for the first rule it breaks.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoplake.contract.events import TIMESTAMP_PATTERN
from shoplake.contract.rules import ITEM_RULES, RULES, FieldRule

_NUMBER = "('UBIGINT', 'BIGINT', 'DOUBLE')"
_INTEGER = "('UBIGINT', 'BIGINT')"
_TS_PATTERN = TIMESTAMP_PATTERN


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _problem(reason: str, detail_sql: str) -> str:
    return f"{{'reason': {_lit(reason)}, 'detail': {detail_sql}}}"


def _checks(doc: str, rule: FieldRule, currencies: Iterable[str]) -> list[tuple[str, str]]:
    """(failing condition, problem) pairs for one field of the JSON value ``doc``."""
    f = rule.name
    path = _lit(f"$.{f}")
    jtype = f"json_type({doc}, {path})"
    text = f"({doc} ->> {path})"
    shown = f"coalesce(left({text}, 40), '')"
    out: list[tuple[str, str]] = []
    missing = f"coalesce({jtype}, 'NULL') = 'NULL'"
    if rule.required:
        out.append((missing, _problem("missing_field", _lit(f"{f} is missing"))))
        present = "TRUE"
    else:
        present = f"NOT ({missing})"

    def add(cond: str, reason: str, detail: str) -> None:
        out.append((f"({present}) AND ({cond})", _problem(reason, detail)))

    kind = rule.kind
    if kind == "string":
        add(f"{jtype} <> 'VARCHAR'", "bad_type", _lit(f"{f} must be a string"))
        add(f"length({text}) = 0", "missing_field", _lit(f"{f} is empty"))
    elif kind == "text":
        add(f"{jtype} <> 'VARCHAR'", "bad_type", _lit(f"{f} must be a string"))
    elif kind == "integer":
        add(f"{jtype} NOT IN {_INTEGER}", "bad_type", _lit(f"{f} must be an integer"))
        add(
            f"TRY_CAST({text} AS BIGINT) IS NULL",
            "bad_value",
            _lit(f"{f} is out of range: ") + f" || {shown}",
        )
    elif kind == "country":
        add(f"{jtype} <> 'VARCHAR'", "bad_type", _lit(f"{f} must be a string"))
        add(
            f"NOT regexp_full_match({text}, '[A-Z]{{2}}')",
            "bad_value",
            _lit(f"{f} must be an ISO 3166 alpha-2 code, got ") + f" || {shown}",
        )
    elif kind == "money":
        add(f"{jtype} NOT IN {_NUMBER}", "bad_type", _lit(f"{f} must be a number"))
        add(
            f"TRY_CAST({text} AS DECIMAL(18, 2)) IS NULL",
            "bad_value",
            _lit(f"{f} is out of range: ") + f" || {shown}",
        )
        add(
            f"TRY_CAST({text} AS DOUBLE) < 0",
            "negative_amount",
            _lit(f"{f} must be >= 0, got ") + f" || {shown}",
        )
    elif kind in ("count", "cents"):
        add(f"{jtype} NOT IN {_INTEGER}", "bad_type", _lit(f"{f} must be an integer"))
        if kind == "count":
            add(
                f"TRY_CAST({text} AS INTEGER) IS NULL OR TRY_CAST({text} AS INTEGER) <= 0",
                "bad_value",
                _lit(f"{f} must be > 0, got ") + f" || {shown}",
            )
        else:
            add(
                f"TRY_CAST({text} AS DECIMAL(18, 0)) IS NULL",
                "bad_value",
                _lit(f"{f} is out of range: ") + f" || {shown}",
            )
            add(
                f"TRY_CAST({text} AS BIGINT) < 0",
                "negative_amount",
                _lit(f"{f} must be >= 0, got ") + f" || {shown}",
            )
    elif kind == "currency":
        known = ", ".join(_lit(c) for c in sorted(currencies))
        add(f"{jtype} <> 'VARCHAR'", "bad_type", _lit(f"{f} must be a string"))
        add(
            f"NOT regexp_full_match({text}, '[A-Z]{{3}}')",
            "bad_value",
            _lit(f"{f} must be an ISO 4217 code, got ") + f" || {shown}",
        )
        add(
            f"{text} NOT IN ({known})",
            "unknown_currency",
            _lit(f"{f} has no exchange rate in settings: ") + f" || {shown}",
        )
    elif kind == "timestamp":
        add(f"{jtype} <> 'VARCHAR'", "bad_type", _lit(f"{f} must be an RFC 3339 string"))
        add(
            f"NOT regexp_matches({text}, {_lit(_TS_PATTERN)}) "
            f"OR TRY_CAST({text} AS TIMESTAMPTZ) IS NULL",
            "bad_timestamp",
            _lit(f"{f} is not RFC 3339 with an offset: ") + f" || {shown}",
        )
    elif kind == "enum":
        allowed = ", ".join(_lit(c) for c in rule.choices)
        add(f"{jtype} <> 'VARCHAR'", "bad_type", _lit(f"{f} must be a string"))
        add(
            f"{text} NOT IN ({allowed})",
            "bad_value",
            _lit(f"{f} must be one of {', '.join(rule.choices)}, got ") + f" || {shown}",
        )
    elif kind == "items":
        add(f"{jtype} <> 'ARRAY'", "bad_type", _lit(f"{f} must be an array"))
        add(f"json_array_length({doc}, {path}) = 0", "empty_items", _lit(f"{f} is empty"))
        per_item = _case([c for r in ITEM_RULES for c in _checks("x", r, currencies)])
        item_problems = (
            f"list_filter(list_transform(CAST({doc} -> {path} AS JSON[]), "
            f"lambda x: CASE WHEN json_type(x) = 'OBJECT' THEN {per_item} "
            f"ELSE {_problem('bad_type', _lit('each item must be an object'))} END), "
            "lambda p: p IS NOT NULL)"
        )
        out.append((f"({present}) AND len({item_problems}) > 0", f"{item_problems}[1]"))
    return out


def _case(checks: list[tuple[str, str]]) -> str:
    whens = " ".join(f"WHEN {cond} THEN {problem}" for cond, problem in checks)
    return f"CASE {whens} END"


def problem_expression(event_type: str, doc: str, currencies: Iterable[str]) -> str:
    """SQL: NULL when the JSON object ``doc`` is a valid ``event_type`` event, else a problem."""
    currencies = list(currencies)
    checks = [c for rule in RULES[event_type] for c in _checks(doc, rule, currencies)]
    return _case(checks)


KNOWN_TYPES_SQL = (
    "('page_view', 'add_to_cart', 'remove_from_cart', 'purchase', 'payment', "
    "'user_session', 'product_update')"
)


def parsed_sql(currencies: Iterable[str]) -> str:
    """``batch`` (bronze rows) → ``parsed``: JSON, event type and the problem, if any."""
    currencies = list(currencies)
    unknown = _problem(
        "unknown_event_type", _lit("unknown event_type: ") + " || left(j ->> '$.event_type', 40)"
    )
    by_type = " ".join(
        f"WHEN j ->> '$.event_type' = {_lit(t)} THEN {problem_expression(t, 'j', currencies)}"
        for t in RULES
    )
    return f"""
    CREATE OR REPLACE TEMP TABLE parsed AS
    WITH safe AS (  -- invalid JSON becomes 'null' before any JSON function sees it
        SELECT raw_value, topic, "partition", "offset",
               CAST(CASE WHEN json_valid(raw_value) THEN raw_value ELSE 'null' END AS JSON) AS doc
        FROM batch
    ),
    docs AS (
        SELECT raw_value, topic, "partition", "offset",
               CASE WHEN json_type(doc) = 'OBJECT' THEN doc END AS j
        FROM safe
    )
    SELECT raw_value, topic, "partition", "offset", j,
           CASE WHEN (j ->> '$.event_type') IN {KNOWN_TYPES_SQL}
                THEN j ->> '$.event_type' ELSE 'unknown' END AS event_type,
           CASE
             WHEN j IS NULL THEN {_problem("invalid_json", _lit("payload is not a JSON object"))}
             WHEN coalesce(json_type(j, '$.event_type'), 'NULL') = 'NULL'
               THEN {_problem("missing_field", _lit("event_type is missing"))}
             WHEN (j ->> '$.event_type') NOT IN {KNOWN_TYPES_SQL}
               THEN {unknown}
             {by_type}
           END AS problem
    FROM docs
    """


QUARANTINE_SQL = """
SELECT raw_value, topic, "partition", "offset", event_type,
       problem.reason AS reason, problem.detail AS detail,
       $now AS quarantined_ts, CAST($now AS DATE) AS quarantined_date
FROM parsed WHERE problem IS NOT NULL
"""

# Valid events of one type, in lineage order (the caller deduplicates on the key).
_VALID = """
SELECT * FROM parsed
WHERE problem IS NULL AND event_type = {etype}
ORDER BY topic, "partition", "offset"
"""

ORDERS_SQL = f"""
SELECT j ->> '$.event_id' AS event_id,
       j ->> '$.order_id' AS order_id,
       j ->> '$.user_id' AS user_id,
       j ->> '$.session_id' AS session_id,
       CAST(j ->> '$.total_amount' AS DECIMAL(18, 2)) AS total_amount,
       j ->> '$.currency' AS currency,
       j ->> '$.payment_method' AS payment_method,
       CAST(json_array_length(j, '$.items') AS INTEGER) AS item_count,
       j ->> '$.device' AS device,
       j ->> '$.country' AS country,
       CAST(j ->> '$.timestamp' AS TIMESTAMPTZ) AS event_ts,
       CAST(CAST(j ->> '$.timestamp' AS TIMESTAMPTZ) AS DATE) AS event_date,
       topic, "partition", "offset"
FROM ({_VALID.format(etype="'purchase'")})
"""

ORDER_ITEMS_SQL = f"""
WITH lines AS (
    SELECT j ->> '$.event_id' AS event_id, j ->> '$.order_id' AS order_id,
           j ->> '$.currency' AS currency,
           CAST(j ->> '$.timestamp' AS TIMESTAMPTZ) AS event_ts,
           topic, "partition", "offset",
           unnest(CAST(j -> '$.items' AS JSON[])) AS item,
           generate_subscripts(CAST(j -> '$.items' AS JSON[]), 1) AS line_number
    FROM ({_VALID.format(etype="'purchase'")})
)
SELECT event_id, order_id, CAST(line_number AS INTEGER) AS line_number,
       item ->> '$.product_id' AS product_id,
       item ->> '$.category' AS category,
       CAST(item ->> '$.quantity' AS INTEGER) AS quantity,
       CAST(item ->> '$.unit_price' AS DECIMAL(18, 2)) AS unit_price,
       CAST(CAST(item ->> '$.quantity' AS INTEGER)
            * CAST(item ->> '$.unit_price' AS DECIMAL(18, 2)) AS DECIMAL(18, 2)) AS line_amount,
       currency, event_ts, CAST(event_ts AS DATE) AS event_date,
       topic, "partition", "offset"
FROM lines
"""

PAYMENTS_SQL = f"""
SELECT j ->> '$.event_id' AS event_id,
       j ->> '$.payment_id' AS payment_id,
       j ->> '$.order_id' AS order_id,
       j ->> '$.user_id' AS user_id,
       CAST(j ->> '$.amount_cents' AS BIGINT) AS amount_cents,
       CAST(CAST(j ->> '$.amount_cents' AS DECIMAL(18, 0)) * 0.01 AS DECIMAL(18, 2)) AS amount,
       j ->> '$.currency' AS currency,
       j ->> '$.status' AS status,
       CAST(j ->> '$.timestamp' AS TIMESTAMPTZ) AS event_ts,
       CAST(CAST(j ->> '$.timestamp' AS TIMESTAMPTZ) AS DATE) AS event_date,
       topic, "partition", "offset"
FROM ({_VALID.format(etype="'payment'")})
"""
