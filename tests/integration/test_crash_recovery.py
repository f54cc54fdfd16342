"""SIGKILL the pipeline at random moments, many times, while events keep arriving.

After a final uninterrupted run, bronze must hold every appended record exactly once,
and silver and gold must equal what a clean run over the same log produces.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from shoplake.contract.tables import QUARANTINE, RAW_EVENTS
from shoplake.pipeline.reconcile import current_gold, recomputed_gold
from shoplake.pipeline.silver import SILVER_FROM_BRONZE
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport import open_transport
from tests.conftest import SHOPLAKE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def env_for(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SHOPLAKE_HOME": str(home),
        # small batches: many commits, so kills land before, during and after them
        "SHOPLAKE_PIPELINE__BATCH_MAX_RECORDS": "2500",
        "SHOPLAKE_PIPELINE__BATCH_MAX_SECONDS": "0.2",
    }


def start(home: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*SHOPLAKE, *args], env=env_for(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def run_to_idle(home: Path) -> None:
    proc = subprocess.run(
        [*SHOPLAKE, "run", "--until-idle"],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr


def table_rows(settings: Settings, spec: Any, columns: list[str]) -> list[tuple[Any, ...]]:
    table = open_store(settings).open(spec).dataset().to_table(columns=columns)
    return sorted(zip(*(table[c].to_pylist() for c in columns), strict=True))


def test_sigkill_many_times_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    home = tmp_path / "home"
    producer = start(
        home, "generate", "-n", "60000", "--rate", "3000", "--bad-ratio", "0.05", "--seed", "3"
    )
    kills = 0
    jobs = ["ingestion", "processing", "both"]
    deadline = time.monotonic() + 240
    while (producer.poll() is None or kills < 24) and time.monotonic() < deadline:
        job = jobs[kills % len(jobs)]
        proc = start(home, "run", "--job", job)
        time.sleep(rng.uniform(0.8, 3.0))
        if proc.poll() is not None:  # it must not have died by itself
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert producer.wait(timeout=120) == 0
    assert kills >= 24
    run_to_idle(home)

    settings = Settings(home=home)
    log = open_transport(settings)
    ends = log.end_offsets()
    appended = log.read(dict.fromkeys(ends, 0), 10**9).records
    log.close()
    assert appended.num_rows == sum(ends.values()) == 60000

    # bronze: every appended record exactly once, byte for byte
    bronze = table_rows(settings, RAW_EVENTS, ["topic", "partition", "offset", "raw_value"])
    assert len(bronze) == appended.num_rows
    assert len({(t, p, o) for t, p, o, _ in bronze}) == len(bronze)
    expected = sorted(
        zip(
            appended["topic"].to_pylist(),
            appended["partition"].to_pylist(),
            appended["offset"].to_pylist(),
            [v.decode("utf-8", "backslashreplace") for v in appended["value"].to_pylist()],
            strict=True,
        )
    )
    assert bronze == expected

    # silver and gold equal a clean, uninterrupted run over the same log
    clean_home = tmp_path / "clean"
    (clean_home / "transport").mkdir(parents=True)
    shutil.copy(settings.log_path, clean_home / "transport" / "log.sqlite")
    run_to_idle(clean_home)
    clean = Settings(home=clean_home)
    for spec in (spec for spec, _ in SILVER_FROM_BRONZE if spec is not QUARANTINE):
        cols = spec.schema.names
        assert table_rows(settings, spec, cols) == table_rows(clean, spec, cols), spec.qualified
    q_cols = ["topic", "partition", "offset", "reason", "detail"]
    assert table_rows(settings, QUARANTINE, q_cols) == table_rows(clean, QUARANTINE, q_cols)
    store = open_store(settings)
    assert current_gold(store) == current_gold(open_store(clean))
    assert current_gold(store) == recomputed_gold(store, settings.reporting)
