"""A full disk, for real: the home on a small tmpfs, filled up by a filler file.

The gateway answers 503 (never 500) while the log cannot grow, acknowledges again once
space is freed, and every event it acknowledged reaches bronze and silver exactly once.
The pipeline, out of space while it writes bronze, silver and gold, says so and retries;
once space is freed it carries on, and its tables equal a clean run's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shoplake.contract.tables import RAW_EVENTS
from shoplake.settings import Settings
from shoplake.tables import open_store
from tests.conftest import SHOPLAKE
from tests.integration.clients import Acks, EventSource, bronze_ids, send, silver_ids
from tests.integration.disk import fill, small_disk
from tests.integration.equivalence import (
    assert_bronze_is_the_log,
    assert_equals_a_clean_run,
    run_to_idle,
)
from tests.integration.kafka_broker import free_port
from tests.integration.test_serve import wait_healthy

pytestmark = [pytest.mark.integration]


def bronze_count(home: Path) -> int:
    store = open_store(Settings(home=home))
    try:
        return store.open(RAW_EVENTS).count() if store.exists(RAW_EVENTS) else 0
    finally:
        store.close()


def test_gateway_answers_503_on_a_full_disk_and_loses_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 24) as disk:
        home = disk / "home"
        port = free_port()
        errors = (tmp_path / "serve.err").open("wb")
        gateway = subprocess.Popen(
            [*SHOPLAKE, "serve", "--no-auth", "--port", str(port)],
            env={**os.environ, "SHOPLAKE_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", gateway)
            source, acks = EventSource(seed=21), Acks()
            for _ in range(20):
                assert send(port, source, acks) == 202
            filler = fill(disk)
            full = [send(port, source, acks) for _ in range(30)]
            assert 503 in full and set(full) <= {202, 503}, full
            assert b"no space left" in acks.bodies[503], acks.bodies[503]
            assert gateway.poll() is None
            filler.unlink()  # space again: the gateway acknowledges again
            freed = [send(port, source, acks) for _ in range(20)]
            assert freed[-10:] == [202] * 10, freed
            assert set(acks.statuses) <= {202, 503}, acks.statuses
        finally:
            gateway.send_signal(signal.SIGINT)
            gateway.wait(30)
            errors.close()
        run_to_idle(home)
        in_bronze = bronze_ids(home)
        assert len(in_bronze) == len(set(in_bronze))  # no event id was ever sent twice
        assert acks.acked <= set(in_bronze)
        in_silver = silver_ids(home)
        assert len(in_silver) == len(set(in_silver))
        assert acks.acked <= set(in_silver)


def test_pipeline_out_of_space_retries_and_loses_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 48) as disk:
        home = disk / "home"
        env = {
            **os.environ,
            "SHOPLAKE_HOME": str(home),
            "SHOPLAKE_PIPELINE__BATCH_MAX_RECORDS": "2000",
            "SHOPLAKE_PIPELINE__GOLD_REFRESH_S": "0.5",
        }
        generate = [*SHOPLAKE, "generate", "-n", "20000", "--seed", "6", "--bad-ratio", "0.05"]
        subprocess.run(generate, env=env, check=True, capture_output=True)
        # Room for the first few commits only: the disk fills while bronze, silver and
        # gold are being written.
        filler = fill(disk, leave_bytes=1_500_000)
        log_path = tmp_path / "run.err"
        with log_path.open("wb") as errors:
            run = subprocess.Popen(
                [*SHOPLAKE, "run"], env=env, stdout=subprocess.DEVNULL, stderr=errors
            )
        try:
            deadline = time.monotonic() + 90
            while b"no space left" not in log_path.read_bytes():
                assert run.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            time.sleep(3)  # it keeps retrying, and does not give up
            assert run.poll() is None, log_path.read_text()
            filler.unlink()
            deadline = time.monotonic() + 120
            while bronze_count(home) < 20000:
                assert run.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline
                time.sleep(1)
            # Out of space it said so and retried: no traceback, no stop. (Read before
            # the stop below, which is not what this test is about.)
            messages = log_path.read_text()
            assert "Traceback" not in messages, messages
        finally:
            run.send_signal(signal.SIGKILL)
            run.wait(60)
        run_to_idle(home)

        settings = Settings(home=home)
        assert assert_bronze_is_the_log(settings) == 20000
        assert_equals_a_clean_run(settings, tmp_path)
