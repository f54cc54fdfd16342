"""The pipeline on Iceberg tables (SHOPLAKE_TABLES__FORMAT=iceberg), in a local folder
and on S3: the same numbers as on Delta, and the commands that read, time-travel,
restore and maintain the tables work on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shoplake.settings import Settings
from tests.integration.equivalence import assert_same_tables, run_to_idle
from tests.integration.s3_server import S3Server
from tests.integration.test_s3_lakehouse import shoplake

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def on_delta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose log holds the simulated events, run on Delta tables: what every
    Iceberg run below must equal."""
    home = tmp_path_factory.mktemp("delta") / "home"
    shoplake(home, {}, "generate", "-n", "5000", "--seed", "21", "--bad-ratio", "0.05")
    run_to_idle(home)
    return home


@pytest.mark.parametrize("where", ["local", "s3", "s3-rest-catalog"])
def test_iceberg_tables_give_what_delta_tables_give(
    where: str, on_delta: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {"SHOPLAKE_TABLES__FORMAT": "iceberg", "SHOPLAKE_PIPELINE__BATCH_MAX_RECORDS": "2000"}
    lake: dict[str, object] = {}
    tables = {"format": "iceberg"}
    if where != "local":
        server: S3Server = request.getfixturevalue("s3_server")
        env |= server.env(server.new_lake("iceberg"))
        lake = {"lakehouse_uri": env["SHOPLAKE_LAKEHOUSE_URI"], "storage": server.storage()}
    if where == "s3-rest-catalog":  # the tables in the REST catalog's warehouse
        tables = server.new_rest_catalog()
        env |= server.tables_env(tables)
    home = tmp_path / "iceberg"
    (home / "transport").mkdir(parents=True)
    shutil.copy(Settings(home=on_delta).log_path, home / "transport" / "log.sqlite")
    shoplake(home, env, "run", "--until-idle")

    def page_views(*args: str) -> int:
        sql = "SELECT count(*) AS n FROM silver.page_views"
        return int(json.loads(shoplake(home, env, "query", "--json", *args, sql).stdout)["n"])

    newest = json.loads(shoplake(home, env, "history", "silver.page_views", "--limit", "1",
                                 "--json").stdout)  # fmt: skip
    assert newest["operation"] == "APPEND" and newest["positions"]
    everything = page_views()
    assert 0 < page_views("--as-of", "1") < everything  # several commits: time travel sees one
    shoplake(home, env, "maintain")
    shoplake(home, env, "restore", "silver.page_views", "--to", "1")
    assert page_views() < everything
    shoplake(home, env, "run", "--until-idle")  # redone from bronze
    assert page_views() == everything
    assert "7/7 checks passed" in shoplake(home, env, "check").stdout

    # the same rows as Delta tables over the same log
    on_iceberg = Settings(home=home, tables=tables, **lake)
    assert_same_tables(on_iceberg, Settings(home=on_delta))
