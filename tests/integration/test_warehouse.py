"""`shoplake warehouse` into a real PostgreSQL (Debian's, started by the fixtures): the
star schema and gold equal the lakehouse to the cent, incrementally, exactly once while
the worker is SIGKILLed; seed 003's POSTGRES_* variables and .env; every SQL query of the
provisioned Grafana dashboards runs against the real tables."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shoplake.contract.tables import ALL_TABLES, ORDER_ITEMS, ORDERS, PAYMENTS
from shoplake.query import Lakehouse
from shoplake.settings import Settings
from tests.conftest import SHOPLAKE
from tests.integration.postgres_server import PostgresServer

pytestmark = pytest.mark.integration

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
FACTS = {ORDERS: "silver.fact_orders", ORDER_ITEMS: "silver.fact_order_items",
         PAYMENTS: "silver.fact_payments"}  # fmt: skip


def shoplake(home: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    done = subprocess.run(
        [*SHOPLAKE, *args], env={**os.environ, "SHOPLAKE_HOME": str(home), **(env or {})},
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def pg_rows(url: str, sql: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        return list(conn.execute(sql))  # type: ignore[arg-type]


def normal(value: Any) -> Any:
    """One spelling per value: PostgreSQL and Arrow name the UTC zone differently."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value.normalize() if isinstance(value, Decimal) else value


def rowset(rows: list[dict[str, Any]], columns: list[str]) -> list[tuple[Any, ...]]:
    return sorted((tuple(normal(r[c]) for c in columns) for r in rows), key=repr)


def assert_warehouse_equals_lakehouse(home: Path, url: str) -> None:
    lake = Lakehouse(Settings(home=home))
    present = {s.qualified for s in lake.existing()}
    for spec in ALL_TABLES:  # every gold table, column for column, to the cent
        if spec.layer == "gold" and spec.qualified in present:
            cols = list(spec.schema.names)
            want = lake.query(f"SELECT * FROM {spec.qualified}").to_pylist()
            got = pg_rows(url, f"SELECT * FROM {spec.qualified}")
            assert rowset(got, cols) == rowset(want, cols), spec.qualified
    for spec, fact in FACTS.items():  # facts: each silver row once, with its date_key
        cols = list(spec.schema.names)
        want = lake.query(f"SELECT * FROM {spec.qualified}").to_pylist()
        got = pg_rows(url, f"SELECT * FROM {fact}")
        assert rowset(got, cols) == rowset(want, cols), fact
        assert all(r["date_key"] == int(r["event_date"].strftime("%Y%m%d")) for r in got)
    for spec, dim in (("silver.dim_customers", "user_id"), ("silver.dim_products", "product_id")):
        want = lake.query(f"SELECT * FROM {spec}").to_pylist()
        got = pg_rows(url, f"SELECT * FROM {spec}")
        cols = list(want[0])
        assert rowset(got, cols) == rowset(want, cols), spec
        assert len({r[dim] for r in got}) == len(got)
    # every fact whose dimension row exists has its surrogate key (a product never in a
    # product_update has no dim_products row)
    unset = pg_rows(
        url,
        "SELECT (SELECT count(*) FROM silver.fact_orders f JOIN silver.dim_customers d "
        "USING (user_id) WHERE f.customer_key IS NULL) AS o, "
        "(SELECT count(*) FROM silver.fact_order_items f JOIN silver.dim_products d "
        "USING (product_id) WHERE f.product_key IS NULL) AS i, "
        "(SELECT count(*) FROM silver.fact_order_items f JOIN silver.dim_products d "
        "USING (product_key) WHERE d.product_id <> f.product_id) AS wrong",
    )[0]
    assert unset == {"o": 0, "i": 0, "wrong": 0}
    # seed 003's marts: the same rows as shoplake query gives
    for mart in ("gold.sales_performance", "gold.select_sales"):
        want = lake.query(f"SELECT * FROM {mart}").to_pylist()
        got = pg_rows(url, f"SELECT * FROM {mart}")
        cols = [c for c in want[0] if c in got[0]]
        assert len(cols) >= 8 and rowset(got, cols) == rowset(want, cols), mart


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("warehouse") / "home"
    shoplake(home, "generate", "-n", "8000", "--seed", "11", "--bad-ratio", "0.03",
             "--to", "embedded")  # fmt: skip
    shoplake(home, "run", "--until-idle")
    return home


@pytest.fixture
def database(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"\W", "_", request.node.name)[:50].lower()
    return postgres.new_database(name)


def test_the_warehouse_equals_the_lakehouse_then_catches_up_incrementally(
    shop: Path, database: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    subprocess.run(["cp", "-r", str(shop), str(home)], check=True)
    first = shoplake(home, "warehouse", "--to", database, "--until-idle")
    assert "silver.fact_orders" in first.stderr and "rows written" in first.stderr
    assert database.split("@")[0].split(":")[-1] not in first.stderr  # no password shown
    assert_warehouse_equals_lakehouse(home, database)
    again = shoplake(home, "warehouse", "--to", database, "--until-idle")
    assert "0 rows written (nothing new)" in again.stderr
    # more events: the next round brings only what is new
    orders_before = pg_rows(database, "SELECT count(*) AS n FROM silver.fact_orders")[0]["n"]
    shoplake(home, "generate", "-n", "3000", "--seed", "12", "--to", "embedded")
    shoplake(home, "run", "--until-idle")
    more = shoplake(home, "warehouse", "--to", database, "--until-idle")
    added = int(re.search(r"silver\.fact_orders (\d+)", more.stderr).group(1))  # type: ignore[union-attr]
    total = pg_rows(database, "SELECT count(*) AS n FROM silver.fact_orders")[0]["n"]
    assert added > 0 and total == orders_before + added
    assert_warehouse_equals_lakehouse(home, database)


def test_seed_003_postgres_variables_and_a_dotenv_file(
    shop: Path, database: str, tmp_path: Path
) -> None:
    parts = urlsplit(database)
    seed_env = {
        "POSTGRES_HOST": str(parts.hostname), "POSTGRES_PORT": str(parts.port),
        "POSTGRES_DB": parts.path.lstrip("/"), "POSTGRES_USER": str(parts.username),
        "POSTGRES_PASSWORD": str(parts.password), "POSTGRES_SSLMODE": "disable",
    }  # fmt: skip
    home = tmp_path / "home"
    subprocess.run(["cp", "-r", str(shop), str(home)], check=True)
    # from a .env file in the working directory, as seed 003's compose file reads it
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / ".env").write_text("".join(f"{k}={v}\n" for k, v in seed_env.items()))
    done = shoplake(home, "warehouse", "--until-idle", cwd=workdir)
    assert f"{parts.hostname}:{parts.port}" in done.stderr
    assert str(parts.password) not in done.stderr
    assert pg_rows(database, "SELECT count(*) AS n FROM silver.fact_orders")[0]["n"] > 0
    # the environment wins over .env: a wrong password there fails clearly
    wrong = shoplake(home, "warehouse", "--until-idle", cwd=workdir,
                     env={"POSTGRES_PASSWORD": "nope"}, check=False)  # fmt: skip
    assert wrong.returncode != 0
    assert "cannot connect to the warehouse" in wrong.stderr and "password" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_the_worker_killed_at_random_points_leaves_everything_exactly_once(
    tmp_path: Path, database: str
) -> None:
    rng = random.Random(2026)
    home = tmp_path / "home"
    env = {"SHOPLAKE_PIPELINE__BATCH_MAX_RECORDS": "1500", "SHOPLAKE_WAREHOUSE__INTERVAL_S": "0.2"}
    full_env = {**os.environ, "SHOPLAKE_HOME": str(home), **env}
    producer = subprocess.Popen(
        [*SHOPLAKE, "generate", "-n", "30000", "--rate", "3000", "--bad-ratio", "0.03",
         "--seed", "5", "--to", "embedded"], env=full_env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pipeline = subprocess.Popen([*SHOPLAKE, "run"], env=full_env, stderr=subprocess.DEVNULL)
    kills = 0
    try:
        time.sleep(3)  # the first tables exist
        while producer.poll() is None or kills < 6:
            worker = subprocess.Popen(
                [*SHOPLAKE, "warehouse", "--to", database], env=full_env, stderr=subprocess.PIPE
            )
            time.sleep(rng.uniform(0.7, 3.0))
            assert worker.poll() is None, worker.stderr.read().decode()  # type: ignore[union-attr]
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
    finally:
        pipeline.send_signal(signal.SIGINT)
        assert pipeline.wait(120) == 0
        producer.wait(60)
    assert kills >= 6
    shoplake(home, "run", "--until-idle", env=env)
    shoplake(home, "warehouse", "--to", database, "--until-idle", env=env)
    assert_warehouse_equals_lakehouse(home, database)


def test_the_continuous_worker_outlasts_a_postgres_restart(
    shop: Path, postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    subprocess.run(["cp", "-r", str(shop), str(home)], check=True)
    env = {**os.environ, "SHOPLAKE_HOME": str(home), "SHOPLAKE_WAREHOUSE__INTERVAL_S": "0.2"}
    worker = subprocess.Popen(
        [*SHOPLAKE, "warehouse", "--to", database], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        count = "SELECT count(*) AS n FROM silver.fact_orders"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the first round landed
            with contextlib.suppress(Exception):
                if pg_rows(database, count)[0]["n"]:
                    break
            time.sleep(0.2)
        postgres.restart()  # every connection cut
        shoplake(home, "generate", "-n", "2000", "--seed", "31", "--to", "embedded")
        shoplake(home, "run", "--until-idle")
        want = Lakehouse(Settings(home=home)).query("SELECT count(*) AS n FROM silver.orders")
        deadline = time.monotonic() + 60
        while pg_rows(database, count)[0]["n"] != want.to_pylist()[0]["n"]:
            assert worker.poll() is None, worker.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the worker did not catch up after the restart"
            time.sleep(0.3)
        # the worker copies table by table: gold may land a moment after silver.fact_orders
        while True:
            try:
                assert_warehouse_equals_lakehouse(home, database)
                break
            except AssertionError:
                assert worker.poll() is None, worker.stderr.read()  # type: ignore[union-attr]
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGINT)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "retrying in" in err
    assert_warehouse_equals_lakehouse(home, database)


def grafana_queries() -> Iterator[tuple[str, str]]:
    for board in sorted((GRAFANA / "dashboards").glob("*.json")):
        dashboard = json.loads(board.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    yield f"{board.stem}: {panel['title']}", target["rawSql"]


def test_every_grafana_warehouse_query_runs_on_the_real_tables(shop: Path, database: str) -> None:
    shoplake(shop, "warehouse", "--to", database, "--until-idle")
    queries = list(grafana_queries())
    assert len(queries) >= 10
    provisioned = (GRAFANA / "provisioning" / "datasources" / "postgres.yml").read_text()
    assert "uid: warehouse" in provisioned and "POSTGRES_PASSWORD" in provisioned
    for title, sql in queries:
        # Grafana's macro, over all of time
        sql = re.sub(r"\$__timeFilter\(([^()]*(?:\([^()]*\))?[^()]*)\)",
                     r"\1 BETWEEN '2000-01-01' AND '2100-01-01'", sql)  # fmt: skip
        assert "$" not in sql, title
        assert pg_rows(database, sql), f"{title} returned no rows"
