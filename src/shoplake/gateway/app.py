"""The ingestion gateway: ``POST /v1/events`` → validated events → the transport.

202 is answered only once the transport has made the accepted events durable (fsync'd
log, or Kafka acks=all; concurrent requests share one append, see ``appender``); when it
cannot, 503 and nothing is acknowledged. Every error
has a JSON body ``{"error": code, "detail": text}``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from shoplake.contract.events import EVENT_ADAPTER
from shoplake.dashboard.data import DashboardData
from shoplake.dashboard.routes import dashboard_router
from shoplake.errors import ShoplakeError
from shoplake.gateway.appender import GroupAppender
from shoplake.gateway.metrics import GatewayMetrics, TableState, TransportLag
from shoplake.gateway.validation import EventValidator, MalformedBody, split_body
from shoplake.settings import Settings
from shoplake.tables.base import TableStore
from shoplake.transport.base import Transport

_JSON_TYPES = ("application/json",)
_NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


class RejectedItem(BaseModel):
    index: int
    reason: str
    detail: str


class Accepted(BaseModel):
    """What became of each event of a request."""

    accepted: int
    rejected: list[RejectedItem]


class ErrorBody(BaseModel):
    error: str
    detail: str


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "The body is not JSON, or not an object or array of objects."),
        (401, "Missing or wrong API key (Authorization: Bearer KEY)."),
        (413, "The body is larger than the gateway's limit."),
        (415, "Content type is neither application/json nor application/x-ndjson."),
        (503, "The transport could not make the events durable; nothing was acknowledged."),
    )
}
_ERRORS[422] = {"model": Accepted, "description": "No event of the request was valid."}


def create_app(
    settings: Settings,
    transport: Transport,
    *,
    store: TableStore | None = None,
    registry: CollectorRegistry | None = None,
    runtime: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """The gateway app over ``transport`` (which the caller opens and closes). With the
    ``store`` it also serves the dashboard (``/`` and ``/api/``) and /metrics shows the
    transport's lag behind bronze; ``runtime`` adds the running pipeline's figures."""
    cfg = settings.gateway
    validator = EventValidator(settings.topics, settings.reporting.rates)
    keys = [k.encode() for k in cfg.api_keys]
    registry = registry or CollectorRegistry()
    metrics = GatewayMetrics(registry)
    if store is not None:
        registry.register(TransportLag(transport, store, settings.pipeline.consumer_group))
        registry.register(TableState(store))
    appender = GroupAppender(transport)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        appender.close()

    app = FastAPI(
        lifespan=lifespan,
        title="shoplake gateway",
        summary="Send a shop's events (page views, carts, orders, payments, sessions, "
        "catalog updates) to the lakehouse.",
        version="1",
    )

    def authorised(request: Request) -> bool:
        if not cfg.auth:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        return scheme.lower() == "bearer" and any(hmac.compare_digest(given, k) for k in keys)

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=Accepted,
        responses=_ERRORS,
        openapi_extra={"requestBody": _request_body()},
    )
    async def post_events(request: Request) -> Response:
        """Accept one event (a JSON object), a JSON array of events, or NDJSON (one event
        per line). Valid events are routed to their topic; each invalid one is listed
        with its index and the reason silver would quarantine it for. 202 once the
        accepted events are durable; 422 when none was valid."""
        started = time.perf_counter()
        if not authorised(request):
            metrics.requests.labels("401").inc()
            return _error(
                401,
                "unauthorized",
                "send Authorization: Bearer <API key>",
                {"WWW-Authenticate": "Bearer"},
            )
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in _JSON_TYPES + _NDJSON_TYPES:
            metrics.requests.labels("415").inc()
            return _error(
                415,
                "unsupported_media_type",
                f"content type {media or '(none)'!r}: send application/json or "
                "application/x-ndjson",
            )
        body = await _read_limited(request, cfg.max_body_bytes)
        if body is None:
            metrics.requests.labels("413").inc()
            return _error(413, "body_too_large", f"the body exceeds {cfg.max_body_bytes} bytes")
        try:
            items = split_body(body, media in _NDJSON_TYPES)
        except MalformedBody as exc:
            metrics.requests.labels("400").inc()
            return _error(400, "malformed_body", str(exc))
        verdicts = validator.judge(items)
        for rejection in verdicts.rejections:
            metrics.rejected.labels(rejection.reason).inc()
        if verdicts.messages:
            try:
                await appender.append(verdicts.messages)
            except ShoplakeError as exc:
                metrics.requests.labels("503").inc()
                return _error(
                    503,
                    "transport_unavailable",
                    f"events not accepted, retry later: {exc}",
                    {"Retry-After": "1"},
                )
            metrics.accepted.inc(len(verdicts.messages))
        status = 202 if verdicts.messages or not verdicts.rejections else 422
        metrics.requests.labels(str(status)).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(
            {
                "accepted": len(verdicts.messages),
                "rejected": [r.__dict__ for r in verdicts.rejections],
            },
            status_code=status,
        )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    def readyz() -> Response:
        """The transport is reachable."""
        try:
            partitions = transport.partitions()
        except ShoplakeError as exc:
            return _error(503, "transport_unavailable", str(exc))
        return JSONResponse({"status": "ready", "partitions": len(partitions)})

    @app.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if store is not None:
        data = DashboardData(settings, store, transport)
        app.include_router(dashboard_router(data, runtime))
    _document_event_schemas(app)
    return app


# The contract's JSON Schema, with its definitions under the OpenAPI components.
_EVENT_SCHEMA = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
_EVENT_DEFS = _EVENT_SCHEMA.pop("$defs", {})


def _request_body() -> dict[str, Any]:
    return {
        "required": True,
        "description": "Events of the contract (unknown extra fields are kept). Rules JSON "
        "Schema cannot state — a real calendar date, a currency with an exchange rate — "
        "are checked too and reported per item.",
        "content": {
            "application/json": {
                "schema": {"oneOf": [_EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA}]}
            },
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "One JSON event per line."}
            },
        },
    }


def _document_event_schemas(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(_EVENT_DEFS)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
