"""The gold refresh lane of a continuous run (pipeline/refresher.py) as a process of its
own (``GOLD_REFRESH_PROCESS``): it dies with the run, and the run ends with one clear
error when the lane fails or dies — gold is never left silently stale. A terminal error
ends the run as a thread too."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoplake.contract.tables import DAILY_SALES_SUMMARY
from tests.conftest import SHOPLAKE

pytestmark = [pytest.mark.integration]


def _env(home: Path, process: bool = True) -> dict[str, str]:
    return {
        **os.environ,
        "SHOPLAKE_HOME": str(home),
        "SHOPLAKE_PIPELINE__GOLD_REFRESH_S": "0.2",
        "SHOPLAKE_PIPELINE__GOLD_REFRESH_PROCESS": str(process).lower(),
    }


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    made = subprocess.run(
        [*SHOPLAKE, "generate", "-n", "3000", "--seed", "8"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return home


@pytest.fixture()
def start_run() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts ``shoplake run`` on a home; whatever the test's outcome, kills it after."""
    started: list[subprocess.Popen[str]] = []

    def start(home: Path, process: bool = True) -> subprocess.Popen[str]:
        run = subprocess.Popen(
            [*SHOPLAKE, "run"],
            env=_env(home, process),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(run)
        return run

    yield start
    for run in started:
        if run.poll() is None:
            run.kill()
            run.wait()


def _lane_of(run: subprocess.Popen[str], home: Path) -> int:
    """The PID of the run's refresh lane process, once it has stepped gold."""
    _stepped(run, home)
    for child in _children(run.pid):
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
            return child
    raise AssertionError("the run has no refresh lane process")


def _stepped(run: subprocess.Popen[str], home: Path) -> None:
    """Waits until the refresh lane has stepped a daily table (it has a second version)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert run.poll() is None, run.stderr.read() if run.stderr else run.returncode
        if _versions(home) >= 2:
            return
        time.sleep(0.1)
    raise AssertionError("the refresh lane stepped no daily table within 60 s")


def _versions(home: Path) -> int:
    log = home / "lake" / "gold" / DAILY_SALES_SUMMARY.name / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_lane_dies_with_the_run(
    home: Path, start_run: Callable[..., subprocess.Popen[str]]
) -> None:
    run = start_run(home)
    lane = _lane_of(run, home)
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 5
    while _alive(lane) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(lane), "the refresh lane outlived its run"


def test_the_run_stops_with_a_clear_error_when_the_lane_dies(
    home: Path, start_run: Callable[..., subprocess.Popen[str]]
) -> None:
    run = start_run(home)
    lane = _lane_of(run, home)
    os.kill(lane, signal.SIGKILL)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 1, err
    assert "error: the gold refresh process died (exit code -9)" in err


@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
def test_a_terminal_error_in_the_lane_ends_the_run_with_its_message(
    home: Path, start_run: Callable[..., subprocess.Popen[str]], process: bool
) -> None:
    """A damaged commit the lane reads (a garbage version of a daily table, written
    while the run is live) ends the run with the table's one-line error."""
    run = start_run(home, process)
    if process:
        _lane_of(run, home)
    else:
        _stepped(run, home)
    log = home / "lake" / "gold" / DAILY_SALES_SUMMARY.name / "_delta_log"
    version = max(int(p.stem) for p in log.glob("*.json")) + 1
    while True:  # the lane may commit this version first: damage the next free one
        try:
            with (log / f"{version:020d}.json").open("xb") as f:
                f.write(b"\x00garbage{")
            break
        except FileExistsError:
            version += 1
    _, err = run.communicate(timeout=60)
    assert run.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert f"table {DAILY_SALES_SUMMARY.qualified} is damaged" in lines[0], err
