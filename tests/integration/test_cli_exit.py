"""Every command exits 0 after success, every time: native thread pools (Arrow, delta-rs,
DuckDB) must be idle when the interpreter shuts down (delta-io/delta-rs#2184)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.conftest import SHOPLAKE

pytestmark = pytest.mark.integration


def _run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOPLAKE, *args],
        env={**os.environ, "SHOPLAKE_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose bronze and silver tables hold a few hundred files each."""
    home = tmp_path_factory.mktemp("many-files") / "home"
    for args, env in (
        (("generate", "--num-events", "40000", "--seed", "3", "--to", "embedded"), {}),
        # small batches: one file per batch and partition
        (("run", "--until-idle"), {"SHOPLAKE_PIPELINE__BATCH_MAX_RECORDS": "1000"}),
    ):
        proc = _run(home, *args, **env)
        assert proc.returncode == 0, proc.stderr
    assert len(list((home / "lake" / "bronze").rglob("*.parquet"))) >= 100
    return home


@pytest.mark.parametrize(
    "args",
    [
        ("query", "--json", "SELECT * FROM bronze.raw_events LIMIT 1"),
        ("query", "SELECT * FROM silver.page_views LIMIT 3"),
        ("query", "--json", "SELECT event_id FROM silver.page_views LIMIT 1"),
    ],
)
def test_an_early_stopped_scan_exits_cleanly_every_time(
    many_files: Path, args: tuple[str, ...]
) -> None:
    for attempt in range(6):
        try:
            proc = _run(many_files, *args, COLUMNS="1000")
        except subprocess.TimeoutExpired:
            pytest.fail(f"attempt {attempt + 1}: `shoplake {' '.join(args)}` hung at exit")
        assert proc.returncode == 0, (
            f"attempt {attempt + 1}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
        )
        assert "terminate called" not in proc.stderr
    if "--json" in args:
        (row,) = (orjson.loads(line) for line in proc.stdout.splitlines())
        assert row  # one whole row printed before the exit
    else:
        assert "event_id" in proc.stdout and proc.stdout.count("\n") >= 3 + 4  # header, 3 rows
