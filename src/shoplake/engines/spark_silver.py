"""Spark SQL that gives a batch of bronze rows silver's verdict (valid, or why not).

The same contract rules as ``duckdb_silver`` compiled into Spark SQL, in the same
structure: one ``CASE`` per event type that yields NULL for a valid record, else
``named_struct('reason', …, 'detail', …)`` for the first rule it breaks, rules in the
same order so the same reason wins. ``tests/integration/test_spark_silver.py`` holds
the two engines to the same verdicts.

A record is parsed once into a VARIANT (``try_parse_json``); each field the rules name is
read from it once, and its JSON type is mapped onto the names DuckDB's ``json_type``
gives (VARCHAR, BIGINT, UBIGINT, DOUBLE, BOOLEAN, ARRAY, OBJECT, NULL), so the checks
read as DuckDB's do. From the verdict on, the typed rows of every silver table follow
DuckDB's SQL query for query (``parse_raw_events`` in ``engines/spark.py`` runs them).

Known differences from DuckDB: Spark ignores text after the first JSON value (DuckDB:
invalid_json) and refuses an object with a duplicate key (DuckDB accepts it, the first
value wins); a number DuckDB holds as a DOUBLE is written differently in a detail or in
``properties`` (``1.0E30`` rather than ``1e30``). (Timestamps the two casts would read
differently — the hour 24, offsets beyond ±18:00 — the contract's pattern refuses.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from shoplake.contract.rules import RULES
from shoplake.contract.tables import ORDER_ITEMS, QUARANTINE
from shoplake.engines import rule_sql
from shoplake.engines.rule_sql import FIELDS
from shoplake.engines.silver_columns import EVENT_TABLES, ColumnDialect, columns_sql


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


def _items(doc: str, name: str = "items") -> str:
    """SQL: the array field ``name`` of ``doc`` as an array of VARIANTs."""
    return f"try_variant_get({doc}, {_lit('$.' + name)}, 'array<variant>')"


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
        return _items(doc, name)

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


KNOWN_TYPES_SQL = "(" + ", ".join(_lit(t) for t in RULES) + ")"


def _judged_sql(currencies: Iterable[str]) -> str:
    """``batch(raw_value, topic, partition, offset)`` → CTEs ending in ``judged``: per
    record its raw value, lineage, the VARIANT ``j`` (NULL unless a JSON object), the text
    of every field a rule names (``tx_<field>``), the event type ('unknown' unless a
    known one) and the ``problem`` (reason, detail) of the first rule it breaks."""
    currencies = list(currencies)
    unknown = _problem(
        "unknown_event_type", _lit("unknown event_type: ") + " || left(raw_type, 40)"
    )
    checks, per_type = rule_sql.rule_columns(_RULES, currencies)  # each rule checked once
    by_type = " ".join(f"WHEN raw_type = {_lit(t)} THEN {per_type[t]}" for t in RULES)
    values = ", ".join(f"{_field('j', f)} AS `v_{f}`" for f in _READ)
    typed = ", ".join(
        f"{_json_type(f'`v_{f}`')} AS `ty_{f}`, {_json_text(f'`v_{f}`')} AS `tx_{f}`" for f in _READ
    )
    texts = ", ".join(_text(f) for f in FIELDS)
    return f"""
    WITH safe AS (  -- invalid JSON is NULL, as is any JSON that is not an object
        SELECT raw_value, topic, `partition`, `offset`, try_parse_json(raw_value) AS doc
        FROM batch
    ),
    docs AS (
        SELECT raw_value, topic, `partition`, `offset`,
               CASE WHEN schema_of_variant(doc) LIKE 'OBJECT%' THEN doc END AS j
        FROM safe
    ),
    fields AS (SELECT *, {values} FROM docs),
    extracted AS (
        SELECT raw_value, topic, `partition`, `offset`, j, {typed} FROM fields
    ),
    parsed AS (
        SELECT *, {_text("event_type")} AS raw_type,
               coalesce({_type_of("event_type")}, 'NULL') AS raw_type_kind
        FROM extracted
    ),
    checked AS (SELECT *, {", ".join(checks)} FROM parsed),
    judged AS (
        SELECT raw_value, topic, `partition`, `offset`, j, {texts},
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
        FROM checked
    )
    """


def verdict_sql(currencies: Iterable[str]) -> str:
    """``batch(raw_value, topic, partition, offset)`` → one row per record: its lineage,
    event type ('unknown' unless a known one) and, when it breaks a rule, the first
    rule's ``reason`` and ``detail`` (both NULL for a valid record)."""
    return (
        _judged_sql(currencies)
        + """SELECT topic, `partition`, `offset`, event_type,
           problem.reason AS reason, problem.detail AS detail
    FROM judged
    """
    )


def parsed_sql(currencies: Iterable[str]) -> str:
    """``batch`` → ``parsed``, what every silver table is derived from (DuckDB's
    ``parsed``): raw value, lineage, ``j``, ``tx_<field>`` texts, event type, problem."""
    return _judged_sql(currencies) + "SELECT * FROM judged"


def late_sql(watermark_minutes: float) -> str:
    """``parsed`` → ``late``: every record of ``parsed`` with, when valid, its
    ``valid_ts`` and ``is_late`` (both NULL for a broken record). Late as in DuckDB's
    ``late_sql``: older, by more than the watermark, than the newest valid event before
    it in its topic partition (in the batch, or before it: ``high_water(topic, partition,
    max_ts)``), compared in microseconds since the epoch. Wide where DuckDB's is narrow:
    the silver tables then read one relation, with no join (a shuffle on Spark)."""
    micros = round(watermark_minutes * 60_000_000)
    return f"""
    WITH timed AS (
        SELECT *, CASE WHEN problem IS NULL
                       THEN TRY_CAST({_text("timestamp")} AS TIMESTAMP) END AS valid_ts
        FROM parsed
    ),
    running AS (  -- max ignores the NULL times of the broken records
        SELECT *, max(valid_ts) OVER (
                      PARTITION BY topic, `partition` ORDER BY `offset`
                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_ts
        FROM timed
    )
    SELECT r.*,
           CASE WHEN r.problem IS NULL THEN
               coalesce(unix_micros(r.valid_ts)
                        < unix_micros(greatest(coalesce(r.before_ts, h.max_ts),
                                               coalesce(h.max_ts, r.before_ts))) - {micros},
                        false)
           END AS is_late
    FROM running r
    LEFT JOIN high_water h ON h.topic = r.topic AND h.`partition` = r.`partition`
    """


_LINEAGE = "topic, `partition`, `offset`"

# The newest valid event time per topic partition in the batch.
BATCH_HIGH_WATER_SQL = """
SELECT topic, `partition`, max(valid_ts) AS max_ts
FROM late WHERE valid_ts IS NOT NULL
GROUP BY topic, `partition`
"""

# The valid events of the batch, with their late flags.
_VALID = "late WHERE problem IS NULL"

# Valid events of the batch, as candidates for silver.duplicates.
VALID_EVENTS_SQL = f"""
SELECT {_text("event_id")} AS event_id, event_type, valid_ts AS event_ts,
       to_date(valid_ts) AS event_date, {_LINEAGE}
FROM {_VALID}
"""

# The order of each silver table's rows, which the engine sorts them in: the queries have
# no ORDER BY, as Spark's would cost a sampling job and a shuffle per table.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    ORDER_ITEMS.name: ("topic", "partition", "offset", "line_number"),
}
LINEAGE_ORDER = ("topic", "partition", "offset")


def timestamp_literal(moment: datetime) -> str:
    """An instant as a Spark TIMESTAMP literal (a naive datetime is taken as UTC)."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"TIMESTAMP {_lit(utc.isoformat())}"


def quarantine_sql(now: datetime) -> str:
    """The broken records of ``parsed``, each with its reason, stamped ``now``."""
    stamp = timestamp_literal(now)
    return f"""
    SELECT raw_value, {_LINEAGE}, event_type,
           problem.reason AS reason, problem.detail AS detail,
           {stamp} AS quarantined_ts, to_date({stamp}) AS quarantined_date
    FROM late WHERE problem IS NOT NULL
    """


def _money(text: str) -> str:
    # TRY_CAST: the verdict proved the cast works; ANSI's CAST would fail the whole query
    # if Spark ever judged a broken record's value before filtering it out.
    return f"TRY_CAST({text} AS DECIMAL(18, 2))"


def _int(text: str, sql_type: str = "INT") -> str:
    return f"TRY_CAST({text} AS {sql_type})"


# The unknown fields of a record as a JSON object, written as DuckDB's to_json of a
# MAP(VARCHAR, JSON) writes them ('{}' when there are none), over ``unknown_keys`` (in
# document order) and the record read twice: ``field_texts`` (map<string, string>) and
# ``field_values`` (map<string, variant>). A VARIANT sorts an object's keys, so a
# non-string value is the JSON reader's own text of it (nested keys in document order);
# a string, which that reader gives unquoted, is quoted from the VARIANT.
_PROPERTIES = (
    "CASE WHEN size(unknown_keys) = 0 THEN '{}' ELSE "
    "'{' || array_join(transform(unknown_keys, k -> to_json(CAST(k AS VARIANT)) || ':' || "
    "CASE WHEN schema_of_variant(field_values[k]) = 'STRING' THEN to_json(field_values[k]) "
    "ELSE coalesce(field_texts[k], 'null') END), ',') || '}' END"
)


# Stands for the step's time in the event tables' SQL, built once at import (table_sql
# puts the literal in).
_NOW = "__shoplake_now__"


def _event_select(event_types: tuple[str, ...], columns: list[tuple[str, str]]) -> str:
    """One silver row per valid event of ``event_types``, as DuckDB's ``_event_select``:
    event_id, ``columns``, the unknown fields as ``properties`` JSON, event_ts (UTC),
    event_date, is_late, the time silver wrote it (``_NOW``) and lineage."""
    known = sorted({r.name for t in event_types for r in RULES[t]} | {"event_type"})
    known_sql = ", ".join(_lit(k) for k in known)
    types = ", ".join(_lit(t) for t in event_types)
    select = [
        ("event_id", _text("event_id")),
        *columns,
        ("properties", _PROPERTIES),
        ("event_ts", "valid_ts"),
        ("event_date", "to_date(valid_ts)"),
        ("is_late", "is_late"),
        ("processed_ts", _NOW),
    ]
    # Subqueries, not CTEs: Spark 4.1's InlineCTE rule breaks this plan ("previously
    # resolved and now became unresolved").
    return f"""
    SELECT {", ".join(f"{expr} AS {name}" for name, expr in select)}, {_LINEAGE}
    FROM (  -- most events have no unknown field: they are spared reading it twice
        SELECT *,
               CASE WHEN size(unknown_keys) > 0
                    THEN from_json(raw_value, 'map<string, string>') END AS field_texts,
               CASE WHEN size(unknown_keys) > 0
                    THEN from_json(raw_value, 'map<string, variant>') END AS field_values
        FROM (
            SELECT *, coalesce(filter(json_object_keys(raw_value),
                                      k -> k NOT IN ({known_sql})), array()) AS unknown_keys
            FROM {_VALID} AND event_type IN ({types})
        ) AS events
    ) AS fields
    """


# The pieces silver_columns spells each event table's columns with (``_int`` is a
# TRY_CAST to any type: see ``_money`` for why TRY_CAST).
_COLUMNS = ColumnDialect(
    int_type="INT",
    text=_text,
    cast=_int,
    array_length=lambda field: f"size({_items('j', field)})",
)

_EVENT_TABLES: dict[str, str] = {
    name: _event_select(table.event_types, columns_sql(_COLUMNS, table.columns))
    for name, table in EVENT_TABLES.items()
}


def _item(name: str) -> str:
    return _json_text(_field("item", name))


# One row per line of each valid purchase (``line_number`` from 1), as DuckDB's
# ORDER_ITEMS_SQL; ``line_amount`` is NULL when quantity × unit_price overflows.
ORDER_ITEMS_SQL = f"""
WITH lines AS (
    SELECT {_text("event_id")} AS event_id, {_text("order_id")} AS order_id,
           {_text("currency")} AS currency,
           valid_ts AS event_ts, {_LINEAGE},
           posexplode({_items("j")}) AS (pos, item)
    FROM late WHERE problem IS NULL AND event_type = 'purchase'
)
SELECT event_id, order_id, CAST(pos + 1 AS INT) AS line_number,
       {_item("product_id")} AS product_id, {_item("category")} AS category,
       {_int(_item("quantity"))} AS quantity, {_money(_item("unit_price"))} AS unit_price,
       TRY_CAST({_int(_item("quantity"))} * {_money(_item("unit_price"))} AS DECIMAL(18, 2))
           AS line_amount,
       currency, event_ts, to_date(event_ts) AS event_date, {_LINEAGE}
FROM lines
"""


def table_sql(name: str, now: datetime) -> str:
    """The Spark SQL that derives silver table ``name``'s rows from ``late``
    (quarantined and event rows stamped ``now``), in no order: see SORT_KEYS."""
    if name == QUARANTINE.name:
        return quarantine_sql(now)
    if name == ORDER_ITEMS.name:
        return ORDER_ITEMS_SQL
    return _EVENT_TABLES[name].replace(_NOW, timestamp_literal(now))
