"""SIGKILL what acknowledges events while clients send them over real HTTP.

The gateway (`shoplake serve`, embedded log) is killed 20 times at random moments
and restarted; the Kafka broker's JVM is killed (not stopped) under a Kafka-backed gateway
and restarted. Clients keep the event ids of every batch answered 202 and never resend a
batch (so an event id is in the transport at most once). After each kill (an ingestion
worker runs throughout), and at the end, every acknowledged event is in bronze exactly
once (and, at the end, in silver once).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from shoplake.check import transport_ends
from shoplake.pipeline.ingest import bronze_lag
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport.base import TopicPartition
from tests.conftest import SHOPLAKE
from tests.integration.clients import Acks, EventSource, bronze_ids, send, silver_ids
from tests.integration.kafka_broker import KafkaBroker, free_port
from tests.integration.test_kafka_exactly_once import kafka_env
from tests.integration.test_serve import wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Clients:
    """``n`` threads posting batches of fresh events until stopped."""

    def __init__(self, port: int, n: int = 3, seed: int = 1, timeout: float = 10) -> None:
        self.timeout = timeout
        self.acks = Acks()
        self.source = EventSource(seed)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._send, args=(port,), daemon=True) for _ in range(n)
        ]
        for t in self.threads:
            t.start()

    def _send(self, port: int) -> None:
        while not self.stop.is_set():
            if send(port, self.source, self.acks, n=40, timeout=self.timeout) != 202:
                self.stop.wait(0.05)  # down or unavailable: try again shortly

    def acked(self) -> set[str]:
        with self.acks.lock:
            return set(self.acks.acked)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    gateway = subprocess.Popen(
        [*SHOPLAKE, "serve", "--no-auth", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_healthy(f"http://127.0.0.1:{port}", gateway)
    return gateway


def shoplake(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([*SHOPLAKE, *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def assert_once(acked: set[str], in_bronze: list[str]) -> None:
    """Every acknowledged event in bronze, and no event id twice (lineage is checked
    by bronze_ids)."""
    assert len(in_bronze) == len(set(in_bronze)), "an event is in bronze twice"
    missing = acked - set(in_bronze)
    assert not missing, f"{len(missing)} acknowledged events are not in bronze"


def wait_in_bronze(home: Path, acked: set[str], ingest: subprocess.Popen[bytes]) -> None:
    """With the gateway down (nothing appended meanwhile), wait for the running ingestion
    worker to bring the whole log into bronze, then check every acknowledged event is
    there once (reading bronze's ids once: it grows to tens of thousands of rows)."""
    settings = Settings(home=home)
    deadline = time.monotonic() + 90
    while lag := sum(bronze_lag_of(settings).values()):
        assert ingest.poll() is None, (home.parent / "ingest.err").read_text()
        assert time.monotonic() < deadline, f"{lag} records of the log not in bronze"
        time.sleep(0.2)
    assert_once(acked, bronze_ids(home))


def bronze_lag_of(settings: Settings) -> dict[TopicPartition, int]:
    ends = transport_ends(settings)
    store = open_store(settings)
    try:
        return bronze_lag(store, ends, settings.pipeline.consumer_group)
    finally:
        store.close()


def test_gateway_sigkilled_twenty_times_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(77)
    home = tmp_path / "home"
    # the ingestion worker commits a batch every 0.2 s (not 1 s): each kill's wait is short
    env = {**os.environ, "SHOPLAKE_HOME": str(home), "SHOPLAKE_PIPELINE__BATCH_MAX_SECONDS": "0.2"}
    port = free_port()
    gateway = serve(env, port)
    with (tmp_path / "ingest.err").open("wb") as errors:  # an ingestion worker throughout
        ingest = subprocess.Popen(
            [*SHOPLAKE, "run", "--job", "ingestion"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    clients = Clients(port)
    kills = 0
    try:
        while kills < 20:
            time.sleep(rng.uniform(0.2, 1.5))
            assert gateway.poll() is None, gateway.stderr.read() if gateway.stderr else ""
            gateway.send_signal(signal.SIGKILL)
            gateway.wait()
            kills += 1
            # Nothing is acknowledged while it is down: what was, is in bronze once.
            wait_in_bronze(home, clients.acked(), ingest)
            gateway = serve(env, port)
    finally:
        clients.close()
        gateway.send_signal(signal.SIGINT)
        gateway.wait(30)
    acked = clients.acked()
    wait_in_bronze(home, acked, ingest)
    ingest.send_signal(signal.SIGKILL)
    ingest.wait()
    statuses = clients.acks.statuses
    assert statuses.count(202) > 100 and len(acked) == 40 * statuses.count(202)
    assert set(statuses) <= {0, 202}, set(statuses)  # 0: refused while it was down
    shoplake(env, "run", "--until-idle")
    assert_once(acked, bronze_ids(home))
    in_silver = silver_ids(home)
    assert len(in_silver) == len(set(in_silver))
    assert acked <= set(in_silver)


def test_kafka_broker_sigkilled_loses_and_doubles_nothing(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    rng = random.Random(78)
    home = tmp_path / "home"
    env = kafka_env(home, kafka)
    port = free_port()
    gateway = serve(env, port)
    # (a request waits while the gateway's Kafka producer retries, up to its timeouts)
    clients = Clients(port, seed=2, timeout=120)
    try:
        for _ in range(2):
            time.sleep(rng.uniform(2, 5))
            before = len(clients.acked())
            kafka.kill()  # SIGKILL: no clean shutdown, the broker recovers its logs
            time.sleep(rng.uniform(1, 3))
            kafka.start(timeout=120)
            deadline = time.monotonic() + 90
            while len(clients.acked()) <= before:  # the gateway acknowledges again
                assert time.monotonic() < deadline, "no 202 after the broker came back"
                assert gateway.poll() is None, gateway.stderr.read() if gateway.stderr else ""
                time.sleep(0.2)
        time.sleep(2)
    finally:
        clients.close()
        gateway.send_signal(signal.SIGINT)
        gateway.wait(30)
    acked = clients.acked()
    statuses = clients.acks.statuses
    assert 503 in statuses and statuses.count(202) > 20, sorted(set(statuses))
    assert set(statuses) <= {202, 503}, set(statuses)
    deadline = time.monotonic() + 120
    in_bronze = bronze_ids(home)
    while not acked <= set(in_bronze) and time.monotonic() < deadline:
        shoplake(env, "run", "--job", "ingestion", "--until-idle")
        in_bronze = bronze_ids(home)
    assert_once(acked, in_bronze)
