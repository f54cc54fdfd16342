"""The DuckDB engine's error boundary: what a caller gets back from a failing query."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import pytest

from shoplake.engines.duckdb import DuckDB
from shoplake.errors import QueryError


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
