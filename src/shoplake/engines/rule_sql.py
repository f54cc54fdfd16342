"""The contract's field rules (``contract/rules.py``) compiled into SQL, once for every
engine: a ``RuleDialect`` spells the few things engines write differently (literals, the
problem value, reading a JSON field, whole-text regex matches, item arrays), and the
checks themselves — which reason, in which order, with which detail — are written here.

A rule set compiles into one ``CASE`` that yields NULL for a valid record, else a
problem (reason, detail) for the first rule it breaks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Protocol

from shoplake.contract.events import TIMESTAMP_PATTERN
from shoplake.contract.rules import ITEM_RULES, RULES, FieldRule

# JSON types of numbers, under DuckDB's json_type names (every dialect maps to them).
NUMBER = "('UBIGINT', 'BIGINT', 'DOUBLE')"
INTEGER = "('UBIGINT', 'BIGINT')"

# The contract's pattern has no top-level alternative: matching its body against the whole
# text is matching it anchored.
TIMESTAMP_BODY = TIMESTAMP_PATTERN.removeprefix("^").removesuffix("$")

# Every top-level field a rule names: read once per record by each engine.
FIELDS: tuple[str, ...] = tuple(sorted({r.name for rules in RULES.values() for r in rules}))


class RuleDialect(Protocol):
    """How one engine's SQL spells what the checks need."""

    int_type: str  # a 32-bit integer type name
    timestamptz_type: str  # a type an RFC 3339 string with an offset casts to

    def lit(self, text: str) -> str:
        """A string literal."""
        ...

    def problem(self, reason: str, detail_sql: str) -> str:
        """A (reason, detail) value; ``detail_sql`` is an SQL string expression."""
        ...

    def field_type(self, name: str) -> str:
        """The JSON type of a top-level field of the record (NULL when absent)."""
        ...

    def field_text(self, name: str) -> str:
        """A top-level field of the record as text (NULL when absent or JSON null)."""
        ...

    def nested_type(self, doc: str, name: str) -> str:
        """The JSON type of field ``name`` of the JSON value ``doc``."""
        ...

    def nested_text(self, doc: str, name: str) -> str:
        """Field ``name`` of the JSON value ``doc`` as text."""
        ...

    def full_match(self, text: str, pattern: str) -> str:
        """True when the whole of ``text`` matches ``pattern`` (unanchored)."""
        ...

    def items_empty(self, doc: str, name: str) -> str:
        """True when the array field ``name`` of ``doc`` has no element."""
        ...

    def item_problems(self, doc: str, name: str, per_item: str, not_object: str) -> tuple[str, str]:
        """(any problem, the first problem) over the elements ``x`` of the array field
        ``name``: ``per_item`` judges an object element, ``not_object`` any other."""
        ...


def _checks(
    d: RuleDialect, doc: str, rule: FieldRule, currencies: list[str], *, top_level: bool = True
) -> list[tuple[str, str]]:
    """(failing condition, problem) pairs for one field: of the record (``top_level``) or
    of the JSON value ``doc``."""
    f = rule.name
    jtype = d.field_type(f) if top_level else d.nested_type(doc, f)
    text = d.field_text(f) if top_level else d.nested_text(doc, f)
    lit = d.lit
    shown = f"coalesce(left({text}, 40), '')"
    out: list[tuple[str, str]] = []
    missing = f"coalesce({jtype}, 'NULL') = 'NULL'"
    if rule.required:
        out.append((missing, d.problem("missing_field", lit(f"{f} is missing"))))
        present = "TRUE"
    else:
        present = f"NOT ({missing})"

    def add(cond: str, reason: str, detail: str) -> None:
        out.append((f"({present}) AND ({cond})", d.problem(reason, detail)))

    def got(message: str) -> str:
        return lit(message) + f" || {shown}"

    not_string = f"{jtype} <> 'VARCHAR'"
    kind = rule.kind
    if kind == "string":
        add(not_string, "bad_type", lit(f"{f} must be a string"))
        add(f"length({text}) = 0", "missing_field", lit(f"{f} is empty"))
    elif kind == "text":
        add(not_string, "bad_type", lit(f"{f} must be a string"))
    elif kind == "integer":
        add(f"{jtype} NOT IN {INTEGER}", "bad_type", lit(f"{f} must be an integer"))
        add(f"TRY_CAST({text} AS BIGINT) IS NULL", "bad_value", got(f"{f} is out of range: "))
    elif kind == "country":
        add(not_string, "bad_type", lit(f"{f} must be a string"))
        add(
            f"NOT {d.full_match(text, '[A-Z]{2}')}",
            "bad_value",
            got(f"{f} must be an ISO 3166 alpha-2 code, got "),
        )
    elif kind == "money":
        add(f"{jtype} NOT IN {NUMBER}", "bad_type", lit(f"{f} must be a number"))
        add(
            f"TRY_CAST({text} AS DECIMAL(18, 2)) IS NULL",
            "bad_value",
            got(f"{f} is out of range: "),
        )
        add(f"TRY_CAST({text} AS DOUBLE) < 0", "negative_amount", got(f"{f} must be >= 0, got "))
    elif kind in ("count", "cents"):
        add(f"{jtype} NOT IN {INTEGER}", "bad_type", lit(f"{f} must be an integer"))
        if kind == "count":
            as_int = f"TRY_CAST({text} AS {d.int_type})"
            add(f"{as_int} IS NULL OR {as_int} <= 0", "bad_value", got(f"{f} must be > 0, got "))
        else:
            add(
                f"TRY_CAST({text} AS DECIMAL(18, 0)) IS NULL",
                "bad_value",
                got(f"{f} is out of range: "),
            )
            add(
                f"TRY_CAST({text} AS BIGINT) < 0",
                "negative_amount",
                got(f"{f} must be >= 0, got "),
            )
    elif kind == "currency":
        known = ", ".join(lit(c) for c in sorted(currencies))
        add(not_string, "bad_type", lit(f"{f} must be a string"))
        add(
            f"NOT {d.full_match(text, '[A-Z]{3}')}",
            "bad_value",
            got(f"{f} must be an ISO 4217 code, got "),
        )
        add(
            f"{text} NOT IN ({known})",
            "unknown_currency",
            got(f"{f} has no exchange rate in settings: "),
        )
    elif kind == "timestamp":
        add(not_string, "bad_type", lit(f"{f} must be an RFC 3339 string"))
        add(
            f"NOT {d.full_match(text, TIMESTAMP_BODY)} "
            f"OR TRY_CAST({text} AS {d.timestamptz_type}) IS NULL",
            "bad_timestamp",
            got(f"{f} is not RFC 3339 with an offset: "),
        )
    elif kind == "enum":
        allowed = ", ".join(lit(c) for c in rule.choices)
        add(not_string, "bad_type", lit(f"{f} must be a string"))
        add(
            f"{text} NOT IN ({allowed})",
            "bad_value",
            got(f"{f} must be one of {', '.join(rule.choices)}, got "),
        )
    elif kind == "items":
        add(f"{jtype} <> 'ARRAY'", "bad_type", lit(f"{f} must be an array"))
        add(d.items_empty(doc, f), "empty_items", lit(f"{f} is empty"))
        per_item = case(
            [c for r in ITEM_RULES for c in _checks(d, "x", r, currencies, top_level=False)]
        )
        not_object = d.problem("bad_type", lit("each item must be an object"))
        any_problem, first = d.item_problems(doc, f, per_item, not_object)
        out.append((f"({present}) AND {any_problem}", first))
    return out


def case(checks: list[tuple[str, str]]) -> str:
    whens = " ".join(f"WHEN {cond} THEN {problem}" for cond, problem in checks)
    return f"CASE {whens} END"


def problem_expression(d: RuleDialect, event_type: str, currencies: Iterable[str]) -> str:
    """SQL: NULL when the record ``j`` is a valid ``event_type`` event, else a problem."""
    currencies = list(currencies)
    return case([c for rule in RULES[event_type] for c in _checks(d, "j", rule, currencies)])


def rule_columns(d: RuleDialect, currencies: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Every distinct field rule checked once: select items ``rule_<n>`` (the rule's
    first problem, NULL when kept), and per event type its problem: the first non-NULL
    of its rules' columns in rule order, so the same first broken rule as
    ``problem_expression`` gives. The envelope's rules are shared by every type, so this
    plans in a fraction of the time of one CASE per type (planning, not running, was
    most of a small batch's parse)."""
    currencies = list(currencies)
    number = {rule: n for n, rule in enumerate(dict.fromkeys(itertools.chain(*RULES.values())))}
    # Each rule checks every record (a type's problem reads its rules' columns only): a
    # guard by type measured slower to plan and to run (42/108 vs 28/93 ms at 10/5,000).
    items = [f"{case(_checks(d, 'j', rule, currencies))} AS rule_{n}" for rule, n in number.items()]
    per_type = {
        event_type: "coalesce(" + ", ".join(f"rule_{number[r]}" for r in rules) + ")"
        for event_type, rules in RULES.items()
    }
    return items, per_type
