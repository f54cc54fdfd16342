"""The CLI as a user runs it: separate processes, exit codes, messages on stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHOPLAKE


def shoplake(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHOPLAKE_HOME": str(home)}
    proc = subprocess.run([*SHOPLAKE, *args], env=env, capture_output=True, text=True, timeout=300)
    # delta-rs and friends can abort at interpreter exit (delta-io/delta-rs#2184)
    assert "terminate called" not in proc.stderr
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_every_command_explains_itself(tmp_path: Path) -> None:
    top = shoplake(tmp_path, "--help").stdout
    for command in (
        "demo",
        "generate",
        "ingest",
        "run",
        "query",
        "tables",
        "history",
        "restore",
        "schema",
        "quarantine",
        "maintain",
        "check",
        "serve",
        "dagster",
    ):
        assert command in top
        assert "Usage:" in shoplake(tmp_path, command, "--help").stdout
    assert "--until-idle" in shoplake(tmp_path, "run", "--help").stdout
    assert "--bad-ratio" in shoplake(tmp_path, "generate", "--help").stdout


def test_generate_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.ndjson", tmp_path / "b.ndjson", tmp_path / "c.ndjson"
    shoplake(
        tmp_path, "generate", "-n", "2000", "--seed", "9", "--bad-ratio", "0.1", "--to", str(a)
    )
    shoplake(
        tmp_path, "generate", "-n", "2000", "--seed", "9", "--bad-ratio", "0.1", "--to", str(b)
    )
    shoplake(tmp_path, "generate", "-n", "2000", "--seed", "10", "--to", str(c))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert len(a.read_bytes().splitlines()) == 2000


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "--num-events", "0"),
        ("generate", "--rate", "-5"),
        ("generate", "--bad-ratio", "2"),
        ("generate", "--rate", "5", "--delay", "1"),
        ("serve", "--port", "99999"),
        ("run", "--job", "nope"),
        ("query",),
    ],
)
def test_bad_cli_values_are_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = shoplake(tmp_path, *args, check=False)
    assert proc.returncode == 2
    assert "Error" in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_targets_are_clear_errors(tmp_path: Path) -> None:
    proc = shoplake(tmp_path, "generate", "-n", "5", "--to", "kafka://127.0.0.1:1", check=False)
    assert proc.returncode == 1
    assert "Kafka at 127.0.0.1:1 is unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_and_unusable_homes_are_clear_errors(tmp_path: Path) -> None:
    proc = shoplake(tmp_path / "nowhere", "query", "SELECT 1", check=False)
    assert proc.returncode == 1
    assert "no shoplake data at" in proc.stderr and "Traceback" not in proc.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = shoplake(blocker / "home", "generate", "-n", "10", check=False)
    assert proc.returncode == 1
    assert "is not usable" in proc.stderr and "Traceback" not in proc.stderr


def test_pipeline_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = tmp_path / "events.ndjson"
    shoplake(home, "generate", "-n", "3000", "--bad-ratio", "0.05", "--to", str(data))
    with data.open("ab") as f:
        f.write(b"\n{this is not json\n\xff\xfe\n")  # blank lines are skipped, the rest kept
    shoplake(home, "ingest", str(data))
    shoplake(home, "run", "--until-idle")
    lines = [line for line in data.read_bytes().splitlines() if line.strip()]
    out = shoplake(home, "query", "--json", "SELECT count(*) AS n FROM bronze.raw_events").stdout
    assert json.loads(out) == {"n": len(lines)}
    tables = [json.loads(x) for x in shoplake(home, "tables", "--json").stdout.splitlines()]
    assert {t["name"] for t in tables} >= {"bronze.raw_events", "gold.fct_sales_minute"}
    sql = "SELECT sum(paid_orders) AS n FROM gold.fct_sales_minute"
    gold = json.loads(shoplake(home, "query", "--json", sql).stdout)["n"]
    silver_sql = "SELECT count(*) AS n FROM silver.order_payments WHERE fully_paid"
    # the default seed's 3000 events hold 47 orders, 30 of them fully paid
    assert gold == json.loads(shoplake(home, "query", "--json", silver_sql).stdout)["n"] == 30
    alias = "SELECT count(*) AS n FROM silver.orders_clean"  # the seeds' name
    assert json.loads(shoplake(home, "query", "--json", alias).stdout)["n"] == 47
    assert "WRITE" in shoplake(home, "history", "bronze.raw_events").stdout
    summary = [json.loads(x) for x in shoplake(home, "quarantine", "--json").stdout.splitlines()]
    quarantined = json.loads(
        shoplake(home, "query", "--json", "SELECT count(*) AS n FROM silver.quarantine").stdout
    )["n"]
    # 42 bad events of the seed + the two unreadable lines appended above
    assert sum(r["records"] for r in summary) == quarantined == 44
    assert "invalid_json" in {r["reason"] for r in summary}
    listed = shoplake(home, "quarantine", "--list", "--reason", "invalid_json", "--json").stdout
    assert listed and all(json.loads(x)["reason"] == "invalid_json" for x in listed.splitlines())
    # the table output shows the result (the SQL does not contain it)
    table = shoplake(home, "query", "SELECT sum(paid_orders) AS paid FROM gold.fct_sales_minute")
    assert "paid" in table.stdout and re.search(r"(?<![\d.])30(?![\d.])", table.stdout)


def test_query_errors_name_the_problem(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shoplake(home, "generate", "-n", "200")
    shoplake(home, "run", "--until-idle")
    proc = shoplake(home, "query", "SELECT * FROM gold.nope", check=False)
    assert proc.returncode == 1
    assert "unknown table gold.nope" in proc.stderr
    assert "gold.fct_sales_minute" in proc.stderr  # lists what exists
    proc = shoplake(home, "query", "SELEC 1", check=False)
    assert proc.returncode == 1 and "syntax error" in proc.stderr.lower()
    proc = shoplake(home, "history", "gold.nope", check=False)
    assert proc.returncode == 1 and "unknown table" in proc.stderr
    proc = shoplake(home, "ingest", str(tmp_path / "missing.ndjson"), check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr


def test_schema_exports_json_schema(tmp_path: Path) -> None:
    whole = json.loads(shoplake(tmp_path, "schema").stdout)
    assert whole["discriminator"]["propertyName"] == "event_type"
    one = json.loads(shoplake(tmp_path, "schema", "payment").stdout)
    assert "amount_cents" in one["properties"]
    assert shoplake(tmp_path, "schema", "nope", check=False).returncode == 1


def test_time_travel_with_as_of(tmp_path: Path) -> None:
    home = tmp_path / "home"
    count = "SELECT count(*) AS n FROM bronze.raw_events"
    shoplake(home, "generate", "-n", "300")
    shoplake(home, "run", "--job", "ingestion", "--until-idle")
    history = [
        json.loads(x)
        for x in shoplake(home, "history", "bronze.raw_events", "--json").stdout.splitlines()
    ]
    assert [e["version"] for e in history] == sorted((e["version"] for e in history), reverse=True)
    assert history[-1]["operation"] == "CREATE TABLE" and history[-1]["positions"] == {}
    assert sum(e["rows_added"] for e in history if e["operation"] == "WRITE") == 300
    latest: dict[str, int] = {}
    for e in reversed(history):  # oldest first: each commit records its own positions
        latest.update(e["positions"])
    assert latest and sum(latest.values()) == 300  # the next offsets after 300 events
    from datetime import UTC, datetime

    first_write = max(datetime.fromisoformat(e["timestamp"]) for e in history).timestamp()
    shoplake(home, "generate", "-n", "200", "--seed", "8")
    shoplake(home, "run", "--job", "ingestion", "--until-idle")
    assert json.loads(shoplake(home, "query", "--json", count).stdout)["n"] == 500
    assert json.loads(shoplake(home, "query", "--json", "--as-of", "1", count).stdout)["n"] == 300
    moment = datetime.fromtimestamp(first_write + 0.0005, UTC).isoformat()
    assert (
        json.loads(shoplake(home, "query", "--json", "--as-of", moment, count).stdout)["n"] == 300
    )
    proc = shoplake(home, "query", "--as-of", "99", count, check=False)
    assert proc.returncode == 1 and "as of 99" in proc.stderr
    proc = shoplake(home, "query", "--as-of", "soon", count, check=False)
    assert proc.returncode == 2 and "--as-of" in proc.stderr


def test_long_commands_show_progress_on_a_terminal(tmp_path: Path) -> None:
    import pty

    def on_terminal(*args: str) -> str:
        leader, follower = pty.openpty()
        env = {**os.environ, "SHOPLAKE_HOME": str(tmp_path / "home"), "COLUMNS": "120"}
        proc = subprocess.Popen([*SHOPLAKE, *args], env=env, stderr=follower, stdout=follower)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(120) == 0
        os.close(leader)
        return out.decode(errors="replace")

    assert "generate → embedded" in on_terminal("generate", "-n", "20000")
    shown = on_terminal("run", "--until-idle")
    assert "log → bronze" in shown and "bronze → silver" in shown and "20000/20000" in shown
    # without a terminal (a pipe, a log file) nothing but the summary line is written
    quiet = shoplake(tmp_path / "home", "generate", "-n", "10")
    assert "━" not in quiet.stderr


def test_restore_rolls_a_table_back_and_the_next_run_redoes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPLAKE_PIPELINE__BATCH_MAX_RECORDS", "400")  # many silver commits
    home = tmp_path / "home"
    shoplake(home, "generate", "-n", "3000", "--seed", "11")
    shoplake(home, "run", "--until-idle")

    def orders() -> int:
        out = shoplake(home, "query", "--json", "SELECT count(*) AS n FROM silver.orders")
        return int(json.loads(out.stdout)["n"])

    before = orders()
    restored = shoplake(home, "restore", "silver.orders", "--to", "1")
    assert re.search(r"restored silver\.orders to 1 as version \d+; positions now", restored.stdout)
    assert 0 < orders() < before
    newest = json.loads(shoplake(home, "history", "silver.orders", "--limit", "1", "--json").stdout)
    assert newest["operation"] == "RESTORE"

    shoplake(home, "run", "--until-idle")
    assert orders() == before  # re-read from bronze: nothing lost, nothing doubled
    assert "checks passed" in shoplake(home, "check").stdout

    bad = shoplake(home, "restore", "silver.orders", "--to", "yesterday", check=False)
    assert bad.returncode == 2 and "neither a version number nor an ISO timestamp" in bad.stderr
    unknown = shoplake(home, "restore", "silver.nope", "--to", "1", check=False)
    assert unknown.returncode != 0 and "unknown table 'silver.nope'" in unknown.stderr


_EXIT_PROBE = """
import atexit, sys, threading, time
from pathlib import Path
from shoplake.cli import _exit_before_teardown

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late_writer():
    time.sleep(0.3)
    (out / "thread").write_text("finished")
threading.Thread(target=late_writer).start()  # not a daemon: exit waits for it
print("the last line")  # still in the buffer when exiting
arg = sys.argv[2]
_exit_before_teardown(None if arg == "none" else int(arg) if arg.isdigit() else arg)
"""


@pytest.mark.parametrize(("code", "status"), [("none", 0), ("3", 3), ("boom", 1)])
def test_the_cli_exits_as_the_interpreter_would_without_its_teardown(
    tmp_path: Path, code: str, status: int
) -> None:
    """The CLI skips the interpreter's teardown (native pools may still run then), but
    threads still finish, atexit handlers still run and buffered output still arrives."""
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_PROBE, str(tmp_path), code],
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == status
    assert proc.stdout == "the last line\n"
    assert (tmp_path / "thread").read_text() == "finished"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert proc.stderr == ("boom\n" if code == "boom" else "")
