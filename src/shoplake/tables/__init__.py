"""Table stores: the TableStore port and its adapters (Delta Lake by default)."""

from __future__ import annotations

from shoplake.settings import Settings
from shoplake.tables.base import TableHandle, TableStore

__all__ = ["TableHandle", "TableStore", "open_store"]


def open_store(settings: Settings) -> TableStore:
    """The table store for these settings (Delta Lake via delta-rs), on a local folder or
    on S3 (``settings.storage``)."""
    from shoplake.tables.delta import DeltaStore

    return DeltaStore(settings.lake_root, settings.storage)
