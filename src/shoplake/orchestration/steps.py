"""The pipeline's steps as an orchestrator calls them: plain functions over the settings
of the environment, each doing its part until idle and returning figures for the log.
A failed check raises CheckFailed, whose message names the check and its figure."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from shoplake.check import Check, Thresholds, run_checks, transport_ends
from shoplake.contract.tables import RAW_EVENTS
from shoplake.errors import ShoplakeError
from shoplake.pipeline.ingest import bronze_lag
from shoplake.pipeline.registry import MODELS
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings, load_settings
from shoplake.tables import open_store


class CheckFailed(ShoplakeError):
    """A health check of the pipeline failed."""


def checks_by_name(settings: Settings) -> dict[str, Check]:
    """``shoplake check``'s checks with the default thresholds, by name."""
    store = open_store(settings)
    try:
        return {c.name: c for c in run_checks(settings, store, Thresholds())}
    finally:
        store.close()


def require(settings: Settings, names: tuple[str, ...]) -> dict[str, str]:
    """Run ``shoplake check``; raise CheckFailed naming each of ``names`` that failed (or
    could not run), with its figure. Returns the figures."""
    found = checks_by_name(settings)
    failed = [
        f"{name}: {found[name].figure}" if name in found else f"{name}: not run"
        for name in names
        if name not in found or not found[name].ok
    ]
    if failed:
        raise CheckFailed("check failed: " + "; ".join(failed))
    return {name: found[name].figure for name in names}


def ingestion_health(settings: Settings | None = None) -> dict[str, str]:
    """The ingestion workers keep up: the transport answers and bronze lags little (this
    needs bronze only, not the later layers ``shoplake check`` looks at first)."""
    settings = settings or load_settings()
    limit = Thresholds().max_lag
    try:
        ends = transport_ends(settings)
    except ShoplakeError as exc:
        raise CheckFailed(f"check failed: transport reachable: {exc}") from exc
    store = open_store(settings)
    try:
        if not store.exists(RAW_EVENTS):
            raise CheckFailed("check failed: lag: bronze.raw_events does not exist yet")
        lag = sum(bronze_lag(store, ends, settings.pipeline.consumer_group).values())
    finally:
        store.close()
    figure = f"{lag:,} records behind (limit {limit:,})"
    if lag > limit:
        raise CheckFailed(f"check failed: lag: {figure}")
    return {"transport reachable": f"{sum(ends.values()):,} records", "lag": figure}


def silver_catch_up(settings: Settings | None = None) -> dict[str, Any]:
    """Silver up to bronze, and the silver-layer derived tables (order_payments, the
    dimensions) up to silver."""
    pipeline = Pipeline(settings or load_settings())
    try:
        rows = until_idle(pipeline.step_silver)
        derived = _step_until_idle(pipeline, "silver")
    finally:
        pipeline.close()
    return {"bronze rows read": rows, "derived rows written": derived}


def gold_catch_up(settings: Settings | None = None) -> dict[str, Any]:
    """Every gold table up to silver."""
    pipeline = Pipeline(settings or load_settings())
    try:
        return {"gold rows written": _step_until_idle(pipeline, "gold")}
    finally:
        pipeline.close()


def gold_checks(settings: Settings | None = None) -> dict[str, str]:
    """Gold is fresh and reconciles with silver."""
    return require(settings or load_settings(), ("gold is fresh", "gold reconciles with silver"))


def until_idle(step: Callable[[], int]) -> int:
    """Call ``step`` until it does nothing; the sum of what it did."""
    total = 0
    while done := step():
        total += done
    return total


def _step_until_idle(pipeline: Pipeline, layer: str) -> int:
    """Each derived table of ``layer``, in the registry's order, until it is up to date."""
    return sum(
        until_idle(partial(pipeline.step_table, d.spec.qualified))
        for d in MODELS
        if d.spec.layer == layer
    )
