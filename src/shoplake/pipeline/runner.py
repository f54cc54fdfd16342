"""The pipeline facade: wires transport, tables and engine, and runs the jobs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal, Protocol

from shoplake.contract.tables import RAW_EVENTS
from shoplake.engines import open_engine, open_models_engine
from shoplake.errors import ShoplakeError
from shoplake.pipeline.gold import DerivedModel
from shoplake.pipeline.ingest import BronzeIngest
from shoplake.pipeline.positions import RecentCommits, SharedReads
from shoplake.pipeline.refresher import GoldRefresher, step_models
from shoplake.pipeline.registry import Lane, build_models
from shoplake.pipeline.silver import SilverProcessor, StepResult
from shoplake.pipeline.steptrace import step
from shoplake.settings import EngineSettings, Settings
from shoplake.tables import TableStore, open_store
from shoplake.transport import Transport, open_transport
from shoplake.transport.base import TopicPartition

log = logging.getLogger(__name__)
_MAX_BACKOFF_S = 5.0  # the longest wait between retries of a transient error

Job = Literal["ingestion", "processing", "both", "gold"]
JOBS: tuple[str, ...] = ("ingestion", "processing", "both", "gold")


class Observer(Protocol):
    """Receives the pipeline's own measurements (the Prometheus metrics implement it)."""

    def stage(self, name: str, rows: int, seconds: float) -> None: ...

    def visible_in_gold(self, latencies_s: list[float]) -> None: ...

    def dedupe_index(self, ids: int, in_files: int) -> None: ...


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
        # Ingestion parses records in this process; silver and gold run on the engine.
        self._ingest_engine = open_engine(EngineSettings())
        self._engine = open_models_engine(settings)
        self._recent = RecentCommits()  # each stage's last commit, for the next stage
        self._shared = SharedReads()  # what the models of a round read alike
        self._ingest: BronzeIngest | None = None
        self._silver: SilverProcessor | None = None
        self._models: list[DerivedModel] = []
        self._models_ran_at = time.monotonic()  # when the models last stepped
        self.observer: Observer | None = None
        self._awaiting_gold: list[float] = []  # transport times of orders not yet in gold

    # -- stages ----------------------------------------------------------------
    @property
    def ingest(self) -> BronzeIngest:
        if self._ingest is None:
            self._ingest = BronzeIngest(
                self.transport,
                self.store,
                self.settings.pipeline.consumer_group,
                engine=self._ingest_engine,
                recent=self._recent,
            )
        return self._ingest

    def ingest_once(self, *, wait_s: float = 0.0) -> int:
        """One bronze commit of what the transport holds, waiting up to ``wait_s`` for
        more while the batch is not full."""
        cfg = self.settings.pipeline
        started = time.monotonic()
        with step("bronze"):
            rows = self.ingest.step(cfg.batch_max_records, wait_s)
        if rows and self.observer is not None:
            self.observer.stage("bronze", rows, time.monotonic() - started)
        return rows

    def _processing_stages(self) -> tuple[SilverProcessor, list[DerivedModel]]:
        if self._silver is None:
            cfg = self.settings
            eng = self._engine
            store = self.store
            self._silver = SilverProcessor(
                store,
                cfg.pipeline.consumer_group,
                sorted(cfg.reporting.rates),
                watermark_minutes=cfg.pipeline.watermark_minutes,
                dedupe_horizon_days=cfg.pipeline.dedupe_horizon_days,
                dedupe_spill_mib=cfg.pipeline.dedupe_spill_mib,
                engine=eng,
                recent=self._recent,
            )
            self._models = build_models(
                store, cfg.reporting, eng, self._recent, shared=self._shared
            )
        return self._silver, self._models

    def process_once(
        self,
        stats: RunStats | None = None,
        *,
        silver: bool = True,
        upstream_backlog: int = 0,
        fast_only: bool = False,
    ) -> int:
        """One round of silver and gold; returns the rows of work done (0: idle).

        ``upstream_backlog``: records waiting before bronze (the transport's lag), which
        count as backlog too when deciding whether the models wait. ``fast_only``: step
        only the FAST lane (a GoldRefresher steps the others)."""
        stats = stats if stats is not None else RunStats()
        if not self.store.exists(RAW_EVENTS):
            return 0
        tps = self.transport.partitions()
        silver_stage, models = self._processing_stages()
        if fast_only:
            models = [m for m in models if m.decl.lane is Lane.FAST]
        if not silver:
            return self._step_models(models, tps, stats)
        stepped: list[tuple[int, float]] = []  # (rows, seconds) of the models within silver

        def models_after_orders(so_far: StepResult) -> None:
            # The FAST lane is made of the order tables alone: gold.fct_sales_minute
            # follows them before silver's other tables (most of a round) commit.
            if not self._models_wait(so_far.backlog, upstream_backlog):
                began = time.monotonic()
                if self.observer is not None:  # (else nothing clears them)
                    self._awaiting_gold.extend(so_far.order_times)
                stepped.append((self._step_models(models, tps, stats), time.monotonic() - began))

        started = time.monotonic()
        with step("silver"):
            result = silver_stage.step(
                tps,
                self.settings.pipeline.batch_max_records,
                after_orders=models_after_orders if fast_only else None,
            )
        if result.rows_in and self.observer is not None:
            in_silver = time.monotonic() - started - sum(s for _, s in stepped)
            self.observer.stage("silver", result.rows_in, in_silver)
        if self.observer is not None:
            if not stepped:
                self._awaiting_gold.extend(result.order_times)
            self.observer.dedupe_index(silver_stage.dedupe_ids, silver_stage.dedupe_ids_in_files)
        stats.bronze_read += result.rows_in
        stats.silver_written += result.rows_written
        stats.duplicates_dropped += result.duplicates_dropped
        if stepped:
            return result.rows_in + stepped[0][0]
        if self._models_wait(result.backlog, upstream_backlog):
            return result.rows_in
        return result.rows_in + self._step_models(models, tps, stats)

    def _models_wait(self, silver_backlog: int, upstream_backlog: int) -> bool:
        """Whether the models wait: catching up on a backlog of more than one batch
        (silver has more after this step, or the log holds more than a batch), they take
        it in one pass later, but at least every ``catch_up_gold_every_s``. A stream's
        usual small lag is no backlog: gold follows every round."""
        cfg = self.settings.pipeline
        behind = silver_backlog > 0 or upstream_backlog > cfg.batch_max_records
        return behind and time.monotonic() - self._models_ran_at < cfg.catch_up_gold_every_s

    def _step_models(
        self, models: list[DerivedModel], tps: list[TopicPartition], stats: RunStats
    ) -> int:
        """One pass of ``models``; the rows they wrote."""
        self._models_ran_at = started = time.monotonic()
        derived = step_models(models, tps, self._shared)
        stats.gold_rows += derived
        if self.observer is not None:
            if derived:
                self.observer.stage("gold", derived, time.monotonic() - started)
            now = time.time()
            self.observer.visible_in_gold([now - t for t in self._awaiting_gold])
            self._awaiting_gold.clear()
        return derived

    def step_silver(self) -> int:
        """One silver step (bronze → the silver tables) of up to a batch, without the
        derived tables; the bronze rows read (0: silver is up to date)."""
        if not self.store.exists(RAW_EVENTS):
            return 0
        silver, _ = self._processing_stages()
        with step("silver"):
            result = silver.step(
                self.transport.partitions(), self.settings.pipeline.batch_max_records
            )
        return result.rows_in

    def model_of(self, table: str) -> DerivedModel:
        """The runnable model of the derived table named ``table`` (layer.name)."""
        _, models = self._processing_stages()
        for model in models:
            if model.spec.qualified == table:
                return model
        raise KeyError(table)

    def step_table(self, table: str) -> int:
        """One incremental step of the derived table ``table``; the rows written."""
        if not self.store.exists(RAW_EVENTS):
            return 0
        return step_models([self.model_of(table)], self.transport.partitions())

    def rebuild_table_days(self, table: str, days: list[date]) -> int:
        """Recompute ``days`` of the derived table ``table`` from silver."""
        if not self.store.exists(RAW_EVENTS):
            return 0
        return self.model_of(table).rebuild(days, self.transport.partitions())

    def rebuild_days(self, days: list[date]) -> int:
        """Recompute ``days`` of every table whose declaration says it rebuilds days, from
        silver (``run --date``)."""
        if not self.store.exists(RAW_EVENTS):
            return 0
        _, models = self._processing_stages()
        tps = self.transport.partitions()
        return sum(m.rebuild(days, tps) for m in models if m.decl.rebuilds_days)

    def silver_backlog(self) -> int:
        """Bronze records some silver table has not consumed yet."""
        if not self.store.exists(RAW_EVENTS):
            return 0
        silver, _ = self._processing_stages()
        return silver.pending(self.transport.partitions())

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
        if job in ("ingestion", "both") and self._engine_streams_bronze():
            return self._run_with_bronze_stream(job, until_idle, stop, on_round)
        stats = RunStats()
        cfg = self.settings.pipeline
        # Running on, an ingestion worker fills its batches (fewer, larger commits); with
        # processing behind it, a round takes what has arrived while the last one ran.
        wait_s = cfg.batch_max_seconds if job == "ingestion" and not until_idle else 0.0
        refresher: GoldRefresher | None = None
        if not until_idle and job in ("processing", "both"):
            self.store.ensure(RAW_EVENTS)
            self._processing_stages()  # the derived tables exist before the thread reads them
            refresher = GoldRefresher(
                self.settings,
                self._engine,
                self.transport.partitions(),
                stop,
                self.observer,
                self._recent,
            )
        try:
            self._loop(job, stats, stop, until_idle, wait_s, refresher is not None, on_round)
        finally:
            if refresher is not None:
                refresher.close()
        if refresher is not None and refresher.error is not None:
            raise refresher.error
        return stats

    def _engine_streams_bronze(self) -> bool:
        """Bronze is the engine's own Kafka stream (Spark Structured Streaming) rather than
        the Python worker's."""
        return self._engine.capabilities.streams_bronze and self.settings.transport.kind == "kafka"

    def _run_with_bronze_stream(
        self,
        job: Job,
        until_idle: bool,
        stop: threading.Event,
        on_round: Callable[[RunStats], None] | None,
    ) -> RunStats:
        """``run`` when the engine streams Kafka into bronze: with ``until_idle`` the stream
        drains Kafka first, then silver and gold catch up; running on, the stream runs on a
        thread beside the processing loop (its error is raised here)."""
        if until_idle:
            ingested = self._engine.stream_bronze(self.settings, until_idle=True, stop=stop)
            stats = None
            if job == "both":
                stats = self.run("processing", until_idle=True, stop=stop, on_round=on_round)
        else:
            outcome: dict[str, int | BaseException] = {}

            def stream() -> None:
                try:
                    outcome["ingested"] = self._engine.stream_bronze(
                        self.settings, until_idle=False, stop=stop
                    )
                except BaseException as exc:
                    outcome["error"] = exc
                    stop.set()

            streaming = threading.Thread(target=stream, name="bronze-stream")
            streaming.start()
            try:
                stats = self.run("processing", stop=stop) if job == "both" else None
                while streaming.is_alive():
                    streaming.join(0.5)
            finally:
                stop.set()
                streaming.join()
            error = outcome.get("error")
            if isinstance(error, BaseException):
                raise error
            written = outcome.get("ingested", 0)
            ingested = written if isinstance(written, int) else 0
        stats = stats or RunStats()
        stats.ingested = ingested
        return stats

    def _loop(
        self,
        job: Job,
        stats: RunStats,
        stop: threading.Event,
        until_idle: bool,
        wait_s: float,
        fast_only: bool,
        on_round: Callable[[RunStats], None] | None,
    ) -> None:
        poll = self.settings.pipeline.poll_interval_s
        failures = 0  # transient errors in a row
        while not stop.is_set():
            try:
                work = 0
                lag = 0
                if job in ("ingestion", "both"):
                    got = self.ingest_once(wait_s=wait_s)
                    stats.ingested += got
                    work += got
                    lag = self.ingest.lag() if job == "both" else 0
                if job in ("processing", "both", "gold"):
                    work += self.process_once(
                        stats, silver=job != "gold", upstream_backlog=lag, fast_only=fast_only
                    )
            except ShoplakeError as exc:
                if not exc.transient:
                    raise  # terminal (bad credentials, bad settings): the CLI says it once
                # back off while it lasts (a broker down), but retry a blip at once
                delay = min(poll * 2**failures, _MAX_BACKOFF_S)
                failures += 1
                log.warning("transient error, retrying in %.1f s: %s", delay, exc)
                stats.errors.append(str(exc))
                stop.wait(delay)
                continue
            failures = 0
            stats.rounds += 1
            if on_round is not None:
                on_round(stats)
            if work == 0:
                if until_idle:
                    break
                stop.wait(poll)

    def close(self) -> None:
        self.transport.close()
        self.store.close()
        self._engine.close()
        self._ingest_engine.close()
