"""shoplake's Airflow DAGs (src/shoplake/orchestration/airflow_dags) run green with
`airflow dags test` on simulated events, leave gold as `shoplake run --until-idle` does,
and a failed check fails its task with a message naming the check and its figure."""

from __future__ import annotations

import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from shoplake.contract.tables import FCT_SALES_MINUTE
from shoplake.settings import Settings
from shoplake.tables import open_store
from tests.conftest import SHOPLAKE
from tests.integration.airflow_env import Airflow
from tests.integration.equivalence import assert_same_tables, run_to_idle

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("airflow")]


def shoplake(home: Path, *args: str) -> None:
    env = {**os.environ, "SHOPLAKE_HOME": str(home)}
    subprocess.run([*SHOPLAKE, *args], env=env, check=True, capture_output=True, timeout=300)


def test_the_dags_run_green_and_gold_equals_a_run(airflow: Airflow, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shoplake(home, "generate", "-n", "3000", "--seed", "9", "--bad-ratio", "0.04")
    shoplake(home, "run", "--job", "ingestion", "--until-idle")  # the streaming worker's part
    on_home = {"SHOPLAKE_HOME": str(home)}
    listed = airflow.run("dags", "list", "--local", env=on_home).stdout  # parsed, no errors
    assert all(dag in listed for dag in ("bronze_streams_raw", "silver_jobs", "gold"))
    for dag in ("bronze_streams_raw", "silver_jobs", "gold"):
        airflow.run("dags", "test", dag, env=on_home)

    clean = tmp_path / "clean"
    (clean / "transport").mkdir(parents=True)
    log = "transport/log.sqlite"
    (clean / log).write_bytes((home / log).read_bytes())
    run_to_idle(clean)
    assert_same_tables(Settings(home=home), Settings(home=clean))

    # a gold row changed by hand: the gold DAG's check fails, naming itself and its figure
    store = open_store(Settings(home=home))
    row = store.open(FCT_SALES_MINUTE).scan().slice(0, 1)
    gmv = row.schema.get_field_index("gmv")
    changed = row.set_column(
        gmv, row.schema.field(gmv), pa.array([Decimal("1.00")], row.schema.field(gmv).type)
    )
    store.upsert(FCT_SALES_MINUTE, changed)
    failed = airflow.run("dags", "test", "gold", env=on_home, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "check failed: gold reconciles with silver: GMV" in output
