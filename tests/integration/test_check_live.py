"""`shoplake check` against a pipeline that is committing: no false alarm."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SHOPLAKE

pytestmark = pytest.mark.integration

RECONCILES = "gold reconciles with silver"


def test_check_never_sees_a_false_mismatch_while_the_pipeline_commits(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SHOPLAKE_HOME": str(tmp_path / "home"),
        # the derived tables too, so every kind of commit happens during the checks
        "SHOPLAKE_PIPELINE__GOLD_REFRESH_S": "1",
    }
    sender = subprocess.Popen(
        [*SHOPLAKE, "generate", "--continuous", "--rate", "1500", "--bad-ratio", "0.05",
         "--seed", "5", "--to", "embedded"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    pipeline = subprocess.Popen(
        [*SHOPLAKE, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    figures: list[str] = []
    try:
        deadline = time.monotonic() + 30  # 8 checks at least, over every kind of commit
        while time.monotonic() < deadline or len(figures) < 8:
            assert sender.poll() is None and pipeline.poll() is None
            done = subprocess.run(
                [*SHOPLAKE, "check", "--json"], env=env, capture_output=True, text=True, timeout=120
            )
            results = {r["check"]: r for r in map(json.loads, done.stdout.splitlines())}
            if RECONCILES not in results:  # the tables are not all there yet
                assert time.monotonic() < deadline, done.stdout + done.stderr
                time.sleep(0.5)
                continue
            line = results[RECONCILES]
            assert line["ok"], f"false alarm during a live run: {line['figure']}"
            figures.append(line["figure"])
    finally:
        for proc in (sender, pipeline):
            proc.send_signal(signal.SIGINT)
        for proc in (sender, pipeline):
            # A sender blocked on the log's write lock sees Ctrl-C only when SQLite's
            # 60 s busy timeout returns: wait beyond it.
            proc.wait(150)

    def bronze(figure: str) -> int:
        return int(re.search(r"bronze ([\d,]+)", figure).group(1).replace(",", ""))  # type: ignore[union-attr]

    # the checks ran while records kept arriving, and compared money most of the time
    assert bronze(figures[-1]) > bronze(figures[0])
    assert sum(f.startswith("GMV ") for f in figures) >= len(figures) // 2, figures
