"""Spark engine: runs the same SQL models as the DuckDB engine, on Apache Spark.

The only module that imports ``pyspark``, lazily: shoplake works without the ``spark``
extra, and asking for this engine without it is a ConfigError.

The models are written once, in DuckDB's dialect. Before Spark runs one, sqlglot
transpiles it (``read="duckdb", write="spark"``) and a few rewrites keep the two engines'
answers equal to the cent (see ``to_spark_sql``):

- ``local_date(ts)`` (a DuckDB macro) becomes ``to_date(from_utc_timestamp(ts, zone))``:
  the session time zone stays UTC, the reporting zone is spelled out in the SQL.
- ``epoch(ts)`` becomes DuckDB's arithmetic on ``unix_micros(ts)``: whole milliseconds
  / 1e3 plus the rest / 1e6, as DOUBLEs (sqlglot's ``unix_timestamp`` drops the
  fraction of a second, and ``micros / 1e6`` is one ulp off DuckDB's answer).
- ``round(x, n)`` over a DOUBLE becomes ``shoplake_round_double(x, n)``, a Python UDF
  rounding the double's exact binary value half away from zero, as DuckDB does: Spark
  rounds the double's shortest decimal text instead, so 1224.79 / 14 (87.48499…,
  printed 87.485) is 87.49 on Spark and 87.48 on DuckDB. A ROUND counts as over a
  DOUBLE when its argument casts to DOUBLE, as the models do before every floating-point
  division; divisions inside it become ``try_divide`` (see the rewrite).

``$name`` parameters are bound as typed literals in the text (see ``bind``); the
parsed and rewritten tree is cached per SQL text and time zone.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds

from shoplake.engines.base import (
    Capabilities,
    Engine,
    HeldQuery,
    IcebergCatalog,
    ParsedEvents,
    RawEventRules,
    registered,
)
from shoplake.errors import ConfigError, QueryError
from shoplake.settings import is_rest_catalog, rest_token_endpoint
from shoplake.tables.base import AllOf, IsIn, Predicate, TableScan

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from sqlglot import exp

    from shoplake.engines.base import Input, Part
    from shoplake.settings import Settings, StorageSettings

_INLINE_VALUES_MAX = 1000  # an IN list longer than this is a semi-join (see _kept)
_MISSING = "the Spark engine needs pyspark: pip install 'shoplake[spark]'"

# delta-spark release on Maven Central for each Spark minor version (artifact
# io.delta:delta-spark_<spark minor>_2.13); checked against pyspark 4.1.
DELTA_VERSIONS = {"4.0": "4.4.0", "4.1": "4.4.0", "4.2": "4.4.0"}
# spark-sql-kafka-0-10 (the bronze stream's Kafka source) for each Spark minor version: a
# release whose jars all resolve from Maven Central (a minor's patch releases interchange).
KAFKA_VERSIONS = {"4.0": "4.0.0", "4.1": "4.1.1", "4.2": "4.2.0"}
# iceberg-spark-runtime-<spark minor>_2.13 on Maven Central; checked against pyspark 4.1.
ICEBERG_VERSIONS = {"4.0": "1.10.1", "4.1": "1.12.0"}
# The SQL catalogs' JDBC drivers (Iceberg's JDBC catalog reads PyIceberg's SQL catalog).
JDBC_DRIVERS = {
    "sqlite": "org.xerial:sqlite-jdbc:3.51.1.0",
    "postgresql": "org.postgresql:postgresql:42.7.8",
}


# The UDF the ROUND rewrite calls.
ROUND_DOUBLE = "shoplake_round_double"


def round_half_away(value: float | None, places: int | None) -> float | None:
    """``value`` rounded to ``places`` decimals, half away from zero, from its exact
    binary value (what DuckDB's ``round`` gives for a DOUBLE)."""
    return _round_half_away()(value, places)


def _round_half_away() -> Callable[[float | None, int | None], float | None]:
    # A nested function: Spark's Python workers get it by value, so they need no shoplake.
    def rounded(value: float | None, places: int | None) -> float | None:
        import math
        from decimal import ROUND_HALF_UP, Context, Decimal

        if value is None or places is None or not math.isfinite(value):
            return value
        exact = Decimal(value)  # every digit of the binary value: up to 767 of them
        step = Decimal(1).scaleb(-places)
        return float(exact.quantize(step, rounding=ROUND_HALF_UP, context=Context(prec=800)))

    return rounded


def cache_dir() -> Path:
    """~/.cache/shoplake (or $XDG_CACHE_HOME/shoplake): where resolved jars are kept."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shoplake"


def delta_package(spark_version: str) -> str:
    """The Maven coordinates of the Delta Lake jar built for ``spark_version``."""
    minor = ".".join(spark_version.split(".")[:2])
    if minor not in DELTA_VERSIONS:
        raise ConfigError(
            f"no known delta-spark release for Spark {spark_version}: "
            f"install pyspark {', '.join(sorted(DELTA_VERSIONS))}.x or set spark.jars.packages"
        )
    return f"io.delta:delta-spark_{minor}_2.13:{DELTA_VERSIONS[minor]}"


def spark_packages(spark_version: str, object_storage: bool = False, iceberg: bool = False) -> str:
    """spark.jars.packages of every session shoplake builds: Delta Lake and the Kafka
    source (one JVM serves silver, gold and the bronze stream; jars load only at start),
    S3A (hadoop-aws) for tables on object storage, Iceberg's runtime and the JDBC drivers
    of its SQL catalogs for Iceberg tables."""
    minor = ".".join(spark_version.split(".")[:2])
    kafka = f"org.apache.spark:spark-sql-kafka-0-10_2.13:{KAFKA_VERSIONS.get(minor, spark_version)}"
    packages = [delta_package(spark_version), kafka]
    if object_storage:
        packages.append(hadoop_aws_package())
    if iceberg:
        if minor not in ICEBERG_VERSIONS:
            raise ConfigError(f"no known iceberg-spark-runtime release for Spark {spark_version}")
        packages += [
            f"org.apache.iceberg:iceberg-spark-runtime-{minor}_2.13:{ICEBERG_VERSIONS[minor]}",
            *JDBC_DRIVERS.values(),
        ]
    return ",".join(packages)


def _catalog_taken(session: SparkSession, catalog: IcebergCatalog) -> bool:
    """Whether ``session`` already names another catalog ``catalog.name``."""
    prefix = f"spark.sql.catalog.{catalog.name}"
    wanted = iceberg_catalog_conf(catalog, catalog.name)
    return session.conf.get(prefix, None) is not None and any(
        session.conf.get(key, None) != value for key, value in wanted.items()
    )


def iceberg_catalog_conf(catalog: IcebergCatalog, alias: str) -> dict[str, str]:
    """Spark SQL properties that make ``alias`` the Iceberg catalog ``catalog`` describes:
    Iceberg's JDBC catalog over the same database as PyIceberg's SQL catalog (the same
    tables), or the same REST catalog."""
    prefix = f"spark.sql.catalog.{alias}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.warehouse": catalog.warehouse,
        # the tables change under Spark (PyIceberg commits them): no cached metadata
        f"{prefix}.cache-enabled": "false",
    }
    if is_rest_catalog(catalog.uri):
        conf |= {
            f"{prefix}.type": "rest",
            f"{prefix}.uri": catalog.uri,
            # the files through Hadoop's filesystems (S3A on object storage, configured
            # from shoplake's storage settings), whatever FileIO the catalog suggests
            f"{prefix}.io-impl": "org.apache.iceberg.hadoop.HadoopFileIO",
        }
        if catalog.credential:
            conf[f"{prefix}.credential"] = catalog.credential
            conf[f"{prefix}.oauth2-server-uri"] = rest_token_endpoint(catalog.uri)
        return conf
    url = make_url_jdbc(catalog.uri)
    conf |= {f"{prefix}.type": "jdbc", f"{prefix}.uri": url.url}
    if url.user:
        conf[f"{prefix}.jdbc.user"] = url.user
    if url.password:
        conf[f"{prefix}.jdbc.password"] = url.password
    return conf


@dataclass(frozen=True)
class _JdbcUrl:
    url: str
    user: str | None = None
    password: str | None = None


def make_url_jdbc(uri: str) -> _JdbcUrl:
    """A SQLAlchemy URL of a SQL catalog as a JDBC URL (SQLite and PostgreSQL)."""
    from urllib.parse import unquote, urlsplit

    if uri.startswith("sqlite:///"):
        return _JdbcUrl(f"jdbc:sqlite:{uri[len('sqlite:///') :]}")
    parts = urlsplit(uri)
    if parts.scheme.split("+")[0] in ("postgresql", "postgres"):
        port = f":{parts.port}" if parts.port else ""
        return _JdbcUrl(
            f"jdbc:postgresql://{parts.hostname}{port}{parts.path}",
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )
    raise ConfigError(
        f"the Spark engine reads Iceberg catalogs on SQLite, PostgreSQL or REST, not {uri}"
    )


def hadoop_aws_package() -> str:
    """hadoop-aws (the S3A filesystem) of the Hadoop release that pyspark ships: the two
    must match. It brings the AWS SDK's bundle (~640 MB, downloaded once)."""
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    if not jars:
        raise ConfigError("pyspark ships no hadoop-client-api jar: cannot pick hadoop-aws")
    version = jars[0].name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    return f"org.apache.hadoop:hadoop-aws:{version}"


def s3a_conf(storage: StorageSettings) -> dict[str, str]:
    """Hadoop settings that let Spark read and write ``s3://`` paths through S3A, the way
    shoplake's StorageSettings describe the store."""
    conf = {
        # shoplake's URIs say s3://; S3A serves that scheme too (s3a:// works as well)
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.endpoint.region": storage.region,
        "fs.s3a.path.style.access": "true" if storage.path_style else "false",
        "fs.s3a.connection.ssl.enabled": "false" if storage.http else "true",
    }
    if storage.endpoint:
        conf["fs.s3a.endpoint"] = storage.endpoint
    if storage.access_key_id and storage.secret_access_key is not None:
        conf["fs.s3a.access.key"] = storage.access_key_id
        conf["fs.s3a.secret.key"] = storage.secret_access_key.get_secret_value()
        provider = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        if storage.session_token is not None:
            conf["fs.s3a.session.token"] = storage.session_token.get_secret_value()
            provider = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
        conf["fs.s3a.aws.credentials.provider"] = provider
    return conf


class SparkEngine:
    """Runs the SQL models on a SparkSession whose time zone is UTC.

    ``session``: an existing session to use (it is left running on ``close``); otherwise
    one is built from ``master`` and ``conf``, with Delta Lake's jars from Maven Central
    (cached under ~/.cache/shoplake/ivy), and the Kafka source's with them (see
    ``spark_packages``), unless ``delta`` is False. ``storage``: the tables are on S3,
    reached through S3A with these settings (see ``use_storage``).
    """

    name = "spark"
    # Runs the models (transpiled) and silver's validation of raw events (its own Spark
    # SQL, spark_silver).
    capabilities = Capabilities(
        in_process=False, validates_raw_events=True, streams_bronze=True, reads_tables=True
    )

    def __init__(
        self,
        master: str = "local[*]",
        conf: Mapping[str, str] | None = None,
        *,
        session: SparkSession | None = None,
        app_name: str = "shoplake",
        delta: bool = True,
        storage: StorageSettings | None = None,
        iceberg: IcebergCatalog | None = None,
        iceberg_jars: bool = False,
    ) -> None:
        try:
            import pyspark
            from pyspark.sql import SparkSession
            from pyspark.sql.functions import udf
        except ImportError:
            raise ConfigError(_MISSING) from None
        self._timezone: str | None = None
        if session is None and SparkSession.getActiveSession() is not None:
            session = SparkSession.getActiveSession()  # someone else's: left running
        self._owned = session is None
        if session is None:
            builder = SparkSession.builder.appName(app_name)
            if "PYSPARK_GATEWAY_PORT" not in os.environ:  # else spark-submit set the master
                builder = builder.master(master)
            settings = _local_defaults(master) | {
                # The Python workers (the ROUND UDF) run this interpreter, not python3.
                "spark.pyspark.python": sys.executable,
                "spark.ui.enabled": "false",
                # Spark's 1g default runs out of heap on one 200k-record silver batch; in
                # local mode the driver's heap is all there is (SPARK_CONF overrides it).
                "spark.driver.memory": "4g",
                "spark.ui.showConsoleProgress": "false",
                "spark.sql.execution.arrow.pyspark.enabled": "true",
            }
            if delta:
                settings |= {
                    "spark.jars.packages": spark_packages(
                        pyspark.__version__,
                        object_storage=storage is not None,
                        iceberg=iceberg is not None or iceberg_jars,
                    ),
                    "spark.jars.ivy": str(cache_dir() / "ivy"),
                    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
                    "spark.sql.catalog.spark_catalog": (
                        "org.apache.spark.sql.delta.catalog.DeltaCatalog"
                    ),
                }
            settings |= dict(conf or {})
            for key, value in settings.items():
                builder = builder.config(key, value)
            session = builder.getOrCreate()
            session.sparkContext.setLogLevel("ERROR")
        # Timestamps are instants: UTC in, UTC out, whatever the machine's zone.
        if iceberg is not None and _catalog_taken(session, iceberg):
            # a session keeps a catalog once loaded: another home's needs a session of its own
            session = session.newSession()
        session.conf.set("spark.sql.session.timeZone", "UTC")
        self.spark: SparkSession = session
        from pyspark.sql.types import DoubleType

        session.udf.register(
            ROUND_DOUBLE,
            udf(_round_half_away(), DoubleType(), useArrow=False),  # no pandas
        )
        self._iceberg_alias: str | None = None
        self._iceberg = iceberg
        if storage is not None:
            self.use_storage(storage)
        if iceberg is not None:
            self.use_iceberg(iceberg)

    def use_iceberg(self, catalog: IcebergCatalog) -> None:
        """Read Iceberg tables through this catalog from now on, under its own name (which
        Iceberg's JDBC catalog also keys its rows by, as PyIceberg's does)."""
        for key, value in iceberg_catalog_conf(catalog, catalog.name).items():
            self.spark.conf.set(key, value)
        self._iceberg_alias = catalog.name
        self._iceberg = catalog

    def use_storage(self, storage: StorageSettings) -> None:
        """Reach S3 with these settings from now on. They go into the session's Hadoop
        configuration, not its Spark conf, so the secret stays out of Spark's environment
        listings and event logs."""
        hadoop = self.spark.sparkContext._jsc.hadoopConfiguration()
        for key, value in s3a_conf(storage).items():
            hadoop.set(key, value)

    def define_local_date(self, timezone: str) -> None:
        """``local_date(ts)`` in the models: the calendar day of a UTC timestamp in
        ``timezone`` (the last definition wins, as with DuckDB's macro)."""
        self._timezone = timezone

    def table(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a model's SQL (DuckDB dialect, ``$name`` parameters) and return Arrow."""
        from pyspark.errors import PySparkException

        text = bind(to_spark_tree(sql, self._timezone), params or {})
        try:
            return _as_duckdb_types(self.spark.sql(text).toArrow())
        except PySparkException as exc:  # translated at the edge, first line only
            raise QueryError(str(exc).strip().splitlines()[0]) from exc

    def register(self, name: str, data: Input) -> None:
        """Expose Arrow data, or a table scan Spark runs itself, or the union of a list of
        them, as a temporary view called ``name``."""
        if isinstance(data, list | tuple):
            frames = [self._frame(part) for part in data]
            union = frames[0]
            for frame in frames[1:]:
                union = union.unionByName(frame)
            union.createOrReplaceTempView(name)
        else:
            self._frame(data).createOrReplaceTempView(name)

    def _frame(self, data: Part) -> DataFrame:
        if isinstance(data, TableScan):
            return self._scanned(data)
        if isinstance(data, HeldQuery):  # capabilities.holds_tables is False: not asked
            raise TypeError("the Spark engine holds no tables of its own to query")
        if isinstance(data, ds.Dataset):
            data = data.to_table()
        return self.spark.createDataFrame(_spark_friendly(data))

    def _scanned(self, scan: TableScan) -> DataFrame:
        """The snapshot ``scan`` names, read by Spark (Delta prunes files by partition and
        statistics), with its columns and predicate."""
        if scan.format == "iceberg":
            frame = self._iceberg_scanned(scan)
        elif scan.format == "delta":
            frame = (
                self.spark.read.format("delta")
                .option("versionAsOf", scan.version)
                .load(scan.location)
            )
        else:
            raise ConfigError(f"the Spark engine reads Delta or Iceberg tables, not {scan.format}")
        if scan.where is not None:
            frame = self._kept(frame, scan.where)
        if scan.columns is not None:
            frame = frame.select(*scan.columns)
        if scan.weight is not None:
            from pyspark.sql import functions as F

            frame = frame.withColumn(scan.weight, F.lit(1).cast("bigint"))
        return frame

    def _iceberg_scanned(self, scan: TableScan) -> DataFrame:
        if self._iceberg_alias is None or scan.name is None:
            raise ConfigError("an Iceberg table scan needs the engine's catalog (use_iceberg)")
        table = f"{self._iceberg_alias}.{scan.name.split('.', 1)[1]}"
        reader = self.spark.read.format("iceberg")
        if scan.snapshot_id is not None:
            reader = reader.option("versionAsOf", scan.snapshot_id)  # Iceberg: a snapshot id
        return reader.load(table)

    def _kept(self, frame: DataFrame, where: Predicate) -> DataFrame:
        """The rows of ``frame`` for which ``where`` holds. A long IN list is a broadcast
        semi-join instead: Spark plans thousands of literals slowly."""
        from pyspark.sql import functions as F

        if isinstance(where, AllOf):
            for term in where.terms:
                frame = self._kept(frame, term)
            return frame
        column = F.col(where.column)
        if isinstance(where, IsIn):
            values = where.values
            if not isinstance(values, pa.Array | pa.ChunkedArray):
                values = pa.array(list(values))
            if len(values) <= _INLINE_VALUES_MAX:
                return frame.where(column.isin(values.to_pylist()))
            # through Arrow: a list of Python rows converts thousands of keys slowly
            keys = self._frame(pa.table({where.column: values}))
            return frame.join(F.broadcast(keys), on=where.column, how="left_semi")
        compare = {
            "=": column.__eq__,
            "!=": column.__ne__,
            "<": column.__lt__,
            "<=": column.__le__,
            ">": column.__gt__,
            ">=": column.__ge__,
        }[where.op]
        return frame.where(compare(F.lit(where.value)))

    def unregister(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement (DuckDB dialect) for its effect."""
        from pyspark.errors import PySparkException

        try:
            self.spark.sql(bind(to_spark_tree(sql, self._timezone), params or {}))
        except PySparkException as exc:
            raise QueryError(str(exc).strip().splitlines()[0]) from exc

    def table_over(
        self,
        sql: str,
        inputs: Mapping[str, Input],
        params: Mapping[str, Any] | None = None,
    ) -> pa.Table:
        """Run ``sql`` with each of ``inputs`` visible as a temporary view under its name,
        then drop the views again."""
        with registered(self, inputs):
            return self.table(sql, params)

    def parse_raw_events(
        self,
        batch: pa.Table,
        high_water: pa.Table,
        rules: RawEventRules,
        tables: Collection[str],
        now: datetime,
    ) -> ParsedEvents:
        """The Engine port's ``parse_raw_events`` in Spark SQL (``spark_silver``):
        ``parsed`` and ``late`` computed once, held as a local checkpoint, so each
        record's JSON is read once however many tables want it; then one query per silver
        table wanted. A checkpoint rather than ``cache()``: each query then plans over a
        small scan, not over the whole rule-checking plan again."""
        from shoplake.engines import spark_silver

        self.register("batch", batch.select(["raw_value", "topic", "partition", "offset"]))
        self.register("high_water", high_water)
        late = None
        try:
            self._native_frame(spark_silver.parsed_sql(rules.currencies)).createOrReplaceTempView(
                "parsed"
            )
            late = self._native_frame(spark_silver.late_sql(rules.watermark_minutes))
            late = late.localCheckpoint(eager=True)
            late.createOrReplaceTempView("late")

            def rows(sql: str, order: tuple[str, ...] = spark_silver.LINEAGE_ORDER) -> pa.Table:
                return self._native(sql).sort_by([(key, "ascending") for key in order])

            return ParsedEvents(
                rows={
                    name: rows(
                        spark_silver.table_sql(name, now),
                        spark_silver.SORT_KEYS.get(name, spark_silver.LINEAGE_ORDER),
                    )
                    for name in tables
                },
                valid=rows(spark_silver.VALID_EVENTS_SQL),
                high_water=rows(spark_silver.BATCH_HIGH_WATER_SQL, ("topic", "partition")),
            )
        finally:
            for name in ("batch", "high_water", "parsed", "late"):
                self.unregister(name)
            if late is not None:
                _release_checkpoint(late)

    def _native_frame(self, sql: str) -> DataFrame:
        """Spark SQL as written (not DuckDB's dialect: no transpiling) as a DataFrame."""
        from pyspark.errors import PySparkException

        try:
            return self.spark.sql(sql)
        except PySparkException as exc:
            raise QueryError(str(exc).strip().splitlines()[0]) from exc

    def _native(self, sql: str) -> pa.Table:
        """Run Spark SQL as written and return Arrow typed as DuckDB's answer."""
        from pyspark.errors import PySparkException

        try:
            return _as_duckdb_types(self._native_frame(sql).toArrow())
        except PySparkException as exc:
            raise QueryError(str(exc).strip().splitlines()[0]) from exc

    def sibling(self) -> SparkEngine:
        """An engine on a new session of the same Spark application: its own temporary
        views and SQL settings, the same executors. Closing it leaves the session running."""
        return SparkEngine(session=self.spark.newSession(), iceberg=self._iceberg)

    def stream_bronze(self, settings: Settings, *, until_idle: bool, stop: Event) -> int:
        """Kafka → bronze as a Structured Streaming query on a session of its own
        (engines/spark_stream.py)."""
        from shoplake.engines.spark_stream import run_bronze_stream

        return run_bronze_stream(
            settings, self.spark.newSession(), until_idle=until_idle, stop=stop
        )

    def close(self) -> None:
        """Stop the session, if this engine started it."""
        if self._owned:
            self.spark.stop()


def to_spark_sql(sql: str, timezone: str | None, params: Mapping[str, Any] | None = None) -> str:
    """A model's SQL (DuckDB dialect) as Spark runs it: the rewrites named in the module
    docstring, days cut in ``timezone``, ``params`` bound."""
    return bind(to_spark_tree(sql, timezone), params or {})


def bind(tree: exp.Expression, params: Mapping[str, Any]) -> str:
    """Spark SQL text of ``tree`` with each ``$name`` replaced by its value as a typed
    literal. Not Spark's own named parameters: with Delta's SQL extension loaded
    (delta-spark 4.4.0 on Spark 4.1), Spark reports every one of them as unbound."""
    from sqlglot import exp

    def literal(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Placeholder):
            return node
        name = str(node.this)
        if name not in params:
            raise QueryError(f"no value for the parameter ${name}")
        return _literal(params[name])

    return tree.copy().transform(literal).sql(dialect="spark", comments=False)


def _literal(value: Any) -> exp.Expression:
    from sqlglot import exp

    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, datetime):  # an instant, written in UTC
        moment = value.astimezone(UTC) if value.tzinfo else value
        text = moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return exp.cast(exp.Literal.string(text), exp.DataType.Type.TIMESTAMP)
    if isinstance(value, date):
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.Type.DATE)
    if isinstance(value, int | float | Decimal):
        return exp.Literal.number(str(value))
    return exp.Literal.string(str(value))


@lru_cache(maxsize=256)
def to_spark_tree(sql: str, timezone: str | None) -> exp.Expression:
    """A model's SQL (DuckDB dialect) parsed and rewritten for Spark, parameters still
    unbound; cached per text and time zone (callers must not change it: ``bind`` copies)."""
    import sqlglot
    from sqlglot import exp

    def double(value: float) -> exp.Expression:
        return exp.cast(exp.Literal.number(int(value)), exp.DataType.Type.DOUBLE)

    def rewrite(node: exp.Expression) -> exp.Expression:
        if (
            isinstance(node, exp.Anonymous)
            and str(node.this).lower() == "local_date"
            and timezone is not None
        ):
            (ts,) = node.expressions
            shifted = exp.Anonymous(
                this="from_utc_timestamp", expressions=[ts, exp.Literal.string(timezone)]
            )
            return exp.Anonymous(this="to_date", expressions=[shifted])
        if isinstance(node, exp.TimeToUnix):  # DuckDB's epoch(): ms / 1e3 + rest / 1e6
            micros = exp.Anonymous(this="unix_micros", expressions=[node.this])
            millis = exp.IntDiv(this=micros, expression=exp.Literal.number(1000))
            rest = exp.Mod(this=micros.copy(), expression=exp.Literal.number(1000))
            return exp.Paren(
                this=exp.Add(
                    this=exp.Div(this=exp.cast(millis, "double"), expression=double(1000)),
                    expression=exp.Div(this=exp.cast(rest, "double"), expression=double(1e6)),
                )
            )
        if isinstance(node, exp.Round) and _is_double(node.this):
            decimals = node.args.get("decimals") or exp.Literal.number(0)
            # Spark computes a Python UDF's arguments before any CASE around it decides
            # they are not needed: x / 0 there must be NULL, not ANSI's error.
            value = node.this.transform(
                lambda n: (
                    exp.Anonymous(this="try_divide", expressions=[n.this, n.expression])
                    if isinstance(n, exp.Div)
                    else n
                )
            )
            return exp.Anonymous(this=ROUND_DOUBLE, expressions=[value, decimals])
        return node

    return sqlglot.parse_one(sql, read="duckdb").transform(rewrite)


def _is_double(node: exp.Expression) -> bool:
    from sqlglot import exp

    return any(
        cast.to.this in (exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT)
        for cast in node.find_all(exp.Cast)
    )


def _local_defaults(master: str) -> dict[str, str]:
    """Spark's defaults are a cluster's: 200 shuffle partitions, and Delta replays a
    table's log in 50 tasks, each time a step reads a new version. On one machine every
    such task is overhead: as many as it has cores instead (conf overrides them)."""
    if not master.startswith("local") or "PYSPARK_GATEWAY_PORT" in os.environ:
        return {}
    cores = str(os.cpu_count() or 2)
    return {
        "spark.sql.shuffle.partitions": cores,
        "spark.databricks.delta.snapshotPartitions": cores,
    }


def _spark_friendly(table: pa.Table) -> pa.Table:
    """Arrow data as Spark reads it whole: views and large strings as plain strings,
    dictionaries as their values, nanoseconds as microseconds, no empty batches."""
    fields = []
    for field in table.schema:
        kind = field.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_string_view(kind) or pa.types.is_large_string(kind):
            kind = pa.string()
        elif pa.types.is_binary_view(kind) or pa.types.is_large_binary(kind):
            kind = pa.binary()
        elif pa.types.is_timestamp(kind) and kind.unit == "ns":
            kind = pa.timestamp("us", tz=kind.tz)
        fields.append(field.with_type(kind))
    schema = pa.schema(fields)
    if schema != table.schema:
        table = table.cast(schema)
    # pyspark 4.1's createDataFrame drops every batch after an empty one.
    return pa.Table.from_batches([b for b in table.to_batches() if b.num_rows], schema)


def _as_duckdb_types(table: pa.Table) -> pa.Table:
    """Spark's Arrow answer typed as DuckDB's for the same SQL: every column nullable
    (Spark marks some NOT NULL) and timestamps in microseconds, UTC."""
    fields = []
    for field in table.schema:
        kind = field.type
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            kind = pa.timestamp("us", tz="UTC")
        fields.append(pa.field(field.name, kind, nullable=True))
    schema = pa.schema(fields)
    return table if schema == table.schema else table.cast(schema)


if TYPE_CHECKING:

    def _is_an_engine(engine: SparkEngine) -> Engine:  # mypy checks the port is met
        return engine


def _release_checkpoint(frame: DataFrame) -> None:
    """Free a local checkpoint's blocks now rather than when the JVM's GC gets to them.
    Spark has no public call for it: reach the RDD behind the plan when it is one (an
    empty or tiny checkpoint is a local relation instead, with nothing to free)."""
    from py4j.protocol import Py4JError

    plan = frame._jdf.queryExecution().logical()
    with contextlib.suppress(Py4JError):
        plan.rdd().unpersist(False)
