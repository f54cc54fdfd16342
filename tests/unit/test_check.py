"""`shoplake check`: every line passes on a healthy home, and each failure is caught."""

from __future__ import annotations

import json
from pathlib import Path

from deltalake import DeltaTable

from tests.unit.test_cli import shoplake


def test_a_healthy_home_passes_every_check_and_each_fault_fails_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shoplake(home, "generate", "-n", "3000", "--bad-ratio", "0.05", "--seed", "9")
    shoplake(home, "run", "--until-idle")
    ok = shoplake(home, "check")
    assert ok.stdout.strip().endswith("7/7 checks passed")
    assert "PASS  gold reconciles with silver    GMV" in ok.stdout  # compared, not skipped

    strict = shoplake(home, "check", "--max-quarantine-rate", "0", check=False)
    assert strict.returncode == 1
    assert "FAIL  quarantine rate" in strict.stdout

    stale = shoplake(home, "check", "--max-age", "0", check=False)
    assert stale.returncode == 1 and "FAIL  gold is fresh" in stale.stdout

    # gold loses a minute of sales: it no longer adds up to silver's paid orders
    deleted = DeltaTable(str(home / "lake" / "gold" / "fct_sales_minute")).delete(
        "paid_orders >= 1"
    )
    assert deleted["num_deleted_rows"] > 0
    broken = shoplake(home, "check", check=False)
    assert broken.returncode == 1
    assert "FAIL  gold reconciles with silver" in broken.stdout and "MISMATCH" in broken.stdout


def test_a_home_without_data_fails_with_reasons(tmp_path: Path) -> None:
    empty = shoplake(tmp_path / "nothing", "check", "--json", check=False)
    assert empty.returncode == 1
    results = {r["check"]: r for r in map(json.loads, empty.stdout.splitlines())}
    assert results["transport reachable"]["ok"] is False
    assert "nothing has been generated" in results["transport reachable"]["figure"]
    assert results["every table exists and reads"]["ok"] is False
