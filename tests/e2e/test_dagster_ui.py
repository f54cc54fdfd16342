"""`shoplake dagster` opens Dagster's UI on the home: its asset graph shows every layer's
tables, in Debian's chromium (a screenshot is kept in test-artifacts/), and a SIGTERM to
it stops all of Dagster's processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import SHOPLAKE
from tests.e2e.test_dashboard_browser import ARTIFACTS, browser  # noqa: F401  (fixture)
from tests.integration.kafka_broker import free_port

LOCATION_STATUS = """{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def wait_for_code_location(port: int, ui: subprocess.Popen[bytes], deadline: float) -> None:
    """The webserver answers before `dagster dev` has loaded shoplake's definitions (a
    process of its own, slow on a busy machine): wait until Dagster reports them loaded."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": LOCATION_STATUS}).encode(),
        headers={"Content-Type": "application/json"},
    )
    while True:
        assert ui.poll() is None, ui.stderr.read().decode() if ui.stderr else ""
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                workspace = json.load(response)["data"]["workspaceOrError"]
            entries = workspace.get("locationEntries") or []
        except OSError:
            entries = []
        loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
        if loaded:
            location = loaded[0]["locationOrLoadError"]
            assert location["__typename"] == "RepositoryLocation", location
            return
        assert time.monotonic() < deadline, f"Dagster did not load the definitions: {entries}"
        time.sleep(1)


def test_the_asset_graph_shows_the_pipeline(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    port = free_port()
    env = {**os.environ, "SHOPLAKE_HOME": str(home), "DAGSTER_HOME": str(tmp_path)}
    # Dagster's own mark that this instance has shown its welcome prompt: without it a dialog
    # opens a second after the page and may cover the graph's buttons
    (tmp_path / ".nux").mkdir()
    (tmp_path / ".nux" / "nux.yaml").write_text("seen: 1\n")
    subprocess.run([*SHOPLAKE, "generate", "-n", "500"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    ui = subprocess.Popen(
        [*SHOPLAKE, "dagster", "--port", str(port)], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                break
            except OSError:
                assert ui.poll() is None, ui.stderr.read().decode() if ui.stderr else ""
                assert time.monotonic() < deadline, "the Dagster UI did not start"
                time.sleep(1)
        wait_for_code_location(port, ui, deadline)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        # the lineage of gold.fct_sales_minute, every table upstream of it expanded
        lineage = "assets/gold/fct_sales_minute?view=lineage&lineageScope=upstream"
        page.goto(f"http://127.0.0.1:{port}/{lineage}", wait_until="networkidle")
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            page.get_by_role("button", name="All", exact=True).click()  # graph depth: all
            for name in ("raw_events", "orders", "payments", "order_payments"):
                node = page.get_by_text(name, exact=True).first
                try:
                    node.wait_for(timeout=60_000)
                except Exception as exc:
                    shown = page.inner_text("body")[:3000]
                    message = f"{name} is not in the graph; the page shows:\n{shown}"
                    raise AssertionError(message) from exc
        finally:
            page.screenshot(path=str(ARTIFACTS / "dagster-asset-graph.png"), full_page=True)
    finally:
        ui.terminate()  # SIGTERM to `shoplake dagster` alone, as a service manager stops it
        try:
            ui.wait(timeout=60)
            left = still_running(ui.pid, timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(ui.pid, signal.SIGKILL)
    assert not left, "Dagster's processes outlived `shoplake dagster`"


def still_running(group: int, timeout: float) -> bool:
    """Whether a process of ``group`` is still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.5)
    return True
