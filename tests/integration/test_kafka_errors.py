"""Terminal Kafka errors against a real broker: a worker with bad settings or credentials
stops at once with one error line (exit 1) instead of retrying forever; the gateway
answers 503 transport_failed. The classification itself: tests/unit/test_kafka_errors.py."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shoplake.gateway.app import create_app
from shoplake.settings import Settings
from shoplake.transport import open_transport
from tests.conftest import SHOPLAKE
from tests.integration.kafka_broker import SASL_PASSWORD, SASL_USER, KafkaBroker
from tests.integration.test_kafka import NDJSON, events

pytestmark = [pytest.mark.integration]

_run = itertools.count()
WRONG = "not-the-password-42"


def sasl(password: str = SASL_PASSWORD) -> dict[str, str]:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": SASL_USER,
        "sasl.password": password,
    }


def shoplake_on_kafka(
    tmp_path: Path, bootstrap: str, config: dict[str, str], *args: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``shoplake ARGS`` on the broker with extra client properties, on topics of its own;
    the result and how long it took (a worker retrying forever fails the test by timeout)."""
    prefix = f"e{next(_run)}-"
    env = {
        **os.environ,
        "SHOPLAKE_HOME": str(tmp_path / "home"),
        "SHOPLAKE_TRANSPORT__KIND": "kafka",
        "SHOPLAKE_TRANSPORT__KAFKA_BOOTSTRAP": bootstrap,
        "SHOPLAKE_TRANSPORT__KAFKA_CONFIG": json.dumps(config),
    }
    for name, topic in Settings().topics.model_dump(exclude_none=True).items():
        env[f"SHOPLAKE_TOPICS__{name.upper()}"] = prefix + topic
    started = time.monotonic()
    done = subprocess.run(
        [*SHOPLAKE, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    return done, time.monotonic() - started


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr  # said once
    return lines[0]


def test_a_bad_client_property_stops_the_worker_at_once(tmp_path: Path, kafka: KafkaBroker) -> None:
    done, took = shoplake_on_kafka(
        tmp_path, kafka.bootstrap, {"security.protocol": "bogus"}, "run", "--job", "ingestion"
    )
    line = one_error_line(done)
    assert 'Invalid value "bogus" for configuration property "security.protocol"' in line
    assert "SHOPLAKE_TRANSPORT__KAFKA_CONFIG" in line
    assert took < 10


def test_a_wrong_password_stops_the_worker_with_one_error_line(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    # the right password works (so the failure below is the password's)…
    sent, _ = shoplake_on_kafka(
        tmp_path / "right", kafka.sasl_bootstrap, sasl(), "generate", "-n", "40", "--to", "kafka"
    )
    assert sent.returncode == 0, sent.stderr
    # …and a continuous ingestion worker with a wrong one stops instead of retrying forever
    done, took = shoplake_on_kafka(
        tmp_path / "wrong", kafka.sasl_bootstrap, sasl(WRONG), "run", "--job", "ingestion"
    )
    line = one_error_line(done)
    assert "SASL authentication error" in line and "Invalid username or password" in line
    assert "[_AUTHENTICATION]" in line and WRONG not in done.stderr
    assert took < 30  # one metadata timeout (10 s), then the process ends


def test_sasl_to_a_plaintext_listener_stops_the_worker(tmp_path: Path, kafka: KafkaBroker) -> None:
    done, took = shoplake_on_kafka(
        tmp_path, kafka.bootstrap, sasl(), "run", "--job", "ingestion", "--until-idle"
    )
    line = one_error_line(done)
    assert "SASL PLAIN mechanism handshake failed" in line, line
    assert took < 30


def test_gateway_with_wrong_credentials_answers_transport_failed(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        transport={
            "kind": "kafka",
            "kafka_bootstrap": kafka.sasl_bootstrap,
            "kafka_config": sasl(WRONG),
        },
        gateway={"auth": False},
    )
    transport = open_transport(settings)
    try:
        client = TestClient(create_app(settings, transport))
        r = client.post("/v1/events", json={"event_type": "page_view"})
        assert r.status_code == 422  # nothing valid: the transport is not asked
        r = client.post("/v1/events", content=b"\n".join(events(3)), headers=NDJSON)
        assert r.status_code == 503 and "retry-after" not in r.headers
        assert r.json()["error"] == "transport_failed"
        assert "Invalid username or password" in r.json()["detail"]
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json()["error"]) == (503, "transport_failed")
    finally:
        transport.close()


def test_the_sasl_settings_reach_the_broker(tmp_path: Path, kafka: KafkaBroker) -> None:
    """SHOPLAKE_TRANSPORT__SECURITY_PROTOCOL, __SASL_MECHANISM, __SASL_USERNAME and
    __SASL_PASSWORD, instead of librdkafka's names in KAFKA_CONFIG."""
    prefix = f"named{next(_run)}-"
    env = {
        **os.environ,
        "SHOPLAKE_HOME": str(tmp_path / "home"),
        "SHOPLAKE_TRANSPORT__KIND": "kafka",
        "SHOPLAKE_TRANSPORT__KAFKA_BOOTSTRAP": kafka.sasl_bootstrap,
        "SHOPLAKE_TRANSPORT__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SHOPLAKE_TRANSPORT__SASL_MECHANISM": "PLAIN",
        "SHOPLAKE_TRANSPORT__SASL_USERNAME": SASL_USER,
        "SHOPLAKE_TRANSPORT__SASL_PASSWORD": SASL_PASSWORD,
    }
    for name, topic in Settings().topics.model_dump(exclude_none=True).items():
        env[f"SHOPLAKE_TOPICS__{name.upper()}"] = prefix + topic

    def shoplake(*args: str, **changes: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SHOPLAKE, *args], env={**env, **changes}, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    sent = shoplake("generate", "-n", "30", "--to", "kafka")
    assert sent.returncode == 0, sent.stderr
    done = shoplake("run", "--job", "ingestion", "--until-idle")
    assert done.returncode == 0 and "ingested 30 records" in done.stderr, done.stderr
    wrong = shoplake("run", "--job", "ingestion", SHOPLAKE_TRANSPORT__SASL_PASSWORD=WRONG)
    assert "Invalid username or password" in one_error_line(wrong)
    assert WRONG not in wrong.stderr
