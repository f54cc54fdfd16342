"""The gateway's security: key kinds, protected reads, bounded (gzip) bodies, item caps,
rate limits, security headers, secrets kept out of output, bound SQL parameters."""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from pydantic import SecretStr

from shoplake.gateway import security
from shoplake.gateway.app import create_app
from shoplake.gateway.security import KeyRing
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport import Transport, open_transport
from tests.unit.test_events import event

WRITE, WRITE2, READ = "write-key-1", "write-key-2", "read-key-1"
AS_WRITE = {"Authorization": f"Bearer {WRITE}"}
AS_READ = {"Authorization": f"Bearer {READ}"}
READS = ["/", "/static/app.js", "/static/plotly.min.js", "/api/kpis", "/api/health",
         "/docs", "/openapi.json", "/metrics"]  # fmt: skip


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def with_gateway(settings: Settings, **changes: Any) -> Settings:
    gateway = {
        "api_keys": (SecretStr(WRITE), SecretStr(WRITE2)),
        "read_keys": (SecretStr(READ),),
        **changes,
    }
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(update=gateway)})


@pytest.fixture
def transport(settings: Settings) -> Iterator[Transport]:
    t = open_transport(settings)
    yield t
    t.close()


@pytest.fixture
def make(settings: Settings, transport: Transport) -> Iterator[Callable[..., TestClient]]:
    """Builds a client over the gateway (dashboard included) with these gateway settings."""
    store = open_store(settings)

    def build(**changes: Any) -> TestClient:
        return TestClient(create_app(with_gateway(settings, **changes), transport, store=store))

    yield build
    store.close()


@pytest.fixture
def client(make: Callable[..., TestClient]) -> TestClient:
    return make()


def logged(transport: Transport) -> int:
    return transport.read(dict.fromkeys(transport.partitions(), 0), 100_000).records.num_rows


# -- keys and protected reads --------------------------------------------------------


@pytest.mark.parametrize("path", READS)
def test_reads_need_a_key_and_either_kind_opens_them(client: TestClient, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, basic("wrong"), basic(WRITE + "x")):
        r = client.get(path, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized" and r.json()["detail"]
        # a browser prompts for the key on the Basic challenge
        challenges = r.headers.get_list("www-authenticate")
        assert 'Basic realm="shoplake", charset="UTF-8"' in challenges and "Bearer" in challenges
    for headers in (AS_READ, AS_WRITE, basic(READ), basic(WRITE), basic(READ, user="")):
        assert client.get(path, headers=headers).status_code == 200, headers


def test_probes_stay_open(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_a_read_key_cannot_send_events_a_write_key_can(
    client: TestClient, transport: Transport
) -> None:
    for headers in (AS_READ, basic(READ)):
        r = client.post("/v1/events", json=event("page_view"), headers=headers)
        assert r.status_code == 403
        assert r.json() == {
            "error": "forbidden",
            "detail": "a read-only key cannot send events: use a write key "
            "(SHOPLAKE_GATEWAY__API_KEYS)",
        }
    assert logged(transport) == 0
    r = client.post("/v1/events", json=event("page_view"), headers=AS_WRITE)
    assert r.status_code == 202
    no_key = client.post("/v1/events", json=event("page_view"))
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
    metrics = client.get("/metrics", headers=AS_READ).text
    assert 'shoplake_gateway_requests_total{status="403"} 2.0' in metrics
    assert 'shoplake_gateway_requests_total{status="401"} 1.0' in metrics


def test_reads_are_protected_only_when_keys_exist_or_asked(
    make: Callable[..., TestClient], settings: Settings
) -> None:
    from shoplake.settings import GatewaySettings

    assert not GatewaySettings().reads_protected  # no keys configured
    assert GatewaySettings(read_keys=(SecretStr("r"),)).reads_protected
    assert GatewaySettings(api_keys=(SecretStr("w"),)).reads_protected
    assert not GatewaySettings(api_keys=(SecretStr("w"),), protect_reads=False).reads_protected
    assert not GatewaySettings(api_keys=(SecretStr("w"),), auth=False).reads_protected
    assert with_gateway(settings).gateway.reads_protected
    # turned off: reads are open, events still need a write key
    client = make(protect_reads=False)
    assert client.get("/api/kpis").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.post("/v1/events", json=event("page_view")).status_code == 401
    # auth off (the demo): everything open
    client = make(auth=False)
    assert client.get("/").status_code == 200
    assert client.post("/v1/events", json=event("page_view")).status_code == 202


def test_every_key_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    # A counting wrapper around the real compare_digest: no early exit, so the time taken
    # does not tell which key matched or came close.
    calls: list[int] = []
    real = security.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", counting)
    ring = KeyRing(["w1", "w2"], ["r1", "r2", "w2"])
    for header, kind in [
        ("Bearer w1", "write"),
        ("Bearer w2", "write"),  # in both lists: the stronger kind
        ("Bearer r2", "read"),
        ("Bearer nope", None),
        (None, None),
    ]:
        calls.clear()
        who = ring.identify(header)
        assert (who[0] if who else None) == kind
        assert len(calls) == 5


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"user:").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Bearer ",
        "Bearer",
        "Digest x",
        "Bearer " + "k" * 100_000,
        "Bearer clé",
    ],
)
def test_odd_credentials_are_401_not_errors(client: TestClient, header: str) -> None:
    r = client.get("/api/kpis", headers={"Authorization": header.encode("latin-1")})  # type: ignore[dict-item]
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_a_non_ascii_key_is_matched_on_its_utf8_bytes(
    make: Callable[..., TestClient], transport: Transport
) -> None:
    client = make(read_keys=(SecretStr("clé-ü"),))
    r = client.get("/api/health", headers={"Authorization": "Bearer clé-ü".encode()})  # type: ignore[dict-item]
    assert r.status_code == 200


# -- bodies: gzip, limits, item caps -------------------------------------------------


def post(client: TestClient, body: bytes, **headers: str) -> Any:
    h = {**AS_WRITE, "Content-Type": "application/json", **headers}
    return client.post("/v1/events", content=body, headers=h)


def test_gzip_bodies_are_accepted(client: TestClient, transport: Transport) -> None:
    events = [event("page_view", event_id=f"g{i}") for i in range(20)]
    r = post(client, gzip.compress(orjson.dumps(events)), **{"Content-Encoding": "gzip"})
    assert r.status_code == 202 and r.json()["accepted"] == 20
    # several gzip members one after the other (as `cat a.gz b.gz` makes) are one body
    lines = [orjson.dumps(event("page_view", event_id=f"m{i}")) + b"\n" for i in range(2)]
    body = gzip.compress(lines[0]) + gzip.compress(lines[1])
    r = post(client, body, **{"Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"})
    assert r.status_code == 202 and r.json()["accepted"] == 2
    assert logged(transport) == 22


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (gzip.compress(b"[]")[:-6], "truncated"),
        (b"plain, not gzip", "not valid gzip"),
        (gzip.compress(b"{}") + b"trailing junk", "not valid gzip"),
        (b"", "truncated"),
    ],
    # named, not by their bytes: gzip stamps the time, and pytest -n aborts when two
    # workers collect ids that differ
    ids=["cut-short", "plain", "trailing-junk", "empty"],
)
def test_broken_gzip_is_400(client: TestClient, body: bytes, why: str) -> None:
    r = post(client, body, **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_body"
    assert why in r.json()["detail"]


def test_a_gzip_bomb_is_413_in_bounded_memory(
    make: Callable[..., TestClient], transport: Transport
) -> None:
    limit = 128 * 1024
    client = make(max_body_bytes=limit)
    packer = zlib.compressobj(9, wbits=31)  # gzip of 100 MB of spaces, made piecewise
    bomb = packer.compress(b"[") + b"".join(packer.compress(b" " * 2**20) for _ in range(100))
    bomb += packer.compress(b"]") + packer.flush()
    assert len(bomb) < limit  # small as sent: only the decompressed size is over
    tracemalloc.start()
    try:
        r = post(client, bomb, **{"Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert "decompressed" in r.json()["detail"]
    assert peak < 8 * 2**20  # the 100 MB were never held
    assert logged(transport) == 0


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, gzip", "compress"])
def test_other_content_encodings_are_415(client: TestClient, encoding: str) -> None:
    r = post(client, b"{}", **{"Content-Encoding": encoding})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_content_encoding"


def test_too_many_items_is_413(make: Callable[..., TestClient], transport: Transport) -> None:
    client = make(max_items=3)
    four = [event("page_view", event_id=f"i{i}") for i in range(4)]
    r = post(client, orjson.dumps(four))
    assert r.status_code == 413 and r.json()["error"] == "too_many_items"
    assert "at most 3" in r.json()["detail"]
    ndjson = b"\n".join(orjson.dumps(e) for e in four)
    r = post(client, ndjson, **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 413 and r.json()["error"] == "too_many_items"
    assert logged(transport) == 0
    assert post(client, orjson.dumps(four[:3])).status_code == 202
    assert Settings().gateway.max_items == 10_000


# -- rate limits ----------------------------------------------------------------------


def test_each_key_is_rate_limited_with_retry_after(
    make: Callable[..., TestClient], transport: Transport
) -> None:
    client = make(rate_limit_per_s=1, rate_limit_burst=5)
    batch = [event("page_view", event_id=f"r{i}") for i in range(5)]
    assert post(client, orjson.dumps(batch)).status_code == 202  # the burst
    r = post(client, orjson.dumps(event("page_view", event_id="over")))
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"
    assert r.json()["error"] == "rate_limited" and "1 events/s" in r.json()["detail"]
    # another key has its own bucket
    other = {"Authorization": f"Bearer {WRITE2}"}
    assert post(client, orjson.dumps(event("page_view")), **other).status_code == 202
    assert logged(transport) == 6


def test_a_batch_over_the_burst_passes_once_and_leaves_a_debt(
    make: Callable[..., TestClient], transport: Transport
) -> None:
    client = make(rate_limit_per_s=1, rate_limit_burst=5)
    batch = [event("page_view", event_id=f"d{i}") for i in range(9)]
    assert post(client, orjson.dumps(batch)).status_code == 202  # full bucket: 5 - 9 = -4
    r = post(client, orjson.dumps(event("page_view")))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) == 4
    metrics = client.get("/metrics", headers=AS_READ).text
    assert 'shoplake_gateway_requests_total{status="429"} 1.0' in metrics


def test_without_auth_clients_are_limited_by_address(
    make: Callable[..., TestClient], transport: Transport
) -> None:
    app = make(auth=False, rate_limit_per_s=1).app
    one = TestClient(app, client=("192.0.2.1", 1000))
    two = TestClient(app, client=("192.0.2.2", 1000))
    assert one.post("/v1/events", json=event("page_view")).status_code == 202
    assert one.post("/v1/events", json=event("page_view")).status_code == 429
    assert two.post("/v1/events", json=event("page_view")).status_code == 202


def test_no_rate_limit_by_default(client: TestClient) -> None:
    assert Settings().gateway.rate_limit_per_s == 0
    for i in range(30):
        assert post(client, orjson.dumps(event("page_view", event_id=f"n{i}"))).status_code == 202


# -- headers --------------------------------------------------------------------------


def directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}


@pytest.mark.parametrize(
    ("method", "path", "headers", "cache"),
    [
        ("GET", "/", AS_READ, "no-store"),
        ("GET", "/api/kpis", AS_READ, "no-store"),
        ("GET", "/api/kpis", {}, "no-store"),  # the 401 too
        ("GET", "/metrics", AS_READ, "no-store"),
        ("GET", "/static/app.js", AS_READ, "private, no-cache"),
        ("POST", "/v1/events", AS_WRITE, "no-store"),
        ("GET", "/healthz", {}, "no-store"),
    ],
)
def test_security_headers_on_every_answer(
    client: TestClient, method: str, path: str, headers: dict[str, str], cache: str
) -> None:
    r = client.request(method, path, headers=headers, json=event("page_view"))
    csp = directives(r.headers["Content-Security-Policy"])
    assert csp["script-src"] == ["'self'"]  # no inline or foreign script on the dashboard
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == cache


def test_the_dashboard_page_has_no_inline_script(client: TestClient) -> None:
    page = client.get("/", headers=AS_READ).text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.DOTALL)
    assert scripts and all(
        re.search(r'src="/static/', attrs) and not body.strip() for attrs, body in scripts
    )
    assert not re.search(r"\son\w+=", page)  # no inline event handlers either


def test_the_docs_inline_script_is_allowed_by_its_hash_only(client: TestClient) -> None:
    r = client.get("/docs", headers=AS_READ)
    (inline,) = re.findall(rb"<script>(.*?)</script>", r.content, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline).digest()).decode()
    script_src = directives(r.headers["Content-Security-Policy"])["script-src"]
    assert f"'sha256-{digest}'" in script_src and "'unsafe-inline'" not in script_src


# -- secrets stay out of output -------------------------------------------------------


def test_keys_are_kept_out_of_reprs_errors_and_help(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoplake.cli import cli
    from shoplake.errors import ConfigError
    from shoplake.settings import load_settings

    monkeypatch.setenv("SHOPLAKE_GATEWAY__API_KEYS", '["w-s3cret"]')
    monkeypatch.setenv("SHOPLAKE_GATEWAY__READ_KEYS", '["r-s3cret"]')
    s = load_settings()
    assert s.gateway.api_keys[0].get_secret_value() == "w-s3cret"
    for text in (repr(s), str(s), repr(s.gateway), s.model_dump_json()):
        assert "s3cret" not in text
    monkeypatch.setenv("SHOPLAKE_GATEWAY__MAX_ITEMS", "0")  # invalid: the error names it
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "max_items" in str(err.value) and "s3cret" not in str(err.value)
    monkeypatch.delenv("SHOPLAKE_GATEWAY__MAX_ITEMS")
    for args in (["serve", "--help"], ["generate", "--help"], ["--help"]):
        out = CliRunner().invoke(cli, args)
        assert out.exit_code == 0 and "s3cret" not in out.output


# -- dashboard SQL --------------------------------------------------------------------


def test_dashboard_values_are_bound_not_spliced_into_sql(settings: Settings) -> None:
    from shoplake.dashboard.data import DashboardData

    store = open_store(settings)
    data = DashboardData(settings, store)
    sneaky = "2026-01-01' OR '1'='1"
    assert data._rows("SELECT $day AS day", {"day": sneaky}) == [{"day": sneaky}]
    store.close()


# -- malformed requests on the wire (a real uvicorn, as `shoplake serve` runs it) -------


@pytest.fixture
def served(make: Callable[..., TestClient]) -> Iterator[tuple[str, int]]:
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(make().app, host="127.0.0.1", port=port, log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)


def raw(address: tuple[str, int], request: bytes) -> int:
    """The status of the answer to ``request`` sent as is (0: the server just closed)."""
    import socket

    with socket.create_connection(address, timeout=10) as s:
        s.sendall(request)
        if b"Content-Length: 9999" in request:
            s.shutdown(socket.SHUT_WR)  # the body ends before its announced length
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: abc\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 5\r\nContent-Length: 7\r\n",
        b"Content-Length: 9999\r\n",  # more than is sent
        b"Authorization: Bearer " + b"A" * 200_000 + b"\r\n",
        b"Authorization: Bearer cl\xe9\xff\r\nContent-Length: 2\r\n",
        b"Authorization: Basic \xc3\x28\x80\r\nContent-Length: 2\r\n",
        b"Content-Type: \xff\xfe\r\nAuthorization: Bearer write-key-1\r\nContent-Length: 2\r\n",
        b"Content-Encoding: gzip\r\nAuthorization: Bearer write-key-1\r\nContent-Length: 2\r\n",
    ],
)
def test_malformed_headers_on_the_wire_are_client_errors(
    served: tuple[str, int], headers: bytes
) -> None:
    request = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    request += b"Content-Type: application/json\r\n" if b"Content-Type" not in headers else b""
    status = raw(served, request + headers + b"\r\n{}")
    assert 400 <= status < 500, status
    assert raw(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 200
