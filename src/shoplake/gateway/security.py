"""Access control, rate limits, bounded bodies and security headers for the gateway.

Two kinds of keys: write keys (``api_keys``) may POST events and read everything; read
keys (``read_keys``) open the dashboard, ``/api``, ``/docs`` and ``/metrics`` only. A key
is sent as ``Authorization: Bearer KEY`` or, from a browser, as HTTP Basic auth with the
key as the password (the browser asks for it once and sends it with every request of
the page; a key in the URL would end up in access logs and browser history).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Literal

import orjson

from shoplake.settings import GatewaySettings

Kind = Literal["write", "read"]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes stay open: orchestrators call them without credentials.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
WRITE_PATHS = frozenset({"/v1/events", "/events"})  # /events: seed 004's path


def _digest(secret: bytes) -> bytes:
    # Comparing fixed-length digests keeps a key's length out of the timing too.
    return hashlib.sha256(secret).digest()


class KeyRing:
    """The configured keys; tells which kind a presented credential is, in constant time."""

    def __init__(self, write: Iterable[str], read: Iterable[str]) -> None:
        self._keys: list[tuple[bytes, Kind]] = [(_digest(k.encode()), "write") for k in write]
        self._keys += [(_digest(k.encode()), "read") for k in read]

    def identify(self, authorization: str | None) -> tuple[Kind, str] | None:
        """(kind, an id for the key — its digest's prefix, never the key) or None."""
        secret = credential(authorization)
        given = _digest(secret if secret is not None else b"")
        write = read = False
        # Every key is compared, whatever matched before: the time taken does not tell
        # which key (or kind) came close.
        for digest, kind in self._keys:
            match = hmac.compare_digest(given, digest)
            write |= match & (kind == "write")
            read |= match & (kind == "read")
        if secret is None or not (write or read):
            return None
        return ("write" if write else "read"), given.hex()[:16]


def credential(authorization: str | None) -> bytes | None:
    """The key in an ``Authorization`` header: a Bearer token, or a Basic password."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    rest = rest.strip()
    # ASGI headers are latin-1: encoding back gives the bytes the client sent.
    try:
        raw = rest.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if scheme.lower() == "bearer":
        return raw or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None
        _, colon, password = decoded.partition(b":")
        return password if colon and password else None
    return None


class RateLimiter:
    """Token buckets, one per client (a key's id, or an address with auth off): ``rate``
    events per second, up to ``burst`` at once. A request larger than the burst passes
    when the bucket is full and leaves it in debt, so no batch size is refused forever."""

    def __init__(self, rate: float, burst: int | None, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate)))
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, when)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _tokens(self, client: str, now: float) -> float:
        tokens, when = self._buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - when) * self.rate)

    def wait(self, client: str, events: int) -> float:
        """Seconds until ``client`` may send ``events``: 0 means now, and they are
        counted. (The gateway runs in one event loop: no lock needed.)"""
        if not self.enabled:
            return 0.0
        now = time.monotonic()
        tokens = self._tokens(client, now)
        need = min(float(events), self.burst)
        self._buckets.pop(client, None)  # re-inserted last: the dict stays in LRU order
        if tokens < need:
            self._buckets[client] = (tokens, now)
            return (need - tokens) / self.rate
        self._buckets[client] = (tokens - events, now)
        self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        # Addresses are unbounded with auth off: forget the least recently seen clients
        # (a forgotten client starts again with a full bucket).
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]


class BodyTooLarge(Exception):
    pass


class BadEncoding(ValueError):
    """A compressed body that cannot be decompressed (answered with 400)."""


class _Gunzip:
    """Decompresses gzip incrementally, stopping as soon as the output passes ``limit``:
    memory stays bounded whatever the compression ratio (a gzip bomb gets 413)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.parts: list[bytes] = []
        self._d = zlib.decompressobj(wbits=31)
        self._fed = False

    def feed(self, data: bytes) -> None:
        while data:
            self._fed = True
            if self._d.eof:  # gzip allows several members one after the other
                self._d = zlib.decompressobj(wbits=31)
            try:
                out = self._d.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                raise BadEncoding(f"the body is not valid gzip: {exc}") from None
            self.size += len(out)
            if self.size > self.limit:
                raise BodyTooLarge
            self.parts.append(out)
            data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail

    def finish(self) -> bytes:
        if not self._fed or not self._d.eof:
            raise BadEncoding("the gzip body ends before its end (truncated)")
        return b"".join(self.parts)


async def read_body(
    chunks: Callable[[], Any], limit: int, declared: str | None, gzip: bool
) -> bytes:
    """The body from the async iterator ``chunks()``, at most ``limit`` bytes as sent and,
    when gzip'd, at most ``limit`` bytes decompressed. Raises BodyTooLarge as soon as it
    is known, or BadEncoding."""
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge
    gunzip = _Gunzip(limit) if gzip else None
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if gunzip is not None:
            gunzip.feed(chunk)
        else:
            parts.append(chunk)
    return gunzip.finish() if gunzip is not None else b"".join(parts)


# The dashboard's own page: its scripts and styles come from this origin only (plotly.js
# sets inline styles on the chart elements, hence 'unsafe-inline' for styles alone).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def docs_csp(inline_script_hash: str) -> str:
    """FastAPI's Swagger UI comes from jsDelivr and starts with one inline script,
    allowed by its hash."""
    cdn = "https://cdn.jsdelivr.net"
    return (
        f"default-src 'self'; script-src 'self' {cdn} 'sha256-{inline_script_hash}'; "
        f"style-src 'self' {cdn} 'unsafe-inline'; img-src 'self' data: "
        "https://fastapi.tiangolo.com; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _error_message(status: int, code: str, detail: str, challenges: list[str]) -> list[Message]:
    body = orjson.dumps({"error": code, "detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(b"www-authenticate", c.encode()) for c in challenges]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


class SecurityMiddleware:
    """Checks keys before any route runs (so every route, present or future, is covered)
    and adds security headers to every answer. ``on_reject(path, status)`` counts the
    refusals."""

    def __init__(
        self,
        app: ASGIApp,
        cfg: GatewaySettings,
        docs_policy: str,
        on_reject: Callable[[str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.auth = cfg.auth
        self.protect_reads = cfg.reads_protected
        self.keys = KeyRing(
            (k.get_secret_value() for k in cfg.api_keys),
            (k.get_secret_value() for k in cfg.read_keys),
        )
        self.on_reject = on_reject
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        page = (b"content-security-policy", PAGE_CSP.encode())
        # Assets revalidate (ETag); live figures and answers are never stored.
        self._added = {  # by kind of path, each unless the answer has it already
            "docs": [(b"content-security-policy", docs_policy.encode()), *common,
                     (b"cache-control", b"no-store")],
            "static": [page, *common, (b"cache-control", b"private, no-cache")],
            "other": [page, *common, (b"cache-control", b"no-store")],
        }  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        send = self._with_headers(path, send)
        refusal = self._refusal(scope, path)
        if refusal is not None:
            if self.on_reject is not None:
                self.on_reject(path, refusal[0]["status"])
            for message in refusal:
                await send(message)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, path: str) -> list[Message] | None:
        writing = path in WRITE_PATHS
        if not self.auth or path in OPEN_PATHS or not (writing or self.protect_reads):
            return None
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        who = self.keys.identify(authorization)
        if who is None:
            if writing:
                challenges = ["Bearer"]
            else:  # the browser asks for the key (as the password) on a Basic challenge
                challenges = ['Basic realm="shoplake", charset="UTF-8"', "Bearer"]
            how = "Authorization: Bearer <key>, or HTTP Basic auth with the key as password"
            return _error_message(401, "unauthorized", f"send {how}", challenges)
        kind, key_id = who
        if writing and kind != "write":
            return _error_message(
                403,
                "forbidden",
                "a read-only key cannot send events: use a write key (SHOPLAKE_GATEWAY__API_KEYS)",
                [],
            )
        scope.setdefault("state", {})["client_id"] = f"key:{key_id}"
        return None

    def _with_headers(self, path: str, send: Send) -> Send:
        if path in ("/docs", "/docs/oauth2-redirect"):
            added = self._added["docs"]
        else:
            added = self._added["static" if path.startswith("/static/") else "other"]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in added if h[0] not in present]
            await send(message)

        return sending
