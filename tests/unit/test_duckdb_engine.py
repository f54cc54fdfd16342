"""The DuckDB engine: its error boundary (what a caller gets back from a failing query) and
the tables it holds."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable

import duckdb
import pyarrow as pa
import pytest

from shoplake.engines import open_engine
from shoplake.engines.base import HeldQuery, registered
from shoplake.engines.duckdb import DuckDB
from shoplake.errors import ConfigError, QueryError
from shoplake.settings import EngineSettings


def test_bad_sql_is_a_query_error() -> None:
    with pytest.raises(QueryError, match="no_such_table"):
        DuckDB().query("SELECT * FROM no_such_table")


def test_an_interrupted_query_stays_an_interrupt() -> None:
    # Ctrl-C during a query must not read as bad SQL: the demo's status line swallowed
    # QueryError, so an interrupt turned into one left the demo running after Ctrl-C.
    engine = DuckDB(threads=1)
    endless = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"
    timer = threading.Timer(0.5, engine.con.interrupt)
    timer.start()
    try:
        engine.query(endless)
    except KeyboardInterrupt:
        pass
    except QueryError as exc:  # no traceback: showing its frames would rerun the query
        pytest.fail(f"the interrupt came back as a query error: {exc}", pytrace=False)
    else:
        pytest.fail("the query was not interrupted", pytrace=False)
    finally:
        timer.cancel()


@pytest.mark.parametrize("call", ["table", "execute", "query"])
def test_ctrl_c_during_any_query_is_an_interrupt(call: str) -> None:
    # A SIGINT that DuckDB catches itself comes back as RuntimeError("Query interrupted");
    # `shoplake run` printed that as a traceback instead of stopping.
    engine = DuckDB(threads=1)
    endless = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"
    run: Callable[[str], object] = getattr(engine, call)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run(endless)
    finally:
        timer.cancel()
        engine.close()


def test_tables_it_holds_spill_to_its_own_directory_past_the_memory_limit() -> None:
    """Day digests are tables of the engine: past ``duckdb_memory_limit`` they go to a
    temporary directory of the engine's own (not ./.tmp), removed when it closes."""
    engine = DuckDB(memory_limit="64MB")
    spill = engine.table("SELECT current_setting('temp_directory') AS d")["d"][0].as_py()
    assert os.path.dirname(spill) == tempfile.gettempdir()
    engine.execute("CREATE TABLE held AS SELECT uuid()::VARCHAR AS s FROM range(4000000)")
    assert engine.table("SELECT count(*) AS n FROM held")["n"][0].as_py() == 4_000_000
    assert os.listdir(spill)  # ~150 MB of ids: most of them on disk
    engine.close()
    assert not os.path.exists(spill)


def test_a_query_past_the_memory_limit_names_the_setting() -> None:
    engine = DuckDB(memory_limit="16MB")
    too_big = "SELECT list(i) AS l FROM range(30000000) t(i)"  # one value: it cannot spill
    for run in (engine.table, engine.query, engine.execute):
        with pytest.raises(ConfigError, match="duckdb_memory_limit 16MB: raise SHOPLAKE_ENGINE"):
            run(too_big)
    assert engine.table("SELECT 1 AS one")["one"].to_pylist() == [1]  # still usable
    engine.close()


def test_a_held_query_is_a_view_over_the_engines_own_tables() -> None:
    engine = DuckDB()
    engine.execute("CREATE TABLE held AS SELECT range AS n FROM range(5)")
    got = engine.table_over(
        "SELECT sum(n) AS s FROM v", {"v": HeldQuery("SELECT * FROM held WHERE n > 2")}
    )
    assert got["s"].to_pylist() == [7]
    with pytest.raises(duckdb.CatalogException):  # unregistered with the rest
        engine.table("SELECT * FROM v")


def test_a_memory_limit_duckdb_does_not_take_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="duckdb_memory_limit"):
        DuckDB(memory_limit="lots")


def test_the_memory_limit_setting_reaches_every_database_of_a_run() -> None:
    settings = EngineSettings(duckdb_memory_limit="100MB")
    engine = open_engine(settings)
    lane = engine.sibling()  # the gold lane's
    for db in (engine, lane):
        limit = db.table("SELECT current_setting('memory_limit') AS m")["m"][0].as_py()
        assert limit in ("95.3 MiB", "100.0 MB"), limit
        db.close()


def test_inputs_registered_for_a_block_are_released_however_it_ends() -> None:
    engine = DuckDB()
    one = pa.table({"x": [1, 2]})
    with registered(engine, {"a": one, "b": one}):
        assert engine.table("SELECT count(*) AS n FROM a, b")["n"].to_pylist() == [4]
    with pytest.raises(duckdb.Error), registered(engine, {"a": one}):
        engine.table("SELECT nope FROM a")
    with pytest.raises(duckdb.InvalidInputException), registered(engine, {"a": one, "b": object()}):  # type: ignore[dict-item]
        pass  # "b" cannot be registered: "a" is released all the same
    for name in ("a", "b"):
        with pytest.raises(duckdb.CatalogException):
            engine.table(f"SELECT * FROM {name}")
    # a statement over registered inputs, as the day digests run theirs
    with registered(engine, {"a": one}):
        engine.execute("CREATE TABLE kept AS SELECT x * 10 AS y FROM a")
    assert engine.table("SELECT y FROM kept ORDER BY y")["y"].to_pylist() == [10, 20]
    engine.close()


def test_the_spill_directory_of_a_killed_process_is_removed_by_the_next_engine() -> None:
    dead = subprocess.Popen(["true"])  # a pid no process has now
    dead.wait()
    orphan = os.path.join(tempfile.gettempdir(), f"shoplake-duckdb-{dead.pid}-0")
    os.makedirs(os.path.join(orphan, "spilled"))
    DuckDB().close()
    assert not os.path.exists(orphan)
