"""Which Kafka errors stop a worker (terminal) and which are retried (transient), and what
the runner and the gateway do with each. The same against a real broker:
tests/integration/test_kafka_errors.py."""

from __future__ import annotations

import http.server
import itertools
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from fastapi.testclient import TestClient

from shoplake.errors import ErrorKind, ShoplakeError, TransportError
from shoplake.gateway.app import create_app
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.simulator.sinks import HttpSink
from shoplake.transport import Transport, open_transport
from shoplake.transport.base import OutgoingMessage
from shoplake.transport.kafka import kafka_error
from tests.unit.test_events import event

TERMINAL = [
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError._INVALID_ARG,
    KafkaError._SSL,
]
TRANSIENT = [
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._UNKNOWN_PARTITION,
]


@pytest.mark.parametrize("code", TERMINAL)
def test_credentials_permissions_and_settings_are_terminal(code: int) -> None:
    err = kafka_error("Kafka", KafkaException(KafkaError(code, "refused")))
    assert err.kind is ErrorKind.TERMINAL and not err.transient
    assert "refused" in str(err)


@pytest.mark.parametrize("code", TRANSIENT)
def test_broker_trouble_is_transient(code: int) -> None:
    retriable = code == KafkaError._TIMED_OUT
    err = kafka_error("Kafka", KafkaException(KafkaError(code, "down", retriable=retriable)))
    assert err.transient


def test_a_message_error_is_classified_like_an_exception() -> None:
    assert not kafka_error("read", KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)).transient
    assert kafka_error("read", KafkaError(KafkaError._TRANSPORT)).transient


def test_a_timeout_after_a_background_authentication_failure_is_terminal() -> None:
    """Bad SASL credentials: the call only times out, librdkafka's error callback has
    said why; the error reports that reason, once, instead of being retried."""
    seen = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: bad password")
    timeout = KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))
    err = kafka_error("Kafka at b:9092 is unreachable", timeout, seen)
    assert not err.transient
    assert str(err) == (
        "Kafka at b:9092 is unreachable: SASL authentication error: bad password "
        "[_AUTHENTICATION] (check the SASL/SSL credentials)"
    )


def test_fatal_alone_is_retried_with_a_new_client() -> None:
    """fatal() ends one client instance; the adapter replaces a failed producer."""
    fenced = KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    assert kafka_error("append", fenced).transient


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"security.protocol": "bogus"}, 'Invalid value "bogus" for configuration property'),
        ({"no.such.property": "1"}, 'No such configuration property: "no.such.property"'),
    ],
)
def test_a_bad_client_property_is_a_terminal_error_at_once(
    tmp_path: Path, extra: dict[str, str], problem: str
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        transport={"kind": "kafka", "kafka_bootstrap": "127.0.0.1:1", "kafka_config": extra},
    )
    with pytest.raises(TransportError) as caught:
        open_transport(settings)
    assert not caught.value.transient
    assert problem in str(caught.value) and "SHOPLAKE_TRANSPORT__KAFKA_CONFIG" in str(caught.value)


# -- the runner ---------------------------------------------------------------------------
class _Waits(threading.Event):
    """A stop event that records how long the loop waits, and stops it after ``rounds``."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds, self.waits = rounds, []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self.rounds:
            self.set()
        return self.is_set()


@pytest.fixture
def failing_pipeline(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Pipeline, list[ShoplakeError]]]:
    """A pipeline whose every ingest round raises the error the test puts in the list."""
    errors: list[ShoplakeError] = []

    def ingest_once(wait_s: float = 0.0) -> int:
        raise errors[0]

    monkeypatch.setattr(pipeline, "ingest_once", ingest_once)
    yield pipeline, errors


def test_the_runner_stops_on_a_terminal_error_without_retrying(
    failing_pipeline: tuple[Pipeline, list[ShoplakeError]],
) -> None:
    pipeline, errors = failing_pipeline
    errors.append(TransportError("bad credentials", kind=ErrorKind.TERMINAL))
    stop = _Waits(rounds=100)
    with pytest.raises(TransportError, match="bad credentials"):
        pipeline.run("ingestion", stop=stop)
    assert stop.waits == []  # not one retry


def test_the_runner_backs_off_while_a_transient_error_lasts(
    failing_pipeline: tuple[Pipeline, list[ShoplakeError]],
) -> None:
    pipeline, errors = failing_pipeline
    errors.append(TransportError("broker down"))
    stop = _Waits(rounds=8)
    stats = pipeline.run("ingestion", stop=stop)
    poll = pipeline.settings.pipeline.poll_interval_s  # 0.2: 0.2, 0.4, … up to 5 s
    assert stop.waits == [min(poll * 2**i, 5.0) for i in range(8)]
    assert stats.errors == ["broker down"] * 8


# -- the gateway --------------------------------------------------------------------------
class _Refusing:
    """A transport whose appends fail with ``error``."""

    def __init__(self, inner: Transport, error: ShoplakeError) -> None:
        self.inner, self.error = inner, error

    def append(self, messages: Sequence[OutgoingMessage]) -> None:
        raise self.error

    def partitions(self) -> Any:
        raise self.error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def inner(settings: Settings) -> Iterator[Transport]:
    t = open_transport(settings)
    yield t
    t.close()


def _gateway(settings: Settings, transport: Any) -> TestClient:
    open_gateway = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"auth": False})}
    )
    return TestClient(create_app(open_gateway, transport))


def test_gateway_answers_a_terminal_transport_error_with_its_own_code_logged_once(
    settings: Settings, inner: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    error = TransportError("Kafka: SASL authentication failed", kind=ErrorKind.TERMINAL)
    client = _gateway(settings, _Refusing(inner, error))
    with caplog.at_level(logging.ERROR, logger="shoplake.gateway.app"):
        answers = [client.post("/v1/events", json=[event("page_view")]) for _ in range(3)]
        ready = client.get("/readyz")
    for r in [*answers, ready]:
        assert r.status_code == 503 and "retry-after" not in r.headers
        assert r.json()["error"] == "transport_failed"
        assert "SASL authentication failed" in r.json()["detail"]
    assert "not retried until it is fixed" in answers[0].json()["detail"]
    logged = [r for r in caplog.records if "SASL authentication failed" in r.getMessage()]
    assert len(logged) == 1  # four failures, one log line


def test_gateway_answers_a_transient_transport_error_with_retry_later(
    settings: Settings, inner: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    client = _gateway(settings, _Refusing(inner, TransportError("broker down")))
    with caplog.at_level(logging.ERROR, logger="shoplake.gateway.app"):
        r = client.post("/v1/events", json=[event("page_view")])
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json() == {
        "error": "transport_unavailable",
        "detail": "events not accepted, retry later: broker down",
    }
    assert caplog.records == []  # a client's retry is the remedy, nothing for the operator


# -- a sender -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "requests"), [("transport_failed", 1), ("transport_unavailable", 3)]
)
def test_the_http_sender_gives_up_at_once_only_on_transport_failed(
    code: str, requests: int
) -> None:
    """``generate --to http://…`` retries a 503 transport_unavailable, but stops at the
    first transport_failed with the gateway's reason."""
    seen: list[bytes] = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            body = f'{{"error": "{code}", "detail": "SASL authentication failed"}}'.encode()
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink = HttpSink(f"http://127.0.0.1:{server.server_address[1]}", attempts=3)
        with pytest.raises(TransportError) as caught:
            sink.send(list(itertools.islice(ShopSimulator(1).stream(), 2)))
    finally:
        server.shutdown()
    assert len(seen) == requests
    assert caught.value.transient is (code == "transport_unavailable")
    if code == "transport_failed":
        assert "SASL authentication failed" in str(caught.value)


class _SilentConsumer:
    """A group member's consumer whose rebalance never comes (a slow group join)."""

    def __init__(self, given: list[Any] | None = None) -> None:
        self.given = given  # what a rebalance assigns (None: no rebalance comes)
        self.member: Any = None

    def poll(self, timeout: float) -> None:
        if self.given is not None:
            self.member._on_assign(self, self.given)

    def assign(self, partitions: list[Any]) -> None: ...

    def pause(self, partitions: list[Any]) -> None: ...


def _member(consumer: _SilentConsumer) -> Any:
    from shoplake.transport.kafka import _Member

    member = object.__new__(_Member)  # no broker: the group protocol is the consumer's
    member.transport = type("T", (), {"_terminal": None})()
    member.group, member.owned, member.joined, member.consumer = "g", set(), False, consumer
    consumer.member = member
    return member


def test_a_member_not_yet_in_its_group_is_retried_not_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Owning no partition because the join has not finished must not read as nothing to
    do: `run --until-idle` stopped with every record still in Kafka."""
    monkeypatch.setattr("shoplake.transport.kafka._TIMEOUT_S", 0.3)
    with pytest.raises(TransportError, match="not joined") as raised:
        _member(_SilentConsumer()).poll()
    assert raised.value.transient
    # a member the rebalance gave no partition has joined: it owns nothing, rightly
    assert _member(_SilentConsumer(given=[])).poll() == []
