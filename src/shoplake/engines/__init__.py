"""Compute engines: DuckDB in process (default), Spark as an optional adapter.

Only the pipeline's runner (and the query layer, which is DuckDB by design) constructs
an engine, through ``open_engine``; the rest of the code sees the ``Engine`` port.
"""

from __future__ import annotations

from pathlib import Path

from shoplake.engines.base import Capabilities, Engine, IcebergCatalog
from shoplake.settings import EngineSettings, Settings, StorageSettings

__all__ = ["Capabilities", "Engine", "IcebergCatalog", "open_engine", "open_models_engine"]


def open_engine(
    settings: EngineSettings,
    storage: StorageSettings | None = None,
    iceberg: IcebergCatalog | None = None,
) -> Engine:
    """The engine these settings name. Spark is imported only when asked for; without
    pyspark installed that is one clear ConfigError naming the extra to install.
    ``storage``: the tables are on S3; ``iceberg``: they are Iceberg tables in this
    catalog (Spark reads them itself)."""
    if settings.kind == "duckdb":
        from shoplake.engines.duckdb import DuckDB

        return DuckDB(memory_limit=settings.duckdb_memory_limit)
    from shoplake.engines.spark import SparkEngine  # imports pyspark: only when asked for

    return SparkEngine(
        master=settings.spark_master, conf=settings.spark_conf, storage=storage, iceberg=iceberg
    )


def open_models_engine(settings: Settings) -> Engine:
    """The engine silver and the derived tables run on: the one ``settings`` name, told
    where the tables live (Spark reads S3 and the Iceberg catalog itself)."""
    iceberg = _iceberg_catalog(settings) if settings.tables.format == "iceberg" else None
    return open_engine(
        settings.engine, settings.storage if settings.on_object_storage else None, iceberg
    )


def _iceberg_catalog(settings: Settings) -> IcebergCatalog:
    """The tables' Iceberg catalog as the engine reaches it (Spark reads through it)."""
    root = settings.lake_root
    credential = settings.tables.catalog_credential
    return IcebergCatalog(
        settings.tables.catalog_name,
        settings.iceberg_catalog_uri,
        settings.tables.catalog_warehouse
        or (root if "://" in root else Path(root).resolve().as_posix()),
        None if credential is None else credential.get_secret_value(),
    )
