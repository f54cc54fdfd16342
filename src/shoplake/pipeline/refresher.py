"""The REFRESH lane of a continuous run: every model but gold.fct_sales_minute, stepped
every ``gold_refresh_s`` beside the main loop, with the tables' compaction and vacuum.

The lane is a thread with an engine of its own (with Spark: a session of the same
application). With ``gold_refresh_process`` and the DuckDB engine it is a process of its
own instead: a pass is mostly Python (planning, Arrow, the delta-rs log), and a thread
shares one interpreter lock with the gateway, the log's writer and the main loop; the
process costs a second interpreter's memory. Positions in each commit make two processes
as safe as two threads. The process dies with its parent (a SIGKILL of the run takes the
lane with it) and ignores Ctrl-C: the parent stops it.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Protocol

from shoplake.engines import Engine, open_models_engine
from shoplake.errors import ShoplakeError
from shoplake.pipeline import steptrace
from shoplake.pipeline.gold import DerivedModel
from shoplake.pipeline.maintenance import TableMaintenance
from shoplake.pipeline.positions import RecentCommits, SharedReads
from shoplake.pipeline.registry import Lane, build_models
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport.base import TopicPartition

if TYPE_CHECKING:
    from shoplake.pipeline.runner import Observer

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


class Stoppable(Protocol):
    """A stop event: the run's ``threading.Event``, or the lane process's message."""

    def wait(self, timeout: float | None = None) -> bool: ...

    def is_set(self) -> bool: ...


def step_models(
    models: list[DerivedModel], tps: list[TopicPartition], shared: SharedReads | None = None
) -> int:
    """One step of each model in turn (each traced, see steptrace), as one pass of the
    reads they share (built with ``shared``); the rows written."""
    rows = 0
    with shared.one_pass() if shared is not None else nullcontext():
        for model in models:
            with steptrace.step(model.spec.qualified):
                rows += model.step(tps)
    return rows


def refresh_until_stopped(
    settings: Settings,
    engine: Engine,
    tps: list[TopicPartition],
    stop: Stoppable,
    on_pass: Callable[[int, float], None],
    recent: RecentCommits | None = None,
) -> None:
    """Step the REFRESH lane's models and the tables' upkeep every ``gold_refresh_s``
    until ``stop``; ``on_pass(rows, seconds)`` after a pass that wrote rows. ``recent``:
    the main loop's commits, for the new rows the models plan on (a thread in the same
    process only). Transient errors are logged and retried next time; a terminal one is
    raised."""
    store = open_store(settings)
    shared = SharedReads()
    try:
        models = build_models(
            store, settings.reporting, engine, recent, lanes=(Lane.REFRESH,), shared=shared
        )
        maintenance = TableMaintenance(store, settings.pipeline)
        every = settings.pipeline.gold_refresh_s
        due = time.monotonic() + every
        # A pass starts every ``every`` seconds, or at once when the last one took longer.
        while not stop.wait(max(0.0, due - time.monotonic())):
            started = time.monotonic()
            due = started + every
            try:
                rows = step_models(models, tps, shared)
                maintenance.run_due()
            except ShoplakeError as exc:
                if not exc.transient:
                    raise
                log.warning("transient error in the gold refresh, retrying: %s", exc)
                continue
            if rows:
                on_pass(rows, time.monotonic() - started)
    finally:
        store.close()


class GoldRefresher:
    """Runs ``refresh_until_stopped`` beside the main loop until ``stop`` or ``close``;
    as a thread, it takes the new rows from the main loop's ``recent`` commits while they
    hold them (a process reads them from the tables). A terminal error (or the lane's
    process dying) is kept in ``error`` and sets ``stop``, so the run ends rather than
    letting gold go stale."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        tps: list[TopicPartition],
        stop: threading.Event,
        observer: Observer | None,
        recent: RecentCommits | None = None,
    ) -> None:
        self.stop = stop
        self.observer = observer
        self.error: ShoplakeError | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        if engine.capabilities.in_process and settings.pipeline.gold_refresh_process:
            spawn = multiprocessing.get_context("spawn")  # fork copies other threads' locks
            # One pipe both ways: the lane reports passes and errors, the parent says stop
            # (no multiprocessing.Event: setting one blocks if a waiter died mid-wait).
            self._lane, lane_end = spawn.Pipe()
            self._process = spawn.Process(
                target=_lane_process,
                args=(settings, tps, lane_end, os.getpid()),
                name="shoplake-gold-refresh",
                daemon=True,
            )
            self._process.start()
            lane_end.close()
            target: Callable[[], None] = self._relay
        else:
            sibling = engine.sibling()  # its own views: the main loop runs too

            def target() -> None:
                try:
                    refresh_until_stopped(settings, sibling, tps, stop, self._passed, recent)
                except ShoplakeError as exc:
                    self._failed(exc)
                except Exception as exc:  # a bug: stop the run rather than let gold go stale
                    self._failed(ShoplakeError(f"gold refresh failed: {exc!r}"))
                finally:
                    sibling.close()

        self._thread = threading.Thread(target=target, name="gold-refresh", daemon=True)
        self._thread.start()

    def _passed(self, rows: int, seconds: float) -> None:
        if self.observer is not None:
            self.observer.stage("gold", rows, seconds)

    def _failed(self, error: ShoplakeError) -> None:
        self.error = error
        self.stop.set()

    def _relay(self) -> None:
        """Passes on what the lane's process reports, tells it to stop once the run
        stops, and notices it dying. The only thread that uses the pipe."""
        told = False
        while True:
            try:
                if self.stop.is_set() and not told:
                    self._lane.send(("stop",))
                    told = True
                if not self._lane.poll(0.2):
                    continue
                kind, *payload = self._lane.recv()
            except (EOFError, OSError):  # the process has exited
                break
            if kind == "pass":
                self._passed(*payload)
            elif kind == "error":
                self._failed(payload[0])
        assert self._process is not None
        self._process.join(timeout=30)
        if self.error is None and not told:
            self._failed(
                ShoplakeError(f"the gold refresh process died (exit code {self._process.exitcode})")
            )

    def close(self) -> None:
        self.stop.set()  # the run is over, however it ended
        self._thread.join(timeout=120)
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()  # stuck past two minutes: positions make this safe
                self._process.join()
            self._lane.close()


class _StopOnMessage:
    """The lane's stop event: set by the parent's message, or by the pipe closing."""

    def __init__(self, parent: Connection) -> None:
        self.parent = parent
        self._set = False

    def wait(self, timeout: float | None = None) -> bool:
        if not self._set and self.parent.poll(timeout):
            self._set = True
        return self._set

    def is_set(self) -> bool:
        return self.wait(0)


def _lane_process(
    settings: Settings, tps: list[TopicPartition], parent_end: Connection, parent: int
) -> None:
    """The lane's process: reports each pass and a terminal error to the parent."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent stops us
    os.environ[steptrace.RUN_ENV] = str(parent)  # steps traced as the run's
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    engine = open_models_engine(settings)
    try:
        refresh_until_stopped(
            settings,
            engine,
            tps,
            _StopOnMessage(parent_end),
            lambda rows, s: parent_end.send(("pass", rows, s)),
        )
    except ShoplakeError as exc:
        parent_end.send(("error", exc))
    except Exception as exc:  # a bug: stop the run rather than let gold go stale
        parent_end.send(("error", ShoplakeError(f"gold refresh failed: {exc!r}")))
    finally:
        engine.close()
        parent_end.close()


def _die_with(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux), as if it were a thread."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
    if sys.platform != "linux":

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
