"""The README's first command as a user sees it: `shoplake demo`, then the dashboard in a
real headless Chromium (Debian's, driven by Playwright), checked against `shoplake query`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHOPLAKE
from tests.integration.kafka_broker import free_port
from tests.integration.test_serve import wait_healthy
from tests.prerequisites import chromium

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = chromium()  # skips outside CI, fails under CI
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


def start_demo(home: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "SHOPLAKE_HOME": str(home)}
    return subprocess.Popen(
        [*SHOPLAKE, "demo", "--port", str(port), "--rate", "150"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop(demo: subprocess.Popen[str]) -> str:
    demo.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        _, err = demo.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        demo.kill()  # not left printing into the rest of the run
        _, err = demo.communicate()
        pytest.fail(f"the demo ignored Ctrl-C for 90 s:\n{err}")
    assert demo.returncode == 0, err
    return err


def query_today(home: Path) -> tuple[str, int]:
    # "today" as the dashboard means it: in the reporting time zone (UTC by default), not
    # the machine's local day
    today = datetime.now(UTC).date().isoformat()
    sql = (
        "SELECT CAST(total_revenue AS VARCHAR) AS revenue, paid_orders "
        f"FROM gold.daily_sales_summary WHERE partition_date = DATE '{today}'"
    )
    out = subprocess.run(
        [*SHOPLAKE, "query", "--json", sql],
        env={**os.environ, "SHOPLAKE_HOME": str(home)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (row,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    return row["revenue"], row["paid_orders"]


def shown(page: Any) -> tuple[str, int]:
    """The revenue and paid orders on the page, after a fresh refresh."""
    page.evaluate("refresh()")
    revenue = page.inner_text("#kpi-revenue")
    orders = page.inner_text("#kpi-paid_orders")
    return re.sub(r"[^0-9.]", "", revenue), int(re.sub(r"[^0-9]", "", orders))


def test_dashboard_shows_what_the_gold_tables_hold(tmp_path: Path, browser: Any) -> None:
    home, port = tmp_path / "home", free_port()
    demo = start_demo(home, port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", demo)  # type: ignore[arg-type]
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
        page.wait_for_function(
            "() => document.getElementById('kpi-paid_orders').textContent.match(/[1-9]/)",
            timeout=90_000,
        )
        # The demo keeps selling: compare when gold did not change around the page's read.
        for _ in range(20):
            before = query_today(home)
            on_page = shown(page)
            if query_today(home) == before:
                break
        else:
            pytest.fail("gold never stood still long enough to compare")
        revenue, orders = before
        assert on_page == (f"{float(revenue):.2f}", orders)
        assert orders > 0
        # GMV per minute: a bar per minute on a value axis from 0 (after several refreshes,
        # so the category charts drawn meanwhile cannot have leaked their axes into it)
        gmv = page.evaluate(
            "() => { const g = document.getElementById('gmv');"
            " return [g._fullLayout.yaxis.type, g._fullLayout.yaxis.range, g.data[0].y]; }"
        )
        axis, (low, high), values = gmv
        assert axis == "linear" and low == 0 and high >= max(values) > 0
        # …over the whole last hour, however few minutes have sales yet
        start, end = page.evaluate("document.getElementById('gmv')._fullLayout.xaxis.range")
        span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
        assert span == timedelta(minutes=60), (start, end)
        # The data-quality figures once the report has rows (dashes before, never zeros)
        page.wait_for_function(
            "() => document.getElementById('quality-figures').textContent.match(/Records in[1-9]/)",
            timeout=60_000,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    finally:
        stop(demo)


def test_ctrl_c_loses_nothing_and_a_restart_continues(tmp_path: Path) -> None:
    home = tmp_path / "home"
    accepted = 0
    for run in range(2):
        port = free_port()
        demo = start_demo(home, port)
        wait_healthy(f"http://127.0.0.1:{port}", demo)  # type: ignore[arg-type]
        time.sleep(6 + 3 * run)
        err = stop(demo)
        accepted += int(re.search(r"gateway accepted (\d+) events this run", err).group(1))  # type: ignore[union-attr]
    subprocess.run(
        [*SHOPLAKE, "run", "--until-idle"],
        env={**os.environ, "SHOPLAKE_HOME": str(home)}, check=True, capture_output=True,
    )  # fmt: skip
    out = subprocess.run(
        [*SHOPLAKE, "query", "--json", "SELECT count(*) AS n FROM bronze.raw_events"],
        env={**os.environ, "SHOPLAKE_HOME": str(home)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert accepted > 0
    assert json.loads(out)["n"] == accepted  # every acknowledged event, once
