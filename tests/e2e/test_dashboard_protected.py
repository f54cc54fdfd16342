"""The protected dashboard as a person opens it: `shoplake serve` with keys, Debian's
chromium giving a read key as the HTTP Basic password (what the browser's prompt sends),
the page's own Content-Security-Policy in force."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHOPLAKE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Reports every Content-Security-Policy violation of the page to the console.
REPORT_CSP = (
    "document.addEventListener('securitypolicyviolation', e => "
    "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI))"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "SHOPLAKE_HOME": str(tmp_path / "home"),
        "SHOPLAKE_GATEWAY__API_KEYS": '["write-k"]',
        "SHOPLAKE_GATEWAY__READ_KEYS": '["read-k"]',
    }
    proc = subprocess.Popen([*SHOPLAKE, "serve", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "shoplake serve exited"
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, "shoplake serve did not start"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Debian's chromium is missing (make debs installs it)")
        pytest.skip("the browser test needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_a_read_key_opens_the_dashboard_in_a_browser(gateway: str, browser: Any) -> None:
    from playwright.sync_api import expect

    # a wrong password: the browser gets the 401, not the page
    wrong = browser.new_context(http_credentials={"username": "me", "password": "nope"})
    assert wrong.new_page().goto(gateway + "/").status == 401
    wrong.close()

    context = browser.new_context(http_credentials={"username": "me", "password": "read-k"})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "CSP" in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.add_init_script(REPORT_CSP)
    answer = page.goto(gateway + "/")
    assert answer.status == 200
    # app.js fetched every /api/ panel with the same credentials, and plotly drew
    expect(page.locator("#status-text")).to_have_text(re.compile("^live"), timeout=20_000)
    assert page.locator("#funnel").count() == 1
    assert page.evaluate("typeof Plotly") == "object"  # the script from /static ran
    assert problems == []
    context.close()
