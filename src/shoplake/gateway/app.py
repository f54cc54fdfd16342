"""The ingestion gateway: ``POST /v1/events`` → validated events → the transport.

202 is answered only once the transport has made the accepted events durable (fsync'd
log, or Kafka acks=all; concurrent requests share one append, see ``appender``); when it
cannot, 503 and nothing is acknowledged: ``transport_unavailable`` when a retry may
succeed, ``transport_failed`` when it cannot until an operator fixes the transport (bad
Kafka credentials or settings; logged once). Every error has a JSON body
``{"error": code, "detail": text}``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from shoplake.contract.events import EVENT_ADAPTER, EVENT_TYPES
from shoplake.dashboard.data import DashboardData
from shoplake.dashboard.routes import dashboard_router
from shoplake.errors import ShoplakeError
from shoplake.gateway.appender import GroupAppender
from shoplake.gateway.metrics import GatewayMetrics, TableState, TransportLag
from shoplake.gateway.security import (
    OPEN_PATHS,
    WRITE_PATHS,
    BadEncoding,
    BodyTooLarge,
    RateLimiter,
    SecurityMiddleware,
    docs_csp,
    read_body,
)
from shoplake.gateway.validation import EventValidator, MalformedBody, split_body
from shoplake.settings import GatewaySettings, Settings
from shoplake.tables.base import TableStore
from shoplake.transport.base import Transport

log = logging.getLogger(__name__)
_JSON_TYPES = ("application/json",)
_NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


class RejectedItem(BaseModel):
    index: int
    reason: str
    detail: str


class Accepted(BaseModel):
    """What became of each event of a request: ``accepted`` counts the events made
    durable, ``quarantined`` those of them silver will quarantine (an event type shoplake
    does not know: kept in bronze), ``rejected`` the events refused."""

    accepted: int
    rejected: list[RejectedItem]
    quarantined: list[RejectedItem]


class ErrorBody(BaseModel):
    error: str
    detail: str


def opentelemetry_config() -> TelemetryConfig:
    """FastAPI's OpenTelemetry instrumentation, on when the environment configures
    OpenTelemetry (any OTEL_ variable) as the gateway starts. Off otherwise: it asks the
    environment for providers on every request (3.5 µs, ~2% of a single-event request), and
    shoplake's own metrics are Prometheus' (``/metrics``)."""
    if any(name.startswith("OTEL_") for name in os.environ):
        return {}
    return {"tracing": False, "metrics": False, "logs": False}


def server_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """How the gateway is served: by ``shoplake serve``, the demo, and the trivial endpoint
    bench/bench_gateway.py measures as the ceiling of this server stack."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "The body is not JSON, or not an object or array of objects."),
        (401, "Missing or wrong API key (Authorization: Bearer KEY)."),
        (403, "A read-only key cannot send events."),
        (
            413,
            "The body (as sent, or decompressed) is larger than the gateway's limit, or "
            "it holds more events than it may.",
        ),
        (
            415,
            "Content type is neither application/json nor application/x-ndjson, or the "
            "content encoding is not gzip.",
        ),
        (
            429,
            "This key (or client, without auth) sent more events than its rate limit; "
            "retry after Retry-After seconds.",
        ),
        (
            503,
            "The transport could not make the events durable; nothing was acknowledged. "
            "transport_unavailable: retry later; transport_failed: retrying will not help "
            "until the gateway's transport settings are fixed.",
        ),
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
    limiter = RateLimiter(cfg.rate_limit_per_s, cfg.rate_limit_burst)
    registry = registry or CollectorRegistry()
    metrics = GatewayMetrics(registry)
    if store is not None:
        registry.register(TransportLag(transport, store, settings.pipeline.consumer_group))
        registry.register(TableState(store))
    appender = GroupAppender(transport)
    reported: set[str] = set()  # terminal transport errors already logged

    def transport_down(exc: ShoplakeError, detail: str) -> Response:
        """503 either way: the request was fine, the gateway cannot take it now. Only a
        transient error invites a retry; a terminal one is logged once, not per request."""
        if exc.transient:
            return _error(503, "transport_unavailable", detail, {"Retry-After": "1"})
        if str(exc) not in reported:
            reported.add(str(exc))
            log.error("the transport refuses the gateway's events: %s", exc)
        return _error(503, "transport_failed", detail)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        appender.start()  # again, when a server or test client starts the app anew
        yield
        appender.close()

    app = FastAPI(
        lifespan=lifespan,
        title="shoplake gateway",
        summary="Send a shop's events (page views, carts, orders, payments, sessions, "
        "catalog updates) to the lakehouse.",
        version="1",
        docs_url=None,  # served below, with a CSP that allows its CDN and inline script
        redoc_url=None,
        telemetry=opentelemetry_config(),
    )

    def count_refusal(path: str, status: int) -> None:
        if path in WRITE_PATHS:
            metrics.answered(status)

    docs_html = get_swagger_ui_html(openapi_url="/openapi.json", title="shoplake gateway")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return docs_html

    posting: dict[str, Any] = {
        "status_code": 202,
        "response_model": Accepted,
        "responses": _ERRORS,
        "openapi_extra": {"requestBody": _request_body()},
    }

    @app.post("/v1/events", **posting)
    @app.post("/events", summary="Post Events (seed 004's path: as /v1/events)", **posting)
    async def post_events(request: Request) -> Response:
        """Accept one event (a JSON object), a JSON array of events, or NDJSON (one event
        per line). Valid events are routed to their topic; each invalid one is listed
        with its index and the reason silver would quarantine it for. 202 once the
        accepted events are durable; 422 when none was valid."""
        started = time.perf_counter()
        # The key was checked by SecurityMiddleware; without auth, clients are told
        # apart by address.
        client = request.scope.get("state", {}).get("client_id") or (
            f"addr:{request.client.host if request.client else '?'}"
        )
        if limiter.enabled and (wait := limiter.wait(client, 0)) > 0:
            return limited(wait)  # refused before reading the body
        # the request's headers read once (Starlette's .get raises and catches a KeyError
        # for each one absent, which was 5% of a single-event request)
        sent = dict(request.scope["headers"])
        media = sent.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media not in _JSON_TYPES + _NDJSON_TYPES:
            metrics.answered(415)
            return _error(
                415,
                "unsupported_media_type",
                f"content type {media or '(none)'!r}: send application/json or "
                "application/x-ndjson",
            )
        encoding = sent.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            metrics.answered(415)
            return _error(
                415,
                "unsupported_content_encoding",
                f"content encoding {encoding!r}: send gzip or no Content-Encoding",
            )
        try:
            body = await read_body(
                request.stream,
                cfg.max_body_bytes,
                length.decode("latin-1") if (length := sent.get(b"content-length")) else None,
                gzip=encoding != "identity",
            )
            items = split_body(body, media in _NDJSON_TYPES)
        except BodyTooLarge:
            metrics.answered(413)
            return _error(
                413,
                "body_too_large",
                f"the body exceeds {cfg.max_body_bytes} bytes (as sent or decompressed)",
            )
        except (MalformedBody, BadEncoding) as exc:
            metrics.answered(400)
            return _error(400, "malformed_body", str(exc))
        if len(items) > cfg.max_items:
            metrics.answered(413)
            return _error(
                413,
                "too_many_items",
                f"{len(items)} events in one request; at most {cfg.max_items} "
                "(SHOPLAKE_GATEWAY__MAX_ITEMS): split the batch",
            )
        if limiter.enabled and (wait := limiter.wait(client, len(items))) > 0:
            return limited(wait)
        verdicts = validator.judge(items)
        for rejection in verdicts.rejections:
            metrics.rejected.labels(rejection.reason).inc()
        if verdicts.messages:
            try:
                await appender.append(verdicts.messages)
            except ShoplakeError as exc:
                metrics.answered(503)
                later = "retry later" if exc.transient else "not retried until it is fixed"
                return transport_down(exc, f"events not accepted, {later}: {exc}")
            metrics.accepted.inc(len(verdicts.messages))
        status = 202 if verdicts.messages or not verdicts.rejections else 422
        metrics.answered(status)
        metrics.latency.observe(time.perf_counter() - started)
        answer = {
            "accepted": len(verdicts.messages),
            "rejected": [r.__dict__ for r in verdicts.rejections],
            "quarantined": [r.__dict__ for r in verdicts.quarantined],
        }
        return Response(orjson.dumps(answer), status, media_type="application/json")

    def limited(wait: float) -> Response:
        metrics.answered(429)
        retry = max(1, math.ceil(wait))
        return _error(
            429,
            "rate_limited",
            f"more than {cfg.rate_limit_per_s:g} events/s for this key; retry in {retry} s",
            {"Retry-After": str(retry)},
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
            return transport_down(exc, str(exc))
        return JSONResponse({"status": "ready", "partitions": len(partitions)})

    @app.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if store is not None:
        data = DashboardData(settings, store, transport)
        app.include_router(dashboard_router(data, runtime))
    # Middleware added last runs first: keys and headers, then the events' direct route.
    app.add_middleware(DirectRoute, method="POST", paths=WRITE_PATHS, endpoint=post_events)
    app.add_middleware(
        SecurityMiddleware,
        cfg=cfg,
        docs_policy=docs_csp(_inline_script_hash(bytes(docs_html.body))),
        on_reject=count_refusal,
    )
    _document(app, cfg)
    return app


class DirectRoute:
    """Hands ``method`` requests to ``paths`` straight to ``endpoint`` (which takes the
    Request and answers a Response, and is also the route the OpenAPI document lists):
    the events' POST is the gateway's hot path, and skipping FastAPI's routing and
    dependency solving took single events from 35% to 57% of a trivial endpoint's rate
    (docs/benchmarks.md)."""

    def __init__(
        self,
        app: ASGIApp,
        method: str,
        paths: frozenset[str],
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> None:
        self.app, self.method, self.paths, self.endpoint = app, method, paths, endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == self.method
            and scope["path"] in self.paths
        ):
            response = await self.endpoint(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


# The contract's JSON Schema, with its definitions under the OpenAPI components.
_EVENT_SCHEMA = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
_EVENT_DEFS = _EVENT_SCHEMA.pop("$defs", {})
# What a producer may post: an event of the contract, or one of a type shoplake does not
# know (seed 004's), which is kept and quarantined rather than refused.
_POSTED_EVENT = {
    "anyOf": [
        _EVENT_SCHEMA,
        {
            "type": "object",
            "title": "Event of another type",
            "description": "Kept in bronze and quarantined by silver (unknown_event_type); "
            "the answer lists it under `quarantined`.",
            "required": ["event_type"],
            "properties": {"event_type": {"type": "string", "not": {"enum": list(EVENT_TYPES)}}},
        },
    ]
}


def _request_body() -> dict[str, Any]:
    return {
        "required": True,
        "description": "Events of the contract (unknown extra fields are kept), or of other "
        "types (kept for quarantine). Rules JSON "
        "Schema cannot state — a real calendar date, a currency with an exchange rate — "
        "are checked too and reported per item.",
        "content": {
            "application/json": {
                "schema": {"oneOf": [_POSTED_EVENT, {"type": "array", "items": _POSTED_EVENT}]}
            },
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "One JSON event per line."}
            },
        },
    }


def _document(app: FastAPI, cfg: GatewaySettings) -> None:
    """Adds the events' schemas, and the keys each operation needs (so /docs's Authorize
    button works and the 401 is listed)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(_EVENT_DEFS)
        if not cfg.auth:
            return schema
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "a key"},
            "basic": {"type": "http", "scheme": "basic", "description": "password: a key"},
        }
        unauthorized = {
            "description": _ERRORS[401]["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for path, operations in schema.get("paths", {}).items():
            if path in OPEN_PATHS or not (path in WRITE_PATHS or cfg.reads_protected):
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"basic": []}]
                operation.setdefault("responses", {}).setdefault("401", unauthorized)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _inline_script_hash(html: bytes) -> str:
    """The CSP hash (base64 SHA-256) of the one inline script of a page."""
    match = re.search(rb"<script>(.*?)</script>", html, re.DOTALL)
    assert match is not None, "the docs page has no inline script"
    return base64.b64encode(hashlib.sha256(match.group(1)).digest()).decode()
