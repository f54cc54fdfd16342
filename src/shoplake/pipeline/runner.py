"""The pipeline facade: wires transport, tables and engine, and runs the jobs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from shoplake.contract.tables import RAW_EVENTS
from shoplake.engines.duckdb import DuckDB
from shoplake.errors import ShoplakeError
from shoplake.pipeline.gold import DailySalesModel, SalesMinuteModel
from shoplake.pipeline.ingest import BronzeIngest
from shoplake.pipeline.silver import OrderPaymentsModel, SilverProcessor
from shoplake.settings import Settings
from shoplake.tables import TableStore, open_store
from shoplake.transport import Transport, open_transport

log = logging.getLogger(__name__)

Job = Literal["ingestion", "processing", "both", "gold"]
JOBS: tuple[str, ...] = ("ingestion", "processing", "both", "gold")


@dataclass
class RunStats:
    """Running totals of one ``run``."""

    ingested: int = 0
    bronze_read: int = 0
    silver_written: int = 0
    duplicates_dropped: int = 0
    gold_rows: int = 0
    rounds: int = 0
    errors: list[str] = field(default_factory=list)


class Pipeline:
    """The embedded pipeline: ingest → silver → gold, in this process."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        store: TableStore | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport or open_transport(settings)
        self.store = store or open_store(settings)
        self._engine = DuckDB()
        self._ingest: BronzeIngest | None = None
        self._stages: (
            tuple[
                SilverProcessor, OrderPaymentsModel, tuple[SalesMinuteModel | DailySalesModel, ...]
            ]
            | None
        ) = None

    # -- stages ----------------------------------------------------------------
    @property
    def ingest(self) -> BronzeIngest:
        if self._ingest is None:
            self._ingest = BronzeIngest(
                self.transport,
                self.store,
                self.settings.pipeline.consumer_group,
                engine=self._engine,
            )
        return self._ingest

    def ingest_once(self, *, wait: bool = False) -> int:
        cfg = self.settings.pipeline
        return self.ingest.step(cfg.batch_max_records, cfg.batch_max_seconds if wait else 0.0)

    def _processing_stages(
        self,
    ) -> tuple[SilverProcessor, OrderPaymentsModel, tuple[SalesMinuteModel | DailySalesModel, ...]]:
        if self._stages is None:
            cfg = self.settings
            self._stages = (
                SilverProcessor(
                    self.store,
                    cfg.pipeline.consumer_group,
                    sorted(cfg.reporting.rates),
                    engine=self._engine,
                ),
                OrderPaymentsModel(self.store, engine=self._engine),
                (
                    SalesMinuteModel(self.store, cfg.reporting, engine=self._engine),
                    DailySalesModel(self.store, cfg.reporting, engine=self._engine),
                ),
            )
        return self._stages

    def process_once(self, stats: RunStats | None = None, *, silver: bool = True) -> int:
        """One round of silver and gold; returns the rows of work done (0: idle)."""
        stats = stats if stats is not None else RunStats()
        if not self.store.exists(RAW_EVENTS):
            return 0
        tps = self.transport.partitions()
        silver_stage, order_payments, gold_models = self._processing_stages()
        work = 0
        if silver:
            result = silver_stage.step(tps, self.settings.pipeline.batch_max_records)
            stats.bronze_read += result.rows_in
            stats.silver_written += result.rows_written
            stats.duplicates_dropped += result.duplicates_dropped
            work += result.rows_in
        work += order_payments.step(tps)
        gold = sum(model.step(tps) for model in gold_models)
        stats.gold_rows += gold
        return work + gold

    # -- the loop ----------------------------------------------------------------
    def run(
        self,
        job: Job = "both",
        *,
        until_idle: bool = False,
        stop: threading.Event | None = None,
        on_round: Callable[[RunStats], None] | None = None,
    ) -> RunStats:
        """Run ``job`` until stopped (or, with ``until_idle``, until nothing is left to do).

        Transient errors (a busy log, a commit conflict) are logged and retried; terminal
        ones propagate."""
        stop = stop or threading.Event()
        stats = RunStats()
        poll = self.settings.pipeline.poll_interval_s
        while not stop.is_set():
            try:
                work = 0
                if job in ("ingestion", "both"):
                    got = self.ingest_once(wait=not until_idle)
                    stats.ingested += got
                    work += got
                if job in ("processing", "both", "gold"):
                    work += self.process_once(stats, silver=job != "gold")
            except ShoplakeError as exc:
                if not exc.transient:
                    raise
                log.warning("transient error, retrying: %s", exc)
                stats.errors.append(str(exc))
                stop.wait(poll)
                continue
            stats.rounds += 1
            if on_round is not None:
                on_round(stats)
            if work == 0:
                if until_idle:
                    break
                stop.wait(poll)
        return stats

    def close(self) -> None:
        self.transport.close()
        self.store.close()
        self._engine.close()
