"""DuckDB SQL that turns a batch of bronze rows into typed silver rows.

The contract's field rules compile into one column per distinct rule that yields NULL
for a record that keeps it, else ``{'reason': …, 'detail': …}``; a record's problem is its
type's first broken rule, in rule order (see rule_sql.rule_columns; Spark's SQL the same).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from shoplake.contract.rules import RULES
from shoplake.contract.tables import ORDER_ITEMS, QUARANTINE
from shoplake.engines import rule_sql
from shoplake.engines.base import ParsedEvents, RawEventRules
from shoplake.engines.rule_sql import FIELDS
from shoplake.engines.silver_columns import EVENT_TABLES, ColumnDialect, columns_sql

if TYPE_CHECKING:
    from shoplake.engines.duckdb import DuckDB


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _problem(reason: str, detail_sql: str) -> str:
    return f"{{'reason': {_lit(reason)}, 'detail': {detail_sql}}}"


# One JSON parse per record yields the JSON types (``types``) and the values as text
# (``texts``) of every field a rule names, lists in FIELDS' order: DuckDB parses the text
# again for every JSON function call, and a valid event went through some forty.
_SLOT = {name: i + 1 for i, name in enumerate(FIELDS)}
_PATHS_SQL = "[" + ", ".join(_lit(f"$.{f}") for f in FIELDS) + "]"


def _type_of(name: str) -> str:
    return f"types[{_SLOT[name]}]"


def _text(name: str) -> str:
    return f"texts[{_SLOT[name]}]"


class _DuckDBRules:
    """How DuckDB's SQL spells the rule checks (see rule_sql.RuleDialect)."""

    int_type = "INTEGER"
    timestamptz_type = "TIMESTAMPTZ"
    lit = staticmethod(_lit)
    problem = staticmethod(_problem)
    field_type = staticmethod(_type_of)
    field_text = staticmethod(_text)

    def nested_type(self, doc: str, name: str) -> str:
        return f"json_type({doc}, {_lit('$.' + name)})"

    def nested_text(self, doc: str, name: str) -> str:
        return f"({doc} ->> {_lit('$.' + name)})"

    def full_match(self, text: str, pattern: str) -> str:
        return f"regexp_full_match({text}, {_lit(pattern)})"

    def _value(self, doc: str, name: str) -> str:
        return f"({doc} -> {_lit('$.' + name)})"

    def items_empty(self, doc: str, name: str) -> str:
        return f"json_array_length({self._value(doc, name)}) = 0"

    def item_problems(self, doc: str, name: str, per_item: str, not_object: str) -> tuple[str, str]:
        problems = (
            f"list_filter(list_transform(CAST({self._value(doc, name)} AS JSON[]), "
            f"lambda x: CASE WHEN json_type(x) = 'OBJECT' THEN {per_item} "
            f"ELSE {not_object} END), lambda p: p IS NOT NULL)"
        )
        return f"len({problems}) > 0", f"{problems}[1]"


_RULES: rule_sql.RuleDialect = _DuckDBRules()


def problem_expression(event_type: str, currencies: Iterable[str]) -> str:
    """SQL: NULL when the record ``j`` is a valid ``event_type`` event, else a problem."""
    return rule_sql.problem_expression(_RULES, event_type, currencies)


KNOWN_TYPES_SQL = (
    "('page_view', 'add_to_cart', 'remove_from_cart', 'purchase', 'payment', "
    "'user_session', 'product_update')"
)


def parsed_sql(currencies: Iterable[str]) -> str:
    """``batch`` (bronze rows) → ``parsed``: JSON, event type and the problem, if any."""
    currencies = list(currencies)
    unknown = _problem(
        "unknown_event_type", _lit("unknown event_type: ") + " || left(raw_type, 40)"
    )
    checks, per_type = rule_sql.rule_columns(_RULES, currencies)
    by_type = " ".join(f"WHEN raw_type = {_lit(t)} THEN {per_type[t]}" for t in RULES)
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
    ),
    extracted AS MATERIALIZED (  -- else every check would run the extraction again
        SELECT *, json_type(j, {_PATHS_SQL}) AS types,
               json_extract_string(j, {_PATHS_SQL}) AS texts,
               j ->> '$.event_type' AS raw_type,
               coalesce(json_type(j, '$.event_type'), 'NULL') AS raw_type_kind
        FROM docs
    ),
    checked AS (SELECT *, {", ".join(checks)} FROM extracted)
    SELECT raw_value, topic, "partition", "offset", j, types, texts,
           CASE WHEN raw_type IN {KNOWN_TYPES_SQL} THEN raw_type ELSE 'unknown' END
               AS event_type,
           CASE
             WHEN j IS NULL THEN {_problem("invalid_json", _lit("payload is not a JSON object"))}
             WHEN raw_type_kind = 'NULL'
               THEN {_problem("missing_field", _lit("event_type is missing"))}
             WHEN raw_type NOT IN {KNOWN_TYPES_SQL}
               THEN {unknown}
             {by_type}
           END AS problem
    FROM checked
    """


def late_sql(watermark_minutes: float) -> str:
    """``late``: lineage, ``valid_ts`` and ``is_late`` of the valid events of ``parsed``.
    An event is late when older, by more than the watermark, than the newest valid event
    before it in its topic partition; ``high_water(topic, partition, max_ts)`` holds the
    newest event time before the batch. (Narrow, so the window sorts little.)"""
    micros = round(watermark_minutes * 60_000_000)
    return f"""
    CREATE OR REPLACE TEMP TABLE late AS
    WITH timed AS (
        SELECT topic, "partition", "offset",
               TRY_CAST({_text("timestamp")} AS TIMESTAMPTZ) AS valid_ts
        FROM parsed WHERE problem IS NULL
    ),
    running AS (
        SELECT t.*, max(t.valid_ts) OVER (
                   PARTITION BY t.topic, t."partition" ORDER BY t."offset"
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_ts
        FROM timed t
    )
    SELECT r.topic, r."partition", r."offset", r.valid_ts,
           coalesce(r.valid_ts < greatest(coalesce(r.before_ts, h.max_ts),
                                          coalesce(h.max_ts, r.before_ts))
                                 - to_microseconds({micros}), false) AS is_late
    FROM running r
    LEFT JOIN high_water h ON h.topic = r.topic AND h."partition" = r."partition"
    """


# The newest valid event time per topic partition in the batch.
BATCH_HIGH_WATER_SQL = """
SELECT topic, "partition", max(valid_ts) AS max_ts
FROM late WHERE valid_ts IS NOT NULL
GROUP BY topic, "partition"
"""

# Valid events of the batch (with their late flags), joined on lineage.
_VALID_JOINED = 'parsed JOIN late USING (topic, "partition", "offset") WHERE problem IS NULL'

# Valid events of the batch, as candidates for silver.duplicates.
VALID_EVENTS_SQL = f"""
SELECT {_text("event_id")} AS event_id, event_type, valid_ts AS event_ts,
       CAST(valid_ts AS DATE) AS event_date, topic, "partition", "offset"
FROM {_VALID_JOINED}
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


def _event_select(event_types: tuple[str, ...], columns: list[tuple[str, str]]) -> str:
    """One silver row per valid event of ``event_types``: event_id, ``columns``, the
    unknown fields as ``properties`` JSON, event_ts (UTC), event_date, is_late, the time
    silver wrote it (``$now``) and lineage."""
    known = sorted({r.name for t in event_types for r in RULES[t]} | {"event_type"})
    known_sql = ", ".join(_lit(k) for k in known)
    # Most events have no unknown field: the cheap key check spares them the map.
    unknown_only = (
        f"CASE WHEN len(list_filter(json_keys(j), lambda k: k NOT IN ({known_sql}))) = 0 "
        "THEN '{}' ELSE CAST(to_json(map_from_entries(list_filter("
        "map_entries(CAST(j AS MAP(VARCHAR, JSON))), "
        f"lambda e: e.key NOT IN ({known_sql})))) AS VARCHAR) END"
    )
    select = [
        ("event_id", _text("event_id")),
        *columns,
        ("properties", unknown_only),
        ("event_ts", "valid_ts"),
        ("event_date", "CAST(valid_ts AS DATE)"),
        ("is_late", "is_late"),
        ("processed_ts", "CAST($now AS TIMESTAMPTZ)"),
    ]
    types = ", ".join(_lit(t) for t in event_types)
    return (
        "SELECT "
        + ", ".join(f"{expr} AS {name}" for name, expr in select)
        + f', topic, "partition", "offset" FROM {_VALID_JOINED} '
        + f"AND event_type IN ({types}) "
        + 'ORDER BY topic, "partition", "offset"'
    )


# The pieces silver_columns spells each event table's columns with.
_COLUMNS = ColumnDialect(
    int_type="INTEGER",
    text=_text,
    cast=lambda text, sql_type: f"CAST({text} AS {sql_type})",
    array_length=lambda field: f"json_array_length(j, {_lit('$.' + field)})",
)

EVENT_TABLE_SQL: dict[str, str] = {
    name: _event_select(table.event_types, columns_sql(_COLUMNS, table.columns))
    for name, table in EVENT_TABLES.items()
}

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
       TRY_CAST(CAST(item ->> '$.quantity' AS INTEGER)
            * CAST(item ->> '$.unit_price' AS DECIMAL(18, 2)) AS DECIMAL(18, 2)) AS line_amount,
       currency, event_ts, CAST(event_ts AS DATE) AS event_date,
       topic, "partition", "offset"
FROM lines
"""


# The SQL that derives each silver table's rows from ``parsed`` and ``late``.
TABLE_SQL: dict[str, str] = {
    QUARANTINE.name: QUARANTINE_SQL,
    **EVENT_TABLE_SQL,
    ORDER_ITEMS.name: ORDER_ITEMS_SQL,
}


def parse_raw_events(
    engine: DuckDB,
    batch: pa.Table,
    high_water: pa.Table,
    rules: RawEventRules,
    tables: Collection[str],
    now: datetime,
) -> ParsedEvents:
    """The Engine port's ``parse_raw_events`` on DuckDB: ``parsed`` and ``late`` as
    temporary tables, then one query per silver table wanted."""
    engine.register("batch", batch.select(["raw_value", "topic", "partition", "offset"]))
    engine.register("high_water", high_water)
    try:
        engine.execute(parsed_sql(rules.currencies))
        engine.execute(late_sql(rules.watermark_minutes))
        rows = {}
        for name in tables:
            query = TABLE_SQL[name]
            rows[name] = engine.table(query, {"now": now} if "$now" in query else None)
        return ParsedEvents(
            rows=rows,
            valid=engine.table(VALID_EVENTS_SQL),
            high_water=engine.table(BATCH_HIGH_WATER_SQL),
        )
    finally:
        engine.unregister("batch")
        engine.unregister("high_water")
        engine.execute("DROP TABLE IF EXISTS parsed; DROP TABLE IF EXISTS late")
