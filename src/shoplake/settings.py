"""Settings: one frozen pydantic-settings tree.

Environment keys are ``SHOPLAKE_*`` with ``__`` between nested levels, for example
``SHOPLAKE_TRANSPORT__PARTITIONS=6`` or ``SHOPLAKE_REPORTING__CURRENCY=EUR``. The
variable names of the seed projects are accepted as aliases (``KAFKA_BOOTSTRAP``,
``LAKEHOUSE_URI``, ``TOPIC_ORDER_EVENTS``, ``TOPIC_PAYMENT_EVENTS`` and the AWS_* variables
of object storage); a ``SHOPLAKE_`` variable wins over its alias.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shoplake.errors import ConfigError

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TopicSettings(BaseModel):
    """Topic names, one per family of events."""

    model_config = _FROZEN

    page_views: str = "page-views"
    cart_events: str = "cart-events"
    purchases: str = "purchases"
    payments: str = "payments"
    user_sessions: str = "user-sessions"
    product_updates: str = "product-updates"
    dead_letter: str = "dead-letter"  # records whose event type cannot be read
    # One topic for every event type instead (seed 003's KAFKA_TOPIC, seed 004's
    # ecommerce_events): silver routes by event_type either way.
    single: str | None = None
    # Also write every event to this topic (seed 001's raw-events), for other consumers;
    # bronze does not read it.
    all_events: str | None = None

    def all(self) -> list[str]:
        """The topics bronze reads."""
        if self.single:
            return [self.single, self.dead_letter]
        return [
            self.page_views,
            self.cart_events,
            self.purchases,
            self.payments,
            self.user_sessions,
            self.product_updates,
            self.dead_letter,
        ]

    def written(self) -> list[str]:
        """Every topic shoplake writes: those bronze reads, and the all-events copy."""
        return [*self.all(), *([self.all_events] if self.all_events else [])]


class TransportSettings(BaseModel):
    model_config = _FROZEN

    kind: Literal["embedded", "kafka"] = "embedded"
    partitions: int = Field(3, ge=1, le=256, description="Partitions per topic when created.")
    replication_factor: int = Field(
        1, ge=1, description="Replicas of each Kafka topic shoplake creates (3 in production)."
    )
    kafka_bootstrap: str = "localhost:9092"
    # Kafka security (librdkafka's names in kafka_config win over these)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None  # the CA certificate file that signed the brokers'

    kafka_transactional_id: str | None = Field(
        None,
        description="The producer's transactional.id (default shoplake-HOST-PID). A fixed "
        "one per gateway lets a restarted gateway abort its predecessor's open append at "
        "once instead of after the 30 s transaction timeout.",
    )
    # Values are secrets (sasl.password…): masked in reprs and errors.
    kafka_config: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra librdkafka properties for every Kafka client, e.g. "
        '{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", ...}.',
    )

    def librdkafka_config(self) -> dict[str, str]:
        """The clients' security and extra properties, in librdkafka's names (secrets in
        clear: for the client only)."""
        password = self.sasl_password.get_secret_value() if self.sasl_password else None
        named = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": password,
            "ssl.ca.location": self.ssl_ca_location,
        }
        extra = {k: v.get_secret_value() for k, v in self.kafka_config.items()}
        return {**{k: v for k, v in named.items() if v is not None}, **extra}


class GatewaySettings(BaseModel):
    """The HTTP front door (``shoplake serve``)."""

    model_config = _FROZEN

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Write keys: they may POST events and read everything. Required unless auth is off
    # (the demo turns it off). Secrets: masked in reprs and errors.
    api_keys: tuple[SecretStr, ...] = ()
    # Read-only keys, for dashboards and scrapers: the dashboard, /api, /docs, /metrics.
    read_keys: tuple[SecretStr, ...] = ()
    auth: bool = True
    # Whether reads (everything but POST /v1/events, /healthz and /readyz) need a key too;
    # None: yes as soon as any key is configured.
    protect_reads: bool | None = None
    max_body_bytes: int = Field(10 * 2**20, ge=1024)  # compressed and decompressed alike
    max_items: int = Field(10_000, ge=1, description="Events per request, at most.")
    # Events per second per key (per client address with auth off); 0: no limit.
    rate_limit_per_s: float = Field(0.0, ge=0)
    # Events a key may send at once after a quiet spell; None: one second's worth.
    rate_limit_burst: int | None = Field(None, ge=1)

    @property
    def reads_protected(self) -> bool:
        """Reads need a key: auth on, and protect_reads (by default: whenever keys exist)."""
        if not self.auth:
            return False
        if self.protect_reads is None:
            return bool(self.api_keys or self.read_keys)
        return self.protect_reads


class EngineSettings(BaseModel):
    """The compute engine of silver and gold (ingestion from the embedded log stays in
    the Python worker whatever the engine)."""

    model_config = _FROZEN

    kind: Literal["duckdb", "spark"] = "duckdb"
    # local[*] runs Spark inside this machine; spark://HOST:7077 or k8s://… a cluster
    spark_master: str = "local[*]"
    # extra Spark properties, e.g. '{"spark.executor.memory": "4g"}'
    spark_conf: dict[str, str] = Field(default_factory=dict)
    # Memory of each DuckDB database (the main loop's, the gold lane's) for the tables it
    # holds (day digests) and its queries, e.g. "512MB"; past it DuckDB spills to disk.
    # None: DuckDB's default, 80% of RAM.
    duckdb_memory_limit: str | None = None


class StorageSettings(BaseModel):
    """Object storage for a lakehouse at ``s3://bucket/prefix`` (AWS S3, MinIO, SeaweedFS…).
    Unused for a local lakehouse. The seeds' AWS_* variables are aliases."""

    model_config = _FROZEN

    # http://host:9000 for an S3-compatible server; None: AWS S3 itself
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    # Secrets: masked in reprs, errors and logs.
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    # bucket in the path (http://host/bucket/key), as MinIO and SeaweedFS expect;
    # False: virtual-hosted (http://bucket.host/key)
    path_style: bool = True
    # plain HTTP to the endpoint; None: when the endpoint URL starts with http://
    allow_http: bool | None = None

    @property
    def http(self) -> bool:
        if self.allow_http is not None:
            return self.allow_http
        return bool(self.endpoint and self.endpoint.startswith("http://"))


def is_rest_catalog(uri: str) -> bool:
    """Whether an Iceberg catalog URI names a REST catalog (else a SQLAlchemy URL)."""
    return uri.startswith(("http://", "https://"))


def rest_token_endpoint(uri: str) -> str:
    """A REST catalog's OAuth2 token endpoint, where the Iceberg REST spec puts it."""
    return f"{uri.rstrip('/')}/v1/oauth/tokens"


class TableSettings(BaseModel):
    """The tables' format, and for Iceberg its catalog."""

    model_config = _FROZEN

    format: Literal["delta", "iceberg"] = "delta"
    # Iceberg's catalog: a SQLAlchemy URL of a SQL catalog (default: SQLite at
    # HOME/iceberg-catalog.sqlite; postgresql://… for one several machines share), or
    # the http(s):// URL of a REST catalog.
    catalog_uri: str | None = None
    catalog_name: str = "shoplake"
    # A REST catalog's warehouse (default: the lakehouse URI; an S3 Tables catalog wants
    # s3://TABLE-BUCKET/) and its OAuth2 client credentials, CLIENT_ID:CLIENT_SECRET.
    catalog_warehouse: str | None = None
    catalog_credential: SecretStr | None = None


class WarehouseSettings(BaseModel):
    """The PostgreSQL warehouse `shoplake warehouse` keeps in step (seed 003): a URL, or
    its parts (the seed's POSTGRES_* variables)."""

    model_config = _FROZEN

    url: SecretStr | None = None  # postgresql://user:password@host:port/db; wins over parts
    host: str = "localhost"
    port: int = Field(5432, ge=1, le=65535)
    db: str = "postgres"
    user: str = "postgres"
    password: SecretStr | None = None
    sslmode: str = "prefer"
    interval_s: float = Field(5.0, gt=0)  # between rounds of the continuous worker

    def conninfo(self) -> str:
        """A libpq connection string (secret inside: never log it)."""
        if self.url is not None:
            return self.url.get_secret_value()
        parts = {
            "host": self.host,
            "port": str(self.port),
            "dbname": self.db,
            "user": self.user,
            "sslmode": self.sslmode,
        }
        if self.password is not None:
            parts["password"] = self.password.get_secret_value()
        return " ".join(f"{k}='{_libpq_quoted(v)}'" for k, v in parts.items())

    def display(self) -> str:
        """Where it is, without the password."""
        if self.url is None:
            return f"postgresql://{self.user}@{self.host}:{self.port}/{self.db}"
        parts = urlsplit(self.url.get_secret_value())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _libpq_quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


class PipelineSettings(BaseModel):
    """Micro-batching: a batch is committed on size or time, whichever comes first."""

    model_config = _FROZEN

    consumer_group: str = "shoplake-ingest"
    batch_max_records: int = Field(200_000, ge=1)
    batch_max_seconds: float = Field(1.0, gt=0)
    poll_interval_s: float = Field(0.2, gt=0)
    # An event older than the newest one before it in its topic partition by more than
    # this is late: it still lands in silver and gold, and is counted.
    watermark_minutes: float = Field(10.0, ge=0)
    # A repeated event_id is dropped if the first one is at most this many days older.
    dedupe_horizon_days: int = Field(7, ge=0)
    # The ids of that horizon (16 bytes each) are held in sorted runs a day; a run this
    # large or larger goes to an unlinked temporary file read through the OS's page cache,
    # so the heap keeps at most about twice this a table and day. None: all on the heap
    # (lookups a little faster; a week at 5,000 events/s is ~48 GB), as "none" from the
    # environment.
    dedupe_spill_mib: float | None = Field(4.0, gt=0)
    # While silver has more than one batch of backlog, the derived tables wait (each of
    # their steps rereads whole days and customers) but never longer than this.
    catch_up_gold_every_s: float = Field(30.0, ge=0)
    # A continuous run brings gold.fct_sales_minute up to date every round; the other
    # derived tables follow on a thread of their own (pipeline/refresher.py), a pass
    # starting this often (at once when the last one took longer).
    gold_refresh_s: float = Field(5.0, gt=0)
    # ... or, with the DuckDB engine, in a process of their own: off the interpreter lock
    # the gateway and the main loop share, for ~0.5 GB more memory (docs/benchmarks.md).
    gold_refresh_process: bool = False
    # Table upkeep in a continuous run (DESIGN: small files compacted, old versions
    # vacuumed, on a schedule): a table is compacted once it holds this many files more
    # than one per partition; files no version younger than the retention needs are deleted.
    compact_min_files: int = Field(24, ge=1)
    maintenance_every_s: float = Field(60.0, gt=0)
    vacuum_retention_hours: float = Field(168.0, ge=0)
    vacuum_every_s: float = Field(3600.0, gt=0)
    # Where the CLI's Arrow buffers come from (allocator.py): the C library's malloc, one
    # heap a core ("system": ~350 MB less resident in the demo), or pyarrow's own
    # allocator ("default").
    arrow_memory_pool: Literal["system", "default"] = "system"

    @field_validator("dedupe_spill_mib", mode="before")
    @classmethod
    def _none_spelled_out(cls, value: object) -> object:
        return (
            None if isinstance(value, str) and value.strip().lower() in {"none", "null"} else value
        )


class ReportingSettings(BaseModel):
    """How gold reports money and days."""

    model_config = _FROZEN

    currency: str = "USD"
    timezone: str = "UTC"
    # USD per unit of each currency; gold converts order amounts with these.
    rates: dict[str, Decimal] = Field(
        default_factory=lambda: {
            "USD": Decimal("1"),
            "EUR": Decimal("1.08"),
            "GBP": Decimal("1.27"),
            "CAD": Decimal("0.73"),
            "JPY": Decimal("0.0067"),
        }
    )

    @field_validator("rates")
    @classmethod
    def _positive_rates(cls, rates: dict[str, Decimal]) -> dict[str, Decimal]:
        for code, rate in rates.items():
            if rate <= 0:
                raise ValueError(f"rate for {code} must be > 0, got {rate}")
        return rates

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (use an IANA name such as UTC)") from None
        return name

    @model_validator(mode="after")
    def _reporting_currency_has_a_rate(self) -> ReportingSettings:
        if self.currency not in self.rates:
            raise ValueError(f"reporting currency {self.currency} has no rate in rates")
        return self

    def rate_to_reporting(self, currency: str) -> Decimal:
        """Units of the reporting currency per unit of ``currency``."""
        return self.rates[currency] / self.rates[self.currency]


ENV_FILE = ".env"  # in the working directory, as the seeds' docker compose reads it

# Seed variable → nested settings path. Applied only where SHOPLAKE_* left the value unset.
SEED_ALIASES: dict[str, tuple[str, ...]] = {
    "KAFKA_BOOTSTRAP": ("transport", "kafka_bootstrap"),
    "LAKEHOUSE_URI": ("lakehouse_uri",),
    # Where two name one setting, the first one set wins.
    "AWS_ENDPOINT_URL_S3": ("storage", "endpoint"),
    "AWS_ENDPOINT_URL": ("storage", "endpoint"),
    "S3_ENDPOINT": ("storage", "endpoint"),
    "AWS_REGION": ("storage", "region"),
    "AWS_DEFAULT_REGION": ("storage", "region"),
    "AWS_ACCESS_KEY_ID": ("storage", "access_key_id"),
    "AWS_SECRET_ACCESS_KEY": ("storage", "secret_access_key"),
    "AWS_SESSION_TOKEN": ("storage", "session_token"),
    "KAFKA_TOPIC": ("topics", "single"),  # seed 003: one topic for every event
    "TOPIC_ORDER_EVENTS": ("topics", "purchases"),
    "TOPIC_PAYMENT_EVENTS": ("topics", "payments"),
    # seed 003's warehouse
    "POSTGRES_HOST": ("warehouse", "host"),
    "POSTGRES_PORT": ("warehouse", "port"),
    "POSTGRES_DB": ("warehouse", "db"),
    "POSTGRES_USER": ("warehouse", "user"),
    "POSTGRES_PASSWORD": ("warehouse", "password"),
    "POSTGRES_SSLMODE": ("warehouse", "sslmode"),
}


def _dotenv_values() -> dict[str, str]:
    """The variables of ./.env (the seeds keep theirs there), below the environment."""
    if not Path(ENV_FILE).is_file():
        return {}
    from dotenv import dotenv_values  # pydantic-settings' own dependency

    return {k: v for k, v in dotenv_values(ENV_FILE).items() if v is not None}


class _SeedAliasSource(PydanticBaseSettingsSource):
    """Reads the seed projects' variable names, below SHOPLAKE_* in priority."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole dict

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        dotenv = _dotenv_values()
        for var, path in SEED_ALIASES.items():
            value = os.environ.get(var, dotenv.get(var))
            if value is None:
                continue
            node = out
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node.setdefault(path[-1], value)
        return out


class Settings(BaseSettings):
    """Everything shoplake can be told, with defaults that run on a laptop."""

    model_config = SettingsConfigDict(
        env_prefix="SHOPLAKE_",
        env_nested_delimiter="__",
        env_file=ENV_FILE,  # SHOPLAKE_* and the seeds' names, below the environment
        frozen=True,
        extra="ignore",
    )

    home: Path = Field(Path("shoplake-data"), description="Where the log and tables live.")
    lakehouse_uri: str | None = Field(
        None, description="Root of the tables; default HOME/lake. Seed alias LAKEHOUSE_URI."
    )
    topics: TopicSettings = TopicSettings()
    transport: TransportSettings = TransportSettings()
    gateway: GatewaySettings = GatewaySettings()
    pipeline: PipelineSettings = PipelineSettings()
    reporting: ReportingSettings = ReportingSettings()
    engine: EngineSettings = EngineSettings()
    storage: StorageSettings = StorageSettings()
    tables: TableSettings = TableSettings()
    warehouse: WarehouseSettings = WarehouseSettings()

    @field_validator("lakehouse_uri")
    @classmethod
    def _supported_lakehouse(cls, uri: str | None) -> str | None:
        if uri is None or "://" not in uri:
            return uri
        scheme, rest = uri.split("://", 1)
        if scheme.lower() not in ("file", "s3", "s3a"):
            raise ValueError(
                f"lakehouse URI {uri!r}: use a local folder, file://… or s3://bucket/prefix"
            )
        if scheme.lower() != "file" and not rest.split("/", 1)[0]:
            raise ValueError(f"lakehouse URI {uri!r} names no bucket (s3://bucket/prefix)")
        return uri

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _SeedAliasSource(settings_cls), dotenv_settings)

    @property
    def lake_root(self) -> str:
        """The tables' root: a local path, or ``s3://bucket/prefix`` (``s3a://`` as Spark
        writes it is the same place)."""
        uri = self.lakehouse_uri or str(self.home / "lake")
        if uri.lower().startswith("s3a://"):
            return "s3://" + uri[len("s3a://") :]
        return uri

    @property
    def iceberg_catalog_uri(self) -> str:
        default = f"sqlite:///{(self.home / 'iceberg-catalog.sqlite').resolve()}"
        return self.tables.catalog_uri or default

    @property
    def on_object_storage(self) -> bool:
        return self.lake_root.startswith("s3://")

    @property
    def log_path(self) -> Path:
        return self.home / "transport" / "log.sqlite"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment; invalid values become a ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc
