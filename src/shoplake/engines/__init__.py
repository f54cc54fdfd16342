"""Compute engines: DuckDB in process (default), Spark as an optional adapter.

Only the pipeline's runner (and the query layer, which is DuckDB by design) constructs
an engine, through ``open_engine``; the rest of the code sees the ``Engine`` port.
"""

from __future__ import annotations

from shoplake.engines.base import Capabilities, Engine, IcebergCatalog
from shoplake.settings import EngineSettings, StorageSettings

__all__ = ["Capabilities", "Engine", "IcebergCatalog", "open_engine"]


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

        return DuckDB()
    from shoplake.engines.spark import SparkEngine  # imports pyspark: only when asked for

    return SparkEngine(
        master=settings.spark_master, conf=settings.spark_conf, storage=storage, iceberg=iceberg
    )
