"""A truncated or corrupt embedded log, or a Delta commit truncated or overwritten with
garbage, makes the CLI exit 1 with ONE line that names the file and says what to do: no
traceback, no endless retrying. Following the advice for a table's newest commit (move it
aside) brings the table back, equal to what it was."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shoplake.contract.tables import DAILY_SALES_SUMMARY, ORDERS, RAW_EVENTS, TableSpec
from shoplake.settings import Settings
from tests.conftest import SHOPLAKE
from tests.integration.equivalence import table_rows

pytestmark = [pytest.mark.integration]


def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHOPLAKE_HOME": str(home), "RUST_BACKTRACE": "1"}
    return subprocess.run(
        [*SHOPLAKE, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    else:  # "garbage inside": the first bytes intact, the middle overwritten
        middle = len(data) // 2
        path.write_bytes(data[:middle] + os.urandom(65536) + data[middle + 65536 :])


@pytest.mark.parametrize("how", ["truncated", "garbage", "garbage inside"])
def test_damaged_log_is_one_clear_error(tmp_path: Path, how: str) -> None:
    home = tmp_path / "home"
    assert cli(home, "generate", "-n", "20000", "--seed", "5").returncode == 0
    log = Settings(home=home).log_path
    assert log.stat().st_size > 4 * 65536
    damage(log, how)
    commands = [["run", "--until-idle"]]
    if how != "garbage inside":  # (an append need not touch a damaged page in the middle)
        commands.append(["generate", "-n", "10"])
    for args in commands:
        line = one_error_line(cli(home, *args))
        assert str(log) in line
        assert "is damaged" in line and "restore it from a backup" in line, line


def commits(home: Path, spec: TableSpec) -> list[Path]:
    return sorted((home / "lake" / spec.layer / spec.name / "_delta_log").glob("*.json"))


@pytest.fixture(scope="module")
def processed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose tables hold a run, with more events waiting in its log (each test
    damages a copy)."""
    home = tmp_path_factory.mktemp("damaged") / "home"
    assert cli(home, "generate", "-n", "3000", "--seed", "8").returncode == 0
    assert cli(home, "run", "--until-idle").returncode == 0
    assert cli(home, "generate", "-n", "500", "--seed", "9").returncode == 0
    return home


@pytest.fixture(scope="module")
def clean_home(processed_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean run over processed_home's log (which no test damages)."""
    clean = tmp_path_factory.mktemp("clean") / "home"
    (clean / "transport").mkdir(parents=True)
    log = Settings(home=processed_home).log_path
    (clean / "transport" / "log.sqlite").write_bytes(log.read_bytes())
    assert cli(clean, "run", "--until-idle").returncode == 0
    return clean


@pytest.mark.parametrize("spec", [RAW_EVENTS, ORDERS, DAILY_SALES_SUMMARY], ids=lambda s: s.name)
@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_delta_commit_is_one_clear_error(
    tmp_path: Path, processed_home: Path, clean_home: Path, spec: TableSpec, how: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(processed_home, home)
    settings = Settings(home=home)
    newest = commits(home, spec)[-1]
    intact = newest.read_bytes()
    damage(newest, how)

    for args in (["run", "--until-idle"], ["query", f"SELECT count(*) FROM {spec.qualified}"]):
        line = one_error_line(cli(home, *args))
        assert f"table {spec.qualified} is damaged: its commit {newest} is truncated" in line
        assert "move it out of _delta_log" in line, line

    # An older commit cannot be skipped: the advice is the backup.
    newest.write_bytes(intact)
    oldest = commits(home, spec)[0]
    oldest_intact = oldest.read_bytes()
    damage(oldest, how)
    line = one_error_line(cli(home, "run", "--until-idle"))
    assert f"its commit {oldest} is truncated" in line and "restore it from a backup" in line
    oldest.write_bytes(oldest_intact)

    # The advice for the newest commit works: the table goes back one version and the
    # next run redoes that step; then it holds what a clean run over the same log makes.
    damage(newest, how)
    newest.rename(tmp_path / newest.name)
    run = cli(home, "run", "--until-idle")
    assert run.returncode == 0, run.stderr
    cols = list(spec.schema.names)
    volatile = {"ingest_ts", "ingest_date", "processed_ts", "updated_ts", "freshness_s"}
    cols = [c for c in cols if c not in volatile]
    assert table_rows(settings, spec, cols) == table_rows(Settings(home=clean_home), spec, cols)
