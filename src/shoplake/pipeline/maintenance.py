"""Table upkeep: every micro-batch commit leaves a small file that every later read pays
for, so tables are compacted once small files pile up, and the files only old versions
need are vacuumed. Neither changes the positions a layer records (they live in the log)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from shoplake.contract.tables import ALL_TABLES, TableSpec
from shoplake.errors import ShoplakeError
from shoplake.pipeline.steptrace import step
from shoplake.settings import PipelineSettings
from shoplake.tables.base import TableStore

log = logging.getLogger(__name__)


@dataclass
class MaintenanceReport:
    compacted: dict[str, int] = field(default_factory=dict)  # table → files removed
    vacuumed: dict[str, int] = field(default_factory=dict)  # table → files deleted
    failed: dict[str, str] = field(default_factory=dict)


class TableMaintenance:
    """Compacts and vacuums the tables of ``store`` when due (``run_due``) or now (``run``)."""

    def __init__(self, store: TableStore, settings: PipelineSettings) -> None:
        self.store = store
        self.settings = settings
        self._checked_at = time.monotonic()
        self._vacuumed_at = time.monotonic()

    def run_due(self) -> MaintenanceReport | None:
        """Compaction every ``maintenance_every_s``, vacuum every ``vacuum_every_s``."""
        now = time.monotonic()
        if now - self._checked_at < self.settings.maintenance_every_s:
            return None
        self._checked_at = now
        vacuum = now - self._vacuumed_at >= self.settings.vacuum_every_s
        if vacuum:
            self._vacuumed_at = now
        return self.run(min_files=self.settings.compact_min_files, vacuum=vacuum)

    def run(self, *, min_files: int = 1, vacuum: bool = True) -> MaintenanceReport:
        """Compact each table holding at least ``min_files`` files more than one per
        partition; then vacuum. A table that fails (say, a commit conflict with a writer)
        is reported and left for the next time."""
        report = MaintenanceReport()
        for spec in ALL_TABLES:
            if not self.store.exists(spec):
                continue
            try:
                self._upkeep(spec, min_files, vacuum, report)
            except ShoplakeError as exc:
                log.info("maintenance of %s skipped: %s", spec.qualified, exc)
                report.failed[spec.qualified] = str(exc)
        return report

    def _upkeep(
        self, spec: TableSpec, min_files: int, vacuum: bool, report: MaintenanceReport
    ) -> None:
        if self.store.excess_files(spec) >= min_files:
            with step(f"compact {spec.qualified}"):
                metrics = self.store.compact(spec)
            report.compacted[spec.qualified] = int(metrics.get("numFilesRemoved", 0))
        if vacuum:
            with step(f"vacuum {spec.qualified}"):
                deleted = self.store.vacuum(spec, self.settings.vacuum_retention_hours)
            report.vacuumed[spec.qualified] = len(deleted)
