"""A lakehouse on S3 (a real S3-compatible server): every command works on it with the
seeds' AWS_* variables, gives the numbers a local lakehouse gives, and a wrong secret is
a clear one-line error that never shows the secret."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from shoplake.settings import Settings
from tests.conftest import SHOPLAKE
from tests.integration.equivalence import assert_same_tables, run_to_idle
from tests.integration.s3_server import S3Server

pytestmark = [pytest.mark.integration]


def seed_env(server: S3Server, lake: str) -> dict[str, str]:
    """The seeds' variable names for the lakehouse and its object storage."""
    return {
        "LAKEHOUSE_URI": lake,
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
    }


def shoplake(
    home: Path, env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*SHOPLAKE, *args],
        env={**os.environ, **env, "SHOPLAKE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "terminate called" not in proc.stderr
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_every_command_works_on_an_s3_lakehouse(s3_server: S3Server, tmp_path: Path) -> None:
    home, lake = tmp_path / "home", s3_server.new_lake("cli")
    env = seed_env(s3_server, lake)
    shoplake(home, env, "generate", "-n", "4000", "--seed", "5", "--bad-ratio", "0.05")
    shoplake(home, env, "run", "--until-idle")

    count = shoplake(home, env, "query", "--json", "SELECT count(*) AS n FROM bronze.raw_events")
    assert json.loads(count.stdout) == {"n": 4000}
    assert "gold.fct_sales_minute" in shoplake(home, env, "tables").stdout
    [newest] = [
        json.loads(line)
        for line in shoplake(
            home, env, "history", "bronze.raw_events", "--limit", "1", "--json"
        ).stdout.splitlines()
    ]
    assert sum(newest["positions"].values()) > 0
    first = shoplake(home, env, "query", "--json", "--as-of", "1",
                     "SELECT count(*) AS n FROM bronze.raw_events")  # fmt: skip
    assert 0 < json.loads(first.stdout)["n"] <= 4000
    shoplake(home, env, "maintain")
    checked = shoplake(home, env, "check")
    assert "checks passed" in checked.stdout, checked.stdout

    # the tables are in the bucket, none under the home
    assert not (home / "lake").exists()
    fs = pafs.SubTreeFileSystem(lake[len("s3://") :], s3_server_fs(s3_server))
    listed = {i.path for i in fs.get_file_info(pafs.FileSelector("", recursive=False))}
    assert listed == {"bronze", "silver", "gold"}

    # the same numbers as a local lakehouse over the same log
    local_home = tmp_path / "local"
    (local_home / "transport").mkdir(parents=True)
    (local_home / "transport" / "log.sqlite").write_bytes(
        (home / "transport" / "log.sqlite").read_bytes()
    )
    run_to_idle(local_home)
    on_s3 = Settings(home=home, lakehouse_uri=lake, storage=s3_server.storage())
    assert_same_tables(on_s3, Settings(home=local_home))


def test_a_wrong_secret_is_a_clear_error_that_hides_it(s3_server: S3Server, tmp_path: Path) -> None:
    env = {**seed_env(s3_server, s3_server.new_lake("denied")),
           "AWS_SECRET_ACCESS_KEY": "not-the-secret-4711"}  # fmt: skip
    home = tmp_path / "home"
    shoplake(home, env, "generate", "-n", "50")
    for args in (("run", "--until-idle"), ("tables",), ("-v", "check")):
        proc = shoplake(home, env, *args, check=False)
        assert proc.returncode != 0, args
        output = proc.stdout + proc.stderr
        assert "SignatureDoesNotMatch" in output, output
        assert "not-the-secret-4711" not in output
        assert "Traceback" not in proc.stderr
    assert shoplake(home, env, "run", "--until-idle", check=False).stderr.count("\n") <= 3


def s3_server_fs(server: S3Server) -> pafs.FileSystem:
    from shoplake.tables.storage import arrow_filesystem

    return arrow_filesystem("s3://", server.storage())[0]


def test_a_wrong_rest_catalog_credential_is_a_clear_error_that_hides_it(
    s3_server: S3Server, tmp_path: Path
) -> None:
    catalog = s3_server.new_rest_catalog()
    env = {**s3_server.env(s3_server.new_lake("denied")),
           **s3_server.tables_env(catalog),
           "SHOPLAKE_TABLES__CATALOG_CREDENTIAL": "shoplake-test:not-the-secret-4711"}  # fmt: skip
    home = tmp_path / "home"
    shoplake(home, env, "generate", "-n", "50")
    for args in (("run", "--until-idle"), ("tables",)):
        proc = shoplake(home, env, *args, check=False)
        assert proc.returncode != 0, args
        output = proc.stdout + proc.stderr
        assert f"cannot open the Iceberg catalog at {catalog['catalog_uri']}" in output, output
        assert "not-the-secret-4711" not in output
        assert "Traceback" not in proc.stderr
