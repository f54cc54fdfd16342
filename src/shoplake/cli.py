"""The ``shoplake`` command: thin commands over the library, one error handler."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

import click

from shoplake.allocator import choose_allocators
from shoplake.errors import ConfigError, InputError, ShoplakeError
from shoplake.settings import Settings, load_settings
from shoplake.stopsignals import stop_on_signals

log = logging.getLogger("shoplake")


class _Group(click.Group):
    """Turns a ShoplakeError into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShoplakeError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _writable_home(settings: Settings) -> Path:
    """Create the home directory if needed; fail clearly if it cannot be used."""
    home = settings.home
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".shoplake-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"home directory {home} is not usable: {exc.strerror or exc} "
            "(set --home or SHOPLAKE_HOME to a writable directory)"
        ) from exc
    return home


def _existing_home(settings: Settings) -> Path:
    if not settings.home.is_dir():
        raise ConfigError(
            f"no shoplake data at {settings.home}: run `shoplake generate` and `shoplake run` "
            "first, or point --home / SHOPLAKE_HOME at an existing home"
        )
    return settings.home


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):  # a JSON number: exact for amounts under ~1e13
        return int(value) if value.as_tuple().exponent == 0 else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    raise TypeError(f"cannot encode {type(value).__name__}")


def _progress() -> Any:
    """A rich progress display on stderr; silent when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_json_default, indent=None))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the log and the tables live (env SHOPLAKE_HOME; default ./shoplake-data).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="shoplake")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, verbose: int) -> None:
    """shoplake — real-time analytics for online shops.

    Events flow shop → transport → bronze → silver → gold, all in this process:
    an embedded durable log (SQLite) and Delta Lake tables under --home, queried
    with DuckDB. Start with `shoplake demo`, or step by step:

    \b
      shoplake generate --num-events 10000 --to embedded
      shoplake run --job both --until-idle
      shoplake query "SELECT * FROM gold.fct_sales_minute ORDER BY minute_bucket"
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home
    ctx.obj = load_settings(**overrides)
    choose_allocators(ctx.obj.pipeline)  # before any command imports pyarrow


# -- contract ---------------------------------------------------------------------
@cli.command()
@click.argument("event_type", required=False)
def schema(event_type: str | None) -> None:
    """Print the JSON Schema of the events (or of one EVENT_TYPE)."""
    from shoplake.contract.events import EVENT_TYPES, json_schema

    doc = json_schema()
    if event_type is not None:
        if event_type not in EVENT_TYPES:
            raise InputError(f"unknown event type {event_type!r}; one of: {', '.join(EVENT_TYPES)}")
        for name, sub in doc.get("$defs", {}).items():
            prop = sub.get("properties", {}).get("event_type", {})
            allowed = [prop.get("const"), *prop.get("enum", [])]
            if event_type in allowed:
                doc = {"$defs": doc["$defs"], **sub, "title": name}
                break
    _echo_json(doc)


# -- generate -----------------------------------------------------------------------
@cli.command()
@click.option(
    "--num-events",
    "-n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="How many events to send (ignored with --continuous).",
)
@click.option(
    "--continuous", is_flag=True, help="Keep sending until stopped (Ctrl-C); real-time timestamps."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Events per second (default: as fast as possible; 50 with --continuous).",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between events (alternative to --rate).",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed, same events.")
@click.option(
    "--to",
    "target",
    default="embedded",
    show_default=True,
    help="'embedded' (the local log), 'kafka' (SHOPLAKE_TRANSPORT__KAFKA_BOOTSTRAP, or "
    "kafka://HOST:PORT), http://HOST:PORT (a gateway; key from --api-key or "
    "SHOPLAKE_GATEWAY__API_KEYS) or a FILE path for NDJSON ('-' for stdout).",
)
@click.option("--api-key", default=None, help="Bearer key for an http:// target.")
@click.option(
    "--bad-ratio",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of events turned into duplicates, malformed JSON, invalid fields or late events.",
)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="Simulated start time, UTC (default 2026-01-01T00:00:00); not with --continuous.",
)
@click.pass_context
def generate(
    ctx: click.Context,
    num_events: int,
    continuous: bool,
    rate: float | None,
    delay: float | None,
    seed: int,
    target: str,
    bad_ratio: float,
    start: datetime | None,
    api_key: str | None,
) -> None:
    """Simulate shoppers: sessions, carts, orders and payments, seeded and deterministic."""
    from shoplake.simulator import ShopSimulator
    from shoplake.simulator.sinks import FileSink, HttpSink, Sink, TransportSink, pump
    from shoplake.transport import open_transport

    settings = _settings(ctx)
    if rate is not None and delay is not None:
        raise click.BadParameter("give --rate or --delay, not both", param_hint="--rate")
    if continuous and start is not None:
        raise click.BadParameter(
            "--start sets simulated time; --continuous uses the clock", param_hint="--start"
        )
    if continuous and rate is None and delay is None:
        rate = 50.0
    sim = ShopSimulator(
        seed,
        start=start.replace(tzinfo=UTC) if start else None,
        realtime=continuous,
        bad_ratio=bad_ratio,
    )
    sink: Sink
    out = None
    if target == "embedded":
        _writable_home(settings)
        transport = open_transport(settings)
        sink = TransportSink(transport, settings.topics)
    elif target == "kafka" or target.startswith("kafka://"):
        bootstrap = target.removeprefix("kafka://") if target != "kafka" else None
        kafka = settings.transport.model_copy(
            update={"kind": "kafka"} | ({"kafka_bootstrap": bootstrap} if bootstrap else {})
        )
        settings = settings.model_copy(update={"transport": kafka})
        sink = TransportSink(open_transport(settings), settings.topics)
    elif target.startswith(("http://", "https://")):
        keys = settings.gateway.api_keys
        sink = HttpSink(target, api_key or (keys[0].get_secret_value() if keys else None))
    else:
        if target == "-":
            out = sys.stdout.buffer
        else:
            path = Path(target)
            try:
                out = path.open("wb")
            except OSError as exc:
                raise InputError(f"cannot write {path}: {exc.strerror}") from exc
        sink = FileSink(out)
    last_log = [time.monotonic()]

    def progress(sent: int, counts: Counter[str]) -> None:
        now = time.monotonic()
        if now - last_log[0] >= 5:
            last_log[0] = now
            click.echo(f"sent {sent} events  {_by_topic(counts, settings)}", err=True)

    bars = _progress()
    if not continuous and out is not sys.stdout.buffer:
        task = bars.add_task(f"generate → {target}", total=num_events)
        logged = progress

        def progress(sent: int, counts: Counter[str]) -> None:
            bars.update(task, completed=sent)
            logged(sent, counts)

    try:
        with bars:
            counts = pump(
                sim.stream(),
                sink,
                num_events=None if continuous else num_events,
                rate=rate,
                delay=delay,
                on_progress=progress,
            )
    finally:
        if out is not None and out is not sys.stdout.buffer:
            out.close()
    total = sum(counts.values())
    click.echo(f"sent {total} events to {target}  {_by_topic(counts, settings)}", err=True)
    if isinstance(sink, HttpSink):
        rejected = ", ".join(f"{r} {n}" for r, n in sink.rejected.most_common()) or "none"
        kept = ", ".join(f"{r} {n}" for r, n in sink.quarantined.most_common())
        kept = f" ({sum(sink.quarantined.values())} kept for quarantine: {kept})" if kept else ""
        click.echo(f"gateway accepted {sink.accepted}{kept}; rejected: {rejected}", err=True)


def _by_topic(per_type: Counter[str], settings: Settings) -> str:
    """Counts per event type, shown per topic (as the seeds' generator logs them)."""
    from shoplake.contract.events import topic_for

    topics: Counter[str] = Counter()
    for event_type, n in per_type.items():
        topics[topic_for(event_type, settings.topics) or settings.topics.dead_letter] += n
    return _distribution(topics)


def _distribution(counts: Counter[str]) -> str:
    total = sum(counts.values()) or 1
    return "  ".join(f"{k} {v} ({100 * v / total:.1f}%)" for k, v in counts.most_common())


# -- ingest -------------------------------------------------------------------------
@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def ingest(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Append NDJSON FILES to the transport, routed to topics by event_type.

    Every non-empty line is appended, even one that is not valid JSON (it goes to the
    dead-letter topic): bronze keeps everything, silver quarantines what is invalid."""
    from shoplake.simulator.sinks import route
    from shoplake.transport import open_transport

    settings = _settings(ctx)
    for path in files:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
    _writable_home(settings)
    transport = open_transport(settings)
    per_topic: Counter[str] = Counter()
    with _progress() as bars:
        for path in files:
            task = bars.add_task(f"ingest {path.name}", total=path.stat().st_size)
            with path.open("rb") as handle:
                batch = []
                for raw in handle:
                    line = raw.rstrip(b"\r\n")
                    if not line.strip():
                        continue
                    batch.append(route(line, settings.topics))
                    if len(batch) >= 20_000:
                        transport.append(batch)
                        per_topic.update(m.topic for m in batch)
                        batch = []
                        bars.update(task, completed=handle.tell())
                transport.append(batch)
                per_topic.update(m.topic for m in batch)
                bars.update(task, completed=handle.tell())
    transport.close()
    total = sum(per_topic.values())
    click.echo(f"appended {total} records  {_distribution(per_topic)}", err=True)


# -- run ----------------------------------------------------------------------------
@cli.command()
@click.option(
    "--job",
    type=click.Choice(["ingestion", "processing", "both", "gold"]),
    default="both",
    show_default=True,
    help="ingestion: log → bronze; processing: bronze → silver → gold; gold: the gold models only.",
)
@click.option(
    "--until-idle", is_flag=True, help="Stop once everything available has been processed."
)
@click.option(
    "--date",
    "dates",
    multiple=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="With --job gold: rebuild the daily gold tables for this day (reporting time zone) "
    "from silver, then stop. Repeatable.",
)
@click.option(
    "--engine",
    type=click.Choice(["duckdb", "spark"]),
    default=None,
    help="The compute engine of silver and gold [default: SHOPLAKE_ENGINE__KIND, else duckdb]. "
    "spark: silver and gold run as Spark jobs (SHOPLAKE_ENGINE__SPARK_MASTER, default "
    "local[*]); with Kafka as transport, bronze is a Spark Structured Streaming query too. "
    "Needs pip install 'shoplake[spark]' and Java 17+.",
)
@click.pass_context
def run(
    ctx: click.Context,
    job: str,
    until_idle: bool,
    dates: tuple[datetime, ...],
    engine: str | None,
) -> None:
    """Run the pipeline continuously (Ctrl-C stops it cleanly), or --until-idle.

    \b
    Examples:
      shoplake run --until-idle
      shoplake run --job gold --date 2026-01-05 --date 2026-01-06
      shoplake run --engine spark --job processing
    """
    from shoplake.pipeline.runner import Pipeline

    if dates and job != "gold":
        raise click.UsageError("--date rebuilds gold days: use it with --job gold")
    settings = _settings(ctx)
    if engine is not None:
        settings = settings.model_copy(
            update={"engine": settings.engine.model_copy(update={"kind": engine})}
        )
    _writable_home(settings)
    pipeline = Pipeline(settings)
    if dates:
        days = sorted({d.date() for d in dates})
        try:
            rows = pipeline.rebuild_days(days)
        finally:
            pipeline.close()
        click.echo(f"rebuilt {len(days)} day(s): {rows} gold rows", err=True)
        return
    stop = threading.Event()
    try:
        # Ctrl-C asks the loops to stop after the round they are in (see stop_on_signals)
        with _progress() as bars, stop_on_signals(stop):
            on_round = None
            if until_idle and bars.console.is_terminal:
                on_round = _pipeline_bars(bars, pipeline, job)
            stats = pipeline.run(
                job,  # type: ignore[arg-type]
                until_idle=until_idle,
                stop=stop,
                on_round=on_round,
            )
    except KeyboardInterrupt:  # a second Ctrl-C: no waiting for the round to end
        stop.set()
        click.echo("stopped", err=True)
        return
    finally:
        pipeline.close()
    click.echo(
        f"{'stopped: ' if stop.is_set() else ''}"
        f"ingested {stats.ingested} records; silver read {stats.bronze_read} bronze rows, "
        f"wrote {stats.silver_written} rows ({stats.duplicates_dropped} duplicates dropped); "
        f"{stats.gold_rows} gold rows recomputed",
        err=True,
    )


def _pipeline_bars(bars: Any, pipeline: Any, job: str) -> Any:
    """Bars for log → bronze and bronze → silver, sized by the backlog at the start."""
    ingest = silver = None
    if job in ("ingestion", "both"):
        ingest = bars.add_task("log → bronze", total=pipeline.ingest.lag())
    if job in ("processing", "both"):
        backlog = pipeline.silver_backlog() + (
            bars.tasks[ingest].total if ingest is not None else 0
        )
        silver = bars.add_task("bronze → silver", total=backlog)

    def on_round(stats: Any) -> None:
        if ingest is not None:
            bars.update(ingest, completed=stats.ingested)
        if silver is not None:
            bars.update(silver, completed=stats.bronze_read)

    return on_round


# -- reading ------------------------------------------------------------------------
# query.DIALECTS, spelled out here: importing shoplake.query costs the CLI 0.4 s to start
QUERY_DIALECTS = ("auto", "duckdb", "spark", "trino")


# ignore_unknown_options: SQL that starts with a `--` comment is SQL, not an option
@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("sql", nargs=-1, metavar="[SQL]")
@click.option(
    "-f",
    "--file",
    "sql_file",
    type=click.File("r"),
    help="Read the SQL from this file (`-` for stdin) instead of the argument.",
)
@click.option(
    "--dialect",
    type=click.Choice(QUERY_DIALECTS),
    default="auto",
    show_default=True,
    help="The SQL's dialect: Spark's and Trino's are transpiled to DuckDB's with sqlglot; "
    "auto runs DuckDB SQL and reads what DuckDB cannot parse as Spark SQL.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="At most this many rows in the table output.",
)
@click.option(
    "--as-of",
    "as_of",
    default=None,
    metavar="VERSION|TIMESTAMP",
    help="Time travel: each table at this version (see `shoplake history`), or as it was "
    "at this ISO time, e.g. 2026-11-22T10:00:00+00:00 (UTC if no offset).",
)
@click.pass_context
def query(
    ctx: click.Context,
    sql: tuple[str, ...],
    sql_file: TextIO | None,
    dialect: str,
    as_json: bool,
    limit: int,
    as_of: str | None,
) -> None:
    """Run SQL over the lakehouse; SQL is an argument, `-` (stdin) or `-f FILE`.

    Every table is `layer.table` (gold.fct_sales_minute). The seed systems' names work
    too: `delta.gold.…`, `iceberg.silver.…`, `local.bronze_events`,
    `bronze_raw.orders_raw`, `silver.orders_clean`, seed 003's `gold.sales_performance`
    and `gold.select_sales`, with the columns the seeds select under their names (see
    the README, "Coming from …"). `SHOW TABLES [IN namespace]` lists them."""
    from shoplake.query import Dialect, Lakehouse

    global _scanned_the_lake
    text = _sql_text(sql, sql_file)
    settings = _settings(ctx)
    _existing_home(settings)
    _scanned_the_lake = True
    result = Lakehouse(settings).query(
        text, as_of=_version_or_time(as_of), dialect=cast("Dialect", dialect)
    )
    rows = result.to_pylist()
    if as_json:
        for row in rows:
            _echo_json(row)
        return
    _print_table(result.column_names, rows[:limit])
    if len(rows) > limit:
        click.echo(f"… {len(rows) - limit} more rows (use --limit or --json)", err=True)


def _sql_text(args: tuple[str, ...], sql_file: TextIO | None) -> str:
    """The SQL of `shoplake query`'s argument (``-``: stdin) or file."""
    for arg in args:  # unknown options arrive as arguments (see the command's settings)
        if arg.startswith("-") and arg != "-" and not arg.startswith("-- ") and "\n" not in arg:
            raise click.UsageError(f"no such option: {arg.split('=')[0]}")
    if len(args) > 1:
        raise click.UsageError("give the SQL as one argument: quote it")
    sql = args[0] if args else None
    if sql_file is not None and sql is not None:
        raise click.UsageError("give the SQL as an argument or with -f, not both")
    if sql_file is not None:
        text = sql_file.read()
    elif sql == "-":
        text = sys.stdin.read()
    elif sql is None:
        raise click.UsageError("no SQL: give it as an argument, `-` (stdin) or -f FILE")
    else:
        text = sql
    if not text.strip():
        raise click.UsageError("the SQL is empty")
    return text


def _version_or_time(value: str | None, option: str = "--as-of") -> int | datetime | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a version number nor an ISO timestamp", param_hint=option
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _print_table(columns: list[str], rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    Console(width=max(80, int(os.environ.get("COLUMNS", "160")))).print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tables(ctx: click.Context, as_json: bool) -> None:
    """List the tables with their row counts and versions."""
    from shoplake.query import Lakehouse

    settings = _settings(ctx)
    _existing_home(settings)
    infos = Lakehouse(settings).tables()
    if as_json:
        for info in infos:
            _echo_json(info.__dict__)
        return
    if not infos:
        click.echo("no tables yet: run `shoplake run`", err=True)
        return
    _print_table(
        ["table", "rows", "version", "description"],
        [
            {"table": i.name, "rows": i.rows, "version": i.version, "description": i.description}
            for i in infos
        ],
    )


@cli.command()
@click.option(
    "--min-files",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Compact a table holding at least this many files more than one per partition.",
)
@click.option(
    "--vacuum/--no-vacuum",
    default=True,
    show_default=True,
    help="Also delete the files no version younger than "
    "SHOPLAKE_PIPELINE__VACUUM_RETENTION_HOURS (default 168) needs.",
)
@click.pass_context
def maintain(ctx: click.Context, min_files: int, vacuum: bool) -> None:
    """Compact the tables' small files and vacuum old ones, now. A continuous `run` or the
    demo does this on a schedule (SHOPLAKE_PIPELINE__MAINTENANCE_EVERY_S)."""
    from shoplake.pipeline.maintenance import TableMaintenance
    from shoplake.tables import open_store

    settings = _settings(ctx)
    _existing_home(settings)
    store = open_store(settings)
    try:
        report = TableMaintenance(store, settings.pipeline).run(min_files=min_files, vacuum=vacuum)
    finally:
        store.close()
    names = sorted({*report.compacted, *report.vacuumed, *report.failed})
    _print_table(
        ["table", "files compacted", "files vacuumed", "problem"],
        [
            {
                "table": n,
                "files compacted": report.compacted.get(n, 0),
                "files vacuumed": report.vacuumed.get(n, 0),
                "problem": report.failed.get(n, ""),
            }
            for n in names
        ],
    )
    if report.failed:
        raise ShoplakeError(f"{len(report.failed)} table(s) could not be maintained")


@cli.command()
@click.argument("table")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history(ctx: click.Context, table: str, limit: int, as_json: bool) -> None:
    """Show the commits of TABLE (e.g. bronze.raw_events), newest first."""
    from shoplake.contract.tables import TABLES_BY_NAME
    from shoplake.tables import open_store

    settings = _settings(ctx)
    _existing_home(settings)
    spec = TABLES_BY_NAME.get(table)
    if spec is None:
        raise InputError(f"unknown table {table!r}; tables: {', '.join(sorted(TABLES_BY_NAME))}")
    commits = open_store(settings).history(spec, limit)
    if as_json:
        from dataclasses import asdict

        for c in commits:
            _echo_json(asdict(c))
        return
    _print_table(
        ["version", "time", "operation", "rows added", "rows removed", "positions"],
        [
            {
                "version": c.version,
                "time": c.timestamp.astimezone(UTC).isoformat(timespec="seconds"),
                "operation": c.operation,
                "rows added": c.rows_added,
                "rows removed": c.rows_removed,
                "positions": " ".join(f"{app}={offset}" for app, offset in c.positions.items()),
            }
            for c in commits
        ],
    )


@cli.command()
@click.argument("table")
@click.option(
    "--to",
    "to",
    required=True,
    metavar="VERSION|TIMESTAMP",
    help="The version to go back to (see `shoplake history`), or an ISO time: the table as "
    "it was then (UTC if no offset).",
)
@click.pass_context
def restore(ctx: click.Context, table: str, to: str) -> None:
    """Roll TABLE back to an earlier version (seed 004's rollback), in a new commit.

    Its recorded positions go back with it, so the next `run` redoes what came after from
    the layer below: restoring silver.orders makes the pipeline re-read bronze from there.
    Derived tables are not rolled back with it: rebuild their days with `run --date`.
    Files removed by vacuum (older than SHOPLAKE_PIPELINE__VACUUM_RETENTION_HOURS) cannot
    be restored."""
    from shoplake.contract.tables import TABLES_BY_NAME
    from shoplake.tables import open_store

    settings = _settings(ctx)
    _existing_home(settings)
    spec = TABLES_BY_NAME.get(table)
    if spec is None:
        raise InputError(f"unknown table {table!r}; tables: {', '.join(sorted(TABLES_BY_NAME))}")
    when = _version_or_time(to, "--to")
    assert when is not None
    commit = open_store(settings).restore(spec, when)
    rewound = " ".join(f"{app}={offset}" for app, offset in sorted(commit.positions.items()))
    click.echo(
        f"restored {spec.qualified} to {to} as version {commit.version}"
        + (f"; positions now {rewound}" if rewound else "")
    )


@cli.command()
@click.option("--list", "as_list", is_flag=True, help="List records instead of the summary.")
@click.option("--reason", default=None, help="Only this reason code (e.g. invalid_json).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def quarantine(
    ctx: click.Context, as_list: bool, reason: str | None, limit: int, as_json: bool
) -> None:
    """Summarise silver.quarantine by reason (or --list the records, newest first)."""
    from shoplake.query import Lakehouse

    settings = _settings(ctx)
    _existing_home(settings)
    where = "" if reason is None else "WHERE reason = " + "'" + reason.replace("'", "''") + "'"
    if as_list:
        sql = (
            'SELECT quarantined_ts, reason, detail, topic, "partition", "offset", '
            f"left(raw_value, 120) AS raw_value FROM silver.quarantine {where} "
            f'ORDER BY quarantined_ts DESC, topic, "partition", "offset" LIMIT {limit}'
        )
    else:
        sql = (
            "SELECT reason, event_type, count(*) AS records, min(detail) AS example, "
            f"max(quarantined_ts) AS last_seen FROM silver.quarantine {where} "
            "GROUP BY reason, event_type ORDER BY records DESC, reason, event_type"
        )
    result = Lakehouse(settings).query(sql).to_pylist()
    if as_json:
        for row in result:
            _echo_json(row)
    elif not result:
        click.echo("nothing quarantined", err=True)
    else:
        _print_table(list(result[0]), result)


# -- demo ---------------------------------------------------------------------------
@cli.command()
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=300,
    show_default=True,
    help="Simulated events per second; 0: no simulator, the gateway takes events from "
    "other senders (e.g. shoplake generate --continuous --to http://127.0.0.1:PORT).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many seconds (default: run until Ctrl-C).",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--bad-ratio", type=click.FloatRange(0, 1), default=0.02, show_default=True)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Loopback port of the dashboard and the gateway.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    rate: float,
    duration: float | None,
    seed: int,
    bad_ratio: float,
    port: int,
) -> None:
    """Everything in one process: a simulated shop posts events to the gateway, the
    pipeline fills bronze, silver and gold, and the live dashboard at
    http://127.0.0.1:PORT/ shows them. Ctrl-C stops; the next start resumes."""
    from shoplake.demo import run_demo

    settings = _settings(ctx)
    _writable_home(settings)
    run_demo(settings, rate=rate, duration=duration, seed=seed, bad_ratio=bad_ratio, port=port)


# -- check ------------------------------------------------------------------------
@cli.command()
@click.option(
    "--max-age",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    help="Seconds since gold's last commit.",
)
@click.option(
    "--max-lag",
    type=click.IntRange(min=0),
    default=100_000,
    show_default=True,
    help="Records in the transport not yet in bronze.",
)
@click.option(
    "--max-quarantine-rate",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Quarantined records / bronze records.",
)
@click.option(
    "--min-free-gb",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Free disk space where the data lives.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check.")
@click.pass_context
def check(
    ctx: click.Context,
    max_age: float,
    max_lag: int,
    max_quarantine_rate: float,
    min_free_gb: float,
    as_json: bool,
) -> None:
    """Health checks, one line each with PASS/FAIL and its figure: transport reachable,
    every table reads, gold fresh, lag, quarantine rate, gold reconciles with silver, free
    disk. Exits 1 if any check fails."""
    from shoplake.check import Thresholds, run_checks
    from shoplake.tables import open_store

    settings = _settings(ctx)
    store = open_store(settings)
    try:
        results = run_checks(
            settings, store, Thresholds(max_age, max_lag, max_quarantine_rate, min_free_gb)
        )
    finally:
        store.close()
    for r in results:
        if as_json:
            _echo_json({"check": r.name, "ok": r.ok, "figure": r.figure})
        else:
            click.echo(f"{'PASS' if r.ok else 'FAIL'}  {r.name:<30} {r.figure}")
    passed = sum(r.ok for r in results)
    if not as_json:
        click.echo(f"{passed}/{len(results)} checks passed")
    if passed < len(results):
        ctx.exit(1)


# -- dagster ----------------------------------------------------------------------
@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
@click.pass_context
def dagster(ctx: click.Context, port: int) -> None:
    """Dagster's UI on this home: every table an asset with its lineage, the daily gold
    partitions, the checks, schedules and the bronze sensor (`pip install
    'shoplake[dagster]'`). Runs `dagster dev -m shoplake.orchestration.dagster`."""
    import shutil

    settings = _settings(ctx)
    found = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which(
        "dagster"
    )
    if found is None:
        raise ConfigError("Dagster is not installed: pip install 'shoplake[dagster]'")
    env = {**os.environ, "SHOPLAKE_HOME": str(settings.home.resolve())}
    command = [found, "dev", "-m", "shoplake.orchestration.dagster", "-p", str(port)]
    # Dagster in this process's place: a SIGTERM to it (a service manager's stop) reaches
    # `dagster dev`, which stops its webserver, daemon and code servers, instead of
    # leaving them running behind a wrapper that died
    sys.stdout.flush()
    os.execve(found, command, env)


@cli.command()
@click.option(
    "--to",
    "url",
    default=None,
    metavar="postgresql://USER:PASSWORD@HOST:PORT/DB",
    help="The PostgreSQL database (default: SHOPLAKE_WAREHOUSE__URL, else seed 003's "
    "POSTGRES_HOST, _PORT, _DB, _USER, _PASSWORD and _SSLMODE, from the environment or ./.env).",
)
@click.option(
    "--until-idle", is_flag=True, help="One catch-up: stop once PostgreSQL has everything."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between rounds of the continuous worker (default: "
    "SHOPLAKE_WAREHOUSE__INTERVAL_S, 5).",
)
@click.pass_context
def warehouse(
    ctx: click.Context, url: str | None, until_idle: bool, interval: float | None
) -> None:
    """Keep a PostgreSQL warehouse in step with the lakehouse (seed 003), exactly once.

    Schema `silver` holds a star schema — dim_date, dim_customers and dim_products with
    surrogate keys, fact_orders, fact_order_items and fact_payments with a date_key, and
    order_payments — and schema `gold` every gold table and seed 003's marts
    (sales_performance, select_sales, items_category_performance). Each round is one
    PostgreSQL transaction with the positions it reached: a kill at any point leaves
    nothing doubled or missing. Runs until Ctrl-C, or once with --until-idle."""
    from shoplake.warehouse.postgres import run_warehouse

    settings = _settings(ctx)
    _existing_home(settings)
    if interval is not None:
        settings = settings.model_copy(
            update={"warehouse": settings.warehouse.model_copy(update={"interval_s": interval})}
        )
    if url is not None:
        from pydantic import SecretStr

        settings = settings.model_copy(
            update={"warehouse": settings.warehouse.model_copy(update={"url": SecretStr(url)})}
        )
    where = settings.warehouse.display()
    stop = threading.Event()
    written: dict[str, int] = {}

    def on_round(result: Any) -> None:
        for table, rows in result.rows.items():
            written[table] = written.get(table, 0) + rows
        if result.total and not until_idle:
            click.echo(f"warehouse: {result.total} rows to {where}", err=True)

    with stop_on_signals(stop):
        total = run_warehouse(settings, until_idle=until_idle, stop=stop, on_round=on_round)
    tables = ", ".join(f"{t} {n}" for t, n in sorted(written.items())) or "nothing new"
    click.echo(f"warehouse {where}: {total} rows written ({tables})", err=True)


@cli.command("airflow-dags")
def airflow_dags() -> None:
    """Print the folder of shoplake's Airflow DAGs (bronze_streams_raw, silver_jobs, gold),
    for AIRFLOW__CORE__DAGS_FOLDER."""
    from shoplake.orchestration import airflow_dags as dags

    click.echo(Path(dags.__file__).resolve().parent)


# -- serve ------------------------------------------------------------------------
@cli.command()
@click.option("--host", default=None, help="Address to listen on [default: settings, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="[default: 8080]")
@click.option(
    "--no-auth",
    is_flag=True,
    help="Accept requests without an API key (keys: SHOPLAKE_GATEWAY__API_KEYS='[\"k\"]').",
)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, no_auth: bool) -> None:
    """The HTTP gateway: POST /v1/events (JSON object, array or NDJSON) into the
    transport, with /healthz, /readyz, /metrics and the API reference at /docs."""
    import uvicorn

    from shoplake.gateway.app import create_app, server_config
    from shoplake.tables import open_store
    from shoplake.transport import open_transport

    settings = _settings(ctx)
    cfg = settings.gateway.model_copy(
        update={
            "host": host or settings.gateway.host,
            "port": settings.gateway.port if port is None else port,
            "auth": settings.gateway.auth and not no_auth,
        }
    )
    if cfg.auth and not cfg.api_keys:
        raise ConfigError(
            "the gateway needs an API key: set SHOPLAKE_GATEWAY__API_KEYS='[\"KEY\"]' "
            "or run with --no-auth"
        )
    settings = settings.model_copy(update={"gateway": cfg})
    _writable_home(settings)
    transport = open_transport(settings)
    store = open_store(settings)
    try:
        click.echo(f"gateway on http://{cfg.host}:{cfg.port}  (API reference: /docs)", err=True)
        app = create_app(settings, transport, store=store)
        # uvicorn re-raises Ctrl-C once it has shut down (uvicorn.run swallows it too)
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(server_config(app, cfg.host, cfg.port)).run()
    finally:
        transport.close()
        store.close()


def main() -> None:
    try:
        cli(prog_name="shoplake")  # standalone: always ends in SystemExit
    except SystemExit as done:
        if _scanned_the_lake:
            _exit_before_teardown(done.code)
        raise


# Set by `query`: its scans may stop early (a LIMIT), so the process exits before the
# interpreter's teardown. Other commands keep it: objects they leave to be finalised
# then (the transport log's SQLite connection, checkpointing its WAL) must be.
_scanned_the_lake = False


def _exit_before_teardown(code: object) -> NoReturn:
    """Exit as the interpreter does (non-daemon threads joined, atexit handlers run,
    output flushed) but skip its teardown of modules and native libraries: Arrow's
    readahead after a LIMIT, delta-rs's runtime or DuckDB may still have threads busy
    then, and unloading the libraries under them now and then crashes the process after
    its work is done (SIGSEGV; delta-io/delta-rs#2184). Objects still alive are not
    finalised: only for commands that hold nothing needing it."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message")
        print(code, file=sys.stderr)
        status = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter calls
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
