"""`shoplake serve` and `generate --to http://…` as a user runs them: separate processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import SHOPLAKE
from tests.integration.kafka_broker import free_port

pytestmark = [pytest.mark.integration]


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def test_generated_events_reach_bronze_through_the_gateway(tmp_path: Path) -> None:
    env = {**os.environ, "SHOPLAKE_HOME": str(tmp_path / "home")}
    env["SHOPLAKE_GATEWAY__API_KEYS"] = '["k-123"]'
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*SHOPLAKE, "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE
    )
    try:
        wait_healthy(url, server)
        sent = subprocess.run(
            [*SHOPLAKE, "generate", "-n", "3000", "--bad-ratio", "0.05", "--to", url],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0
    accepted = int(re.search(r"gateway accepted (\d+)", sent.stderr).group(1))  # type: ignore[union-attr]
    # the default seed's 40 bad events of known types were rejected, with their reasons;
    # the 2 of an unknown type kept for silver to quarantine; the rest made durable
    assert accepted == 2960
    assert (
        "gateway accepted 2960 (2 kept for quarantine: unknown_event_type 2); rejected: "
        "invalid_json 18, bad_value 15, missing_field 6, bad_timestamp 1" in sent.stderr
    ), sent.stderr
    subprocess.run([*SHOPLAKE, "run", "--until-idle"], env=env, check=True, capture_output=True)
    counted = subprocess.run(
        [*SHOPLAKE, "query", "SELECT count(*) AS n FROM bronze.raw_events", "--json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f'"n": {accepted}' in counted.stdout or f'"n":{accepted}' in counted.stdout


def test_serve_refuses_to_start_open_without_a_key(tmp_path: Path) -> None:
    env = {**os.environ, "SHOPLAKE_HOME": str(tmp_path / "home")}
    env.pop("SHOPLAKE_GATEWAY__API_KEYS", None)
    done = subprocess.run([*SHOPLAKE, "serve"], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "API key" in done.stderr and "--no-auth" in done.stderr


def test_demo_without_its_simulator_takes_events_from_other_senders(tmp_path: Path) -> None:
    """`demo --rate 0`: the gateway, pipeline and dashboard only; a separate sender's
    events are counted as accepted and reach gold while the demo runs."""
    env = {**os.environ, "SHOPLAKE_HOME": str(tmp_path / "home")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    demo = subprocess.Popen(
        [*SHOPLAKE, "demo", "--rate", "0", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_healthy(url, demo)  # type: ignore[arg-type]
        subprocess.run(
            [*SHOPLAKE, "generate", "-n", "2000", "--to", url, "--start",
             (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S")],
            env=env, capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url + "/api/gmv", timeout=5) as r:
                if any(row["paid_orders"] for row in json.loads(r.read())["rows"]):
                    break
            time.sleep(0.5)
        else:
            pytest.fail("no paid order reached gold while the demo ran")
        time.sleep(2.5)  # one more status line (every 2 s)
    finally:
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=90)
    assert demo.returncode == 0, err
    assert "gateway accepted 2000 events this run" in err
    # The status line's totals: every event in bronze, and the paid orders gold counts
    last = out.strip().splitlines()[-1]
    assert "accepted 2000  bronze 2000  " in last, last
    paid = int(re.search(r"paid orders (\d+)", last).group(1))  # type: ignore[union-attr]
    # the default seed's 2000 events hold 20 fully paid orders: all of them in gold once
    # the pipeline has caught up, and the last status line shows part or all of them
    subprocess.run([*SHOPLAKE, "run", "--until-idle"], env=env, check=True, capture_output=True)
    total = subprocess.run(
        [*SHOPLAKE, "query", "--json", "SELECT sum(paid_orders) AS n FROM gold.fct_sales_minute"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(total) == {"n": 20}
    assert 0 < paid <= 20, last
