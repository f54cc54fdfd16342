"""The gateway: status codes and bodies, per-item verdicts, durability before 202."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from shoplake.contract.events import EVENT_TYPES
from shoplake.errors import TransportError
from shoplake.gateway.app import create_app, opentelemetry_config
from shoplake.settings import Settings
from shoplake.transport import Transport, open_transport
from shoplake.transport.base import OutgoingMessage
from tests.unit.test_events import event
from tests.unit.test_rules_parity import sql_verdicts
from tests.unit.test_silver import CASES

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NDJSON = {**AUTH, "Content-Type": "application/x-ndjson"}


@pytest.fixture
def gw_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"api_keys": (SecretStr(KEY),)})}
    )


@pytest.fixture
def transport(gw_settings: Settings) -> Iterator[Transport]:
    t = open_transport(gw_settings)
    yield t
    t.close()


@pytest.fixture
def client(gw_settings: Settings, transport: Transport) -> TestClient:
    return TestClient(create_app(gw_settings, transport))


def in_log(transport: Transport) -> list[dict[str, Any]]:
    records = transport.read(dict.fromkeys(transport.partitions(), 0), 10_000).records
    return [
        {"topic": r["topic"], "key": r["key"], "event": orjson.loads(r["value"])}
        for r in records.to_pylist()
    ]


def test_one_event_is_made_durable_and_routed(client: TestClient, transport: Transport) -> None:
    e = event("payment", extra_field={"kept": True})
    r = client.post("/v1/events", json=e, headers=AUTH)
    assert r.status_code == 202
    assert r.json() == {"accepted": 1, "rejected": [], "quarantined": []}
    (got,) = in_log(transport)
    assert got["topic"] == "payments"
    assert got["key"] == e["order_id"].encode()  # payments are keyed by order
    assert got["event"] == e  # unknown fields travel on


def test_the_events_path_takes_only_post(client: TestClient) -> None:
    # POST goes straight to the endpoint (DirectRoute); anything else is FastAPI's routing
    for method in ("GET", "PUT", "DELETE"):
        r = client.request(method, "/v1/events", headers=AUTH)
        assert (r.status_code, r.headers["Allow"]) == (405, "POST")
    assert client.post("/v1/events", json=event("page_view"), headers=AUTH).status_code == 202


def test_every_event_type_is_accepted(client: TestClient, transport: Transport) -> None:
    events = [event(kind, event_id=f"e{i}") for i, kind in enumerate(EVENT_TYPES)]
    r = client.post("/v1/events", json=events, headers=AUTH)
    assert r.json() == {"accepted": len(EVENT_TYPES), "rejected": [], "quarantined": []}
    assert sorted(g["event"]["event_id"] for g in in_log(transport)) == sorted(
        e["event_id"] for e in events
    )


def test_a_batch_lists_each_rejection_and_keeps_the_valid(
    client: TestClient, transport: Transport
) -> None:
    batch = [
        event("page_view", event_id="ok1"),
        event("purchase", total_amount=-5),
        "not an object",
        event("page_view", event_type="teleport"),
        event("page_view", event_id="ok2"),
    ]
    r = client.post("/v1/events", json=batch, headers=AUTH)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 3
    assert [(x["index"], x["reason"]) for x in body["rejected"]] == [
        (1, "negative_amount"),
        (2, "invalid_json"),
    ]
    # a type shoplake does not know is kept (dead-letter topic) for silver to quarantine
    assert [(x["index"], x["reason"]) for x in body["quarantined"]] == [(3, "unknown_event_type")]
    assert all(x["detail"] for x in body["rejected"] + body["quarantined"])
    assert sorted(g["event"]["event_id"] for g in in_log(transport)) == ["e-1", "ok1", "ok2"]


def test_a_day_the_calendar_lacks_is_a_bad_timestamp(client: TestClient) -> None:
    r = client.post(
        "/v1/events",
        json=[
            event("page_view", timestamp=t)
            for t in ("2026-02-29T10:00:00Z", "2028-02-29T10:00:00Z")
        ],
        headers=AUTH,
    )
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"] == [
        {
            "index": 0,
            "reason": "bad_timestamp",
            "detail": "timestamp is not RFC 3339 with an offset: 2026-02-29T10:00:00Z",
        }
    ]


def test_ndjson_lines_keep_their_bytes_and_a_bad_line_is_rejected(
    client: TestClient, transport: Transport
) -> None:
    line = b'{"event_type": "user_session", "event_id": "s1", "timestamp": "2026-02-01T10:00:00Z",'
    line += b' "user_id": "u", "session_id": "S", "action": "login",  "note": 1.50}'
    body = line + b"\n\n{broken\n" + orjson.dumps(event("page_view", event_id="p")) + b"\n"
    r = client.post("/v1/events", content=body, headers=NDJSON)
    assert r.status_code == 202
    assert r.json()["accepted"] == 2
    assert [(x["index"], x["reason"]) for x in r.json()["rejected"]] == [(1, "invalid_json")]
    raw = transport.read(dict.fromkeys(transport.partitions(), 0), 10).records["value"].to_pylist()
    assert line in raw  # byte for byte, spacing and 1.50 included


def test_nothing_valid_is_422_with_the_reasons(client: TestClient, transport: Transport) -> None:
    r = client.post("/v1/events", json=event("payment", status="stolen"), headers=AUTH)
    assert r.status_code == 422
    assert r.json()["accepted"] == 0
    assert r.json()["rejected"][0]["reason"] == "bad_value"
    assert in_log(transport) == []


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", AUTH, 400, "malformed_body"),
        (b"42", AUTH, 400, "malformed_body"),
        (b"[]", AUTH, 400, "malformed_body"),
        (b"\n \n", NDJSON, 400, "malformed_body"),
        (b"{}", {}, 401, "unauthorized"),
        (b"{}", {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        (b"{}", {"Authorization": KEY}, 401, "unauthorized"),
        (b"x" * (2**20 + 1), AUTH, 413, "body_too_large"),
        (b"{}", {**AUTH, "Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"{}", {**AUTH, "Content-Type": ""}, 415, "unsupported_media_type"),
    ],
)
def test_malformed_requests_get_their_status_and_a_json_error(
    gw_settings: Settings,
    transport: Transport,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    small = gw_settings.model_copy(
        update={"gateway": gw_settings.gateway.model_copy(update={"max_body_bytes": 2**20})}
    )
    client = TestClient(create_app(small, transport))
    headers = {"Content-Type": "application/json", **headers}
    r = client.post("/v1/events", content=body, headers=headers)
    assert r.status_code == status
    assert r.json()["error"] == code and r.json()["detail"]
    if status == 401:
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert in_log(transport) == []


def test_auth_can_be_turned_off(gw_settings: Settings, transport: Transport) -> None:
    open_settings = gw_settings.model_copy(
        update={"gateway": gw_settings.gateway.model_copy(update={"auth": False})}
    )
    client = TestClient(create_app(open_settings, transport))
    assert client.post("/v1/events", json=event("page_view")).status_code == 202


class _RefusingTransport:
    """An embedded log whose appends fail, as when the disk or the broker is gone."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def append(self, messages: Sequence[OutgoingMessage]) -> None:
        raise TransportError("log is not writable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_transport_failure_is_503_and_acknowledges_nothing(
    gw_settings: Settings, transport: Transport
) -> None:
    client = TestClient(create_app(gw_settings, _RefusingTransport(transport)))  # type: ignore[arg-type]
    r = client.post("/v1/events", json=[event("page_view")] * 3, headers=AUTH)
    assert r.status_code == 503
    assert r.json()["error"] == "transport_unavailable"
    assert "accepted" not in r.json()


@pytest.mark.parametrize(("record", "reason"), [c for c in CASES if isinstance(c[0], dict)])
def test_gateway_reasons_match_silver_quarantine(
    client: TestClient, record: dict[str, Any], reason: str
) -> None:
    r = client.post("/v1/events", json=record, headers=AUTH)
    if reason == "unknown_event_type":  # kept, and the answer says silver quarantines it
        assert r.status_code == 202
        assert r.json()["quarantined"][0]["reason"] == reason
    else:
        assert r.status_code == 422
        assert r.json()["rejected"][0]["reason"] == reason
    assert sql_verdicts([orjson.dumps(record)]) == [reason]


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.post(
        "/v1/events",
        json=[event("page_view"), event("page_view", event_type="teleport")],
        headers=AUTH,
    )
    text = client.get("/metrics", headers=AUTH).text
    assert "shoplake_events_accepted_total 2.0" in text  # the unknown type is kept
    assert 'shoplake_events_rejected_total{reason="unknown_event_type"}' not in text
    assert 'shoplake_gateway_requests_total{status="202"} 1.0' in text


def test_openapi_documents_the_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json", headers=AUTH).json()
    post = spec["paths"]["/v1/events"]["post"]
    assert {"202", "400", "401", "403", "413", "415", "422", "429", "503"} <= set(post["responses"])
    assert client.get("/docs", headers=AUTH).status_code == 200


def test_http_sink_gives_up_on_an_unreachable_gateway_with_a_clear_error() -> None:
    from shoplake.simulator import ShopSimulator
    from shoplake.simulator.sinks import HttpSink

    sink = HttpSink("http://127.0.0.1:1", attempts=2)
    batch = list(itertools.islice(ShopSimulator(1).stream(), 3))
    with pytest.raises(TransportError, match="gave up after 2 attempts: cannot reach"):
        sink.send(batch)


def test_metrics_show_the_lag_behind_bronze(gw_settings: Settings, transport: Transport) -> None:
    from shoplake.pipeline.runner import Pipeline
    from shoplake.tables import open_store

    store = open_store(gw_settings)
    client = TestClient(create_app(gw_settings, transport, store=store))
    batch = [event("page_view", event_id=f"v{i}") for i in range(7)]
    assert client.post("/v1/events", json=batch, headers=AUTH).status_code == 202

    def lag() -> float:
        lines = client.get("/metrics", headers=AUTH).text.splitlines()
        series = [x for x in lines if x.startswith("shoplake_transport_lag_records{")]
        assert series  # one per partition
        return sum(float(x.rsplit(" ", 1)[1]) for x in series)

    assert lag() == 7
    pipeline = Pipeline(gw_settings)
    pipeline.ingest_once()
    pipeline.close()
    assert lag() == 0
    store.close()


def test_concurrent_requests_share_durable_appends(
    gw_settings: Settings, transport: Transport
) -> None:
    import asyncio

    from shoplake.gateway.appender import GroupAppender

    calls: list[int] = []

    class Counting(_RefusingTransport):
        def append(self, messages: Sequence[OutgoingMessage]) -> None:
            calls.append(len(messages))
            self.inner.append(messages)

    appender = GroupAppender(Counting(transport))  # type: ignore[arg-type]
    batches = [
        [OutgoingMessage("page-views", f"s{i}", orjson.dumps(event("page_view", event_id=f"{i}")))]
        for i in range(200)
    ]

    async def send_all() -> None:
        await asyncio.gather(*(appender.append(b) for b in batches))

    asyncio.run(send_all())
    appender.close()
    assert sum(calls) == 200 and len(calls) < 200  # every event, in fewer appends
    assert sorted(int(g["event"]["event_id"]) for g in in_log(transport)) == list(range(200))


def seed_004_event(n: int, event_type: str) -> dict[str, Any]:
    """An event as seed 004's producers send it: its own device names, a location, and
    types of its own next to shoplake's."""
    base = event("page_view") if event_type not in EVENT_TYPES else event(event_type)
    return {
        **base,
        "event_id": f"s4-{n}",
        "event_type": event_type,
        "device": ["iPhone 15", "Android", "desktop"][n % 3],
        "location": {"city": "Lyon", "country": "FR", "lat": 45.76},
    }


def test_a_seed_004_producer_posts_to_events_and_nothing_is_lost(
    gw_settings: Settings, client: TestClient, transport: Transport
) -> None:
    from shoplake.pipeline.runner import Pipeline
    from tests.conftest import rows

    kinds = ["page_view", "add_to_cart", "purchase", "view_item", "wishlist_add"]
    sent = [seed_004_event(n, kinds[n % len(kinds)]) for n in range(20)]
    r = client.post("/events", json=sent, headers=AUTH)  # seed 004's path
    assert r.status_code == 202
    body = r.json()
    unknown = [i for i, e in enumerate(sent) if e["event_type"] not in EVENT_TYPES]
    assert body["accepted"] == len(sent) and body["rejected"] == []
    assert [q["index"] for q in body["quarantined"]] == unknown
    assert all(q["reason"] == "unknown_event_type" for q in body["quarantined"])
    # the alias is the same endpoint: it needs the key too
    assert client.post("/events", json=sent[:1]).status_code == 401

    pipeline = Pipeline(gw_settings)
    try:
        pipeline.run("both", until_idle=True)

        def ids(sql: str) -> set[str]:
            return {r["i"] for r in rows(pipeline, sql)}

        valid = ids(
            "SELECT event_id AS i FROM silver.page_views UNION ALL "
            "SELECT event_id FROM silver.cart_events UNION ALL SELECT event_id FROM silver.orders"
        )
        quarantined = ids("SELECT raw_value ->> '$.event_id' AS i FROM silver.quarantine")
        assert valid | quarantined == {e["event_id"] for e in sent}
        assert quarantined == {sent[i]["event_id"] for i in unknown}
        (pv,) = rows(
            pipeline, "SELECT device, properties FROM silver.page_views ORDER BY event_id LIMIT 1"
        )
        assert pv["device"] == "iPhone 15"  # free, as sent
        assert orjson.loads(pv["properties"])["location"]["city"] == "Lyon"  # kept
    finally:
        pipeline.close()


def test_an_app_started_again_after_its_lifespan_ended_still_appends(
    gw_settings: Settings, transport: Transport
) -> None:
    """Servers and ASGI test clients may end an app's lifespan (its writer thread stops)
    and start it again: appends must not hang."""
    app = create_app(gw_settings, transport)
    for n in range(3):
        with TestClient(app) as client:  # lifespan startup … shutdown
            r = client.post("/v1/events", json=event("page_view", event_id=f"e{n}"), headers=AUTH)
            assert r.status_code == 202
    # and without a lifespan at all, after it ended
    r = TestClient(app).post("/v1/events", json=event("page_view", event_id="e9"), headers=AUTH)
    assert r.status_code == 202
    assert sorted(g["event"]["event_id"] for g in in_log(transport)) == ["e0", "e1", "e2", "e9"]


def test_fastapis_opentelemetry_is_on_only_when_the_environment_configures_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    off = opentelemetry_config()
    assert off == {"tracing": False, "metrics": False, "logs": False}
    assert not FastAPI(telemetry=off)._native_telemetry.enabled()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shoplake-gateway")
    assert opentelemetry_config() == {}  # FastAPI's defaults
