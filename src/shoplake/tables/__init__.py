"""Table stores: the TableStore port and its adapters (Delta Lake by default)."""

from __future__ import annotations

from shoplake.errors import ConfigError
from shoplake.settings import Settings
from shoplake.tables.base import TableHandle, TableStore

__all__ = ["TableHandle", "TableStore", "open_store"]


def open_store(settings: Settings) -> TableStore:
    """The table store for these settings: Delta Lake (delta-rs) or Iceberg (PyIceberg,
    with its catalog), on a local folder or on S3 (``settings.storage``)."""
    if settings.tables.format == "iceberg":
        try:
            from shoplake.tables.iceberg import IcebergStore
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("pyiceberg"):
                raise
            raise ConfigError(
                "Iceberg tables need PyIceberg: pip install 'shoplake[iceberg]'"
            ) from None
        credential = settings.tables.catalog_credential
        return IcebergStore(
            settings.lake_root,
            settings.iceberg_catalog_uri,
            settings.storage,
            settings.tables.catalog_name,
            rest_warehouse=settings.tables.catalog_warehouse,
            rest_credential=None if credential is None else credential.get_secret_value(),
        )
    from shoplake.tables.delta import DeltaStore

    return DeltaStore(settings.lake_root, settings.storage)
