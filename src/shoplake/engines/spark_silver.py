"""Spark SQL that gives a batch of bronze rows silver's verdict (valid, or why not).

The same contract rules as ``duckdb_silver`` compiled into Spark SQL, in the same
structure: one ``CASE`` per event type that yields NULL for a valid record, else
``named_struct('reason', …, 'detail', …)`` for the first rule it breaks, rules in the
same order so the same reason wins. ``tests/integration/test_spark_silver.py`` holds
the two engines to the same verdicts.

A record is parsed once into a VARIANT (``try_parse_json``); each field the rules name is
read from it once, and its JSON type is mapped onto the names DuckDB's ``json_type``
gives (VARCHAR, BIGINT, UBIGINT, DOUBLE, BOOLEAN, ARRAY, OBJECT, NULL), so the checks
read as DuckDB's do. Only the verdict is here so far, not the typed silver rows.

Known differences from DuckDB: Spark ignores text after the first JSON value (DuckDB:
invalid_json) and refuses an object with a duplicate key (DuckDB accepts it, the first
value wins); a number DuckDB holds as a DOUBLE is written differently in a detail
(``1.0E30`` rather than ``1e30``).
"""

from __future__ import annotations

from collections.abc import Iterable

from shoplake.contract.rules import RULES
from shoplake.engines import rule_sql
from shoplake.engines.rule_sql import FIELDS


def _full(pattern: str) -> str:
    """A regular expression for RLIKE that must match the whole text: Java's ``$``
    would also match before a final newline, RE2's (DuckDB's) does not."""
    body = pattern.removeprefix("^").removesuffix("$")
    return f"^(?:{body})\\z"


def _lit(text: str) -> str:
    """A Spark SQL string literal (backslash is an escape character there)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _problem(reason: str, detail_sql: str) -> str:
    return f"named_struct('reason', {_lit(reason)}, 'detail', {detail_sql})"


def _json_type(value: str) -> str:
    """SQL: the JSON type of the VARIANT ``value`` under DuckDB's names; NULL when the
    value is absent (SQL NULL), 'NULL' when it is JSON null. Spark parses a JSON integer
    beyond BIGINT as a DECIMAL(p, 0); up to 2**64 - 1 DuckDB calls it UBIGINT, beyond it
    DOUBLE. (Spark also reads ``2.0`` as DECIMAL(1, 0): within BIGINT's range a DECIMAL
    can only have come from a number written with a fraction or exponent.)"""
    schema = f"schema_of_variant({value})"
    big = f"try_variant_get({value}, '$', 'decimal(38, 0)')"
    return (
        f"CASE WHEN {value} IS NULL THEN NULL "
        f"WHEN {schema} = 'VOID' THEN 'NULL' "
        f"WHEN {schema} = 'STRING' THEN 'VARCHAR' "
        f"WHEN {schema} = 'BIGINT' THEN 'BIGINT' "
        f"WHEN {schema} LIKE 'DECIMAL(%,0)' "
        f"AND {big} BETWEEN 9223372036854775808 AND 18446744073709551615 THEN 'UBIGINT' "
        f"WHEN {schema} LIKE 'DECIMAL%' OR {schema} IN ('DOUBLE', 'FLOAT') THEN 'DOUBLE' "
        f"WHEN {schema} LIKE 'ARRAY%' THEN 'ARRAY' "
        f"WHEN {schema} LIKE 'OBJECT%' THEN 'OBJECT' "
        f"ELSE {schema} END"
    )


def _json_text(value: str) -> str:
    """SQL: the VARIANT ``value`` as text, as DuckDB's ``->>`` gives it: a string's
    characters, any other value's JSON, NULL when absent or JSON null."""
    return (
        f"CASE WHEN {value} IS NULL OR is_variant_null({value}) THEN NULL "
        f"WHEN schema_of_variant({value}) = 'STRING' THEN variant_get({value}, '$', 'string') "
        f"ELSE to_json({value}) END"
    )


def _field(doc: str, name: str) -> str:
    return f"variant_get({doc}, {_lit('$.' + name)})"


def _type_of(name: str) -> str:
    """The JSON type of a top-level field of the record (NULL when absent)."""
    return f"`ty_{name}`"


def _text(name: str) -> str:
    """A top-level field of the record as text (NULL when absent or JSON null)."""
    return f"`tx_{name}`"


# The fields read once per record: every field a rule names, and the event type.
_READ = (*FIELDS, "event_type")


class _SparkRules:
    """How Spark's SQL spells the rule checks (see rule_sql.RuleDialect)."""

    int_type = "INT"
    timestamptz_type = "TIMESTAMP"
    lit = staticmethod(_lit)
    problem = staticmethod(_problem)
    field_type = staticmethod(_type_of)
    field_text = staticmethod(_text)

    def nested_type(self, doc: str, name: str) -> str:
        return _json_type(_field(doc, name))

    def nested_text(self, doc: str, name: str) -> str:
        return _json_text(_field(doc, name))

    def full_match(self, text: str, pattern: str) -> str:
        return f"({text} RLIKE {_lit(_full(pattern))})"

    def _items(self, doc: str, name: str) -> str:
        return f"try_variant_get({doc}, {_lit('$.' + name)}, 'array<variant>')"

    def items_empty(self, doc: str, name: str) -> str:
        return f"size({self._items(doc, name)}) = 0"

    def item_problems(self, doc: str, name: str, per_item: str, not_object: str) -> tuple[str, str]:
        problems = (
            f"filter(transform({self._items(doc, name)}, "
            f"x -> CASE WHEN {_json_type('x')} = 'OBJECT' THEN {per_item} "
            f"ELSE {not_object} END), p -> p IS NOT NULL)"
        )
        return f"size({problems}) > 0", f"try_element_at({problems}, 1)"


_RULES: rule_sql.RuleDialect = _SparkRules()


def problem_expression(event_type: str, currencies: Iterable[str]) -> str:
    """SQL: NULL when the record ``j`` is a valid ``event_type`` event, else a problem."""
    return rule_sql.problem_expression(_RULES, event_type, currencies)


KNOWN_TYPES_SQL = "(" + ", ".join(_lit(t) for t in RULES) + ")"


def verdict_sql(currencies: Iterable[str]) -> str:
    """``batch(raw_value, topic, partition, offset)`` → one row per record: its lineage,
    event type ('unknown' unless a known one) and, when it breaks a rule, the first
    rule's ``reason`` and ``detail`` (both NULL for a valid record)."""
    currencies = list(currencies)
    unknown = _problem(
        "unknown_event_type", _lit("unknown event_type: ") + " || left(raw_type, 40)"
    )
    by_type = " ".join(
        f"WHEN raw_type = {_lit(t)} THEN {problem_expression(t, currencies)}" for t in RULES
    )
    values = ", ".join(f"{_field('j', f)} AS `v_{f}`" for f in _READ)
    typed = ", ".join(
        f"{_json_type(f'`v_{f}`')} AS `ty_{f}`, {_json_text(f'`v_{f}`')} AS `tx_{f}`" for f in _READ
    )
    return f"""
    WITH safe AS (  -- invalid JSON is NULL, as is any JSON that is not an object
        SELECT topic, `partition`, `offset`, try_parse_json(raw_value) AS doc
        FROM batch
    ),
    docs AS (
        SELECT topic, `partition`, `offset`,
               CASE WHEN schema_of_variant(doc) LIKE 'OBJECT%' THEN doc END AS j
        FROM safe
    ),
    fields AS (SELECT *, {values} FROM docs),
    extracted AS (
        SELECT topic, `partition`, `offset`, j, {typed} FROM fields
    ),
    parsed AS (
        SELECT *, {_text("event_type")} AS raw_type,
               coalesce({_type_of("event_type")}, 'NULL') AS raw_type_kind
        FROM extracted
    ),
    judged AS (
        SELECT topic, `partition`, `offset`,
               CASE WHEN raw_type IN {KNOWN_TYPES_SQL} THEN raw_type ELSE 'unknown' END
                   AS event_type,
               CASE
                 WHEN j IS NULL
                   THEN {_problem("invalid_json", _lit("payload is not a JSON object"))}
                 WHEN raw_type_kind = 'NULL'
                   THEN {_problem("missing_field", _lit("event_type is missing"))}
                 WHEN raw_type NOT IN {KNOWN_TYPES_SQL}
                   THEN {unknown}
                 {by_type}
               END AS problem
        FROM parsed
    )
    SELECT topic, `partition`, `offset`, event_type,
           problem.reason AS reason, problem.detail AS detail
    FROM judged
    """
