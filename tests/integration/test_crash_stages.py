"""SIGKILL the pipeline inside every kind of step: bronze, silver, the fast gold table, each
daily gold table, the dimensions, customer analytics, the data-quality report, compaction
and vacuum (every other run with the gold refresh lane as a process of its own). The step
trace (shoplake.pipeline.steptrace) says what each run was doing when it died; the test
aims each kill at a step of a kind not yet interrupted, and requires every kind to have
been interrupted at least once. Afterwards bronze holds every appended record once and
every derived table equals a clean run's and a from-scratch recompute.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shoplake.contract.tables import (
    DAILY_CUSTOMER_ANALYTICS,
    DATA_QUALITY_REPORT,
    DIM_CUSTOMERS,
    DIM_PRODUCTS,
    FCT_SALES_MINUTE,
    ORDER_PAYMENTS,
)
from shoplake.pipeline.registry import DAILY_MODELS
from shoplake.pipeline.silver import SILVER_FROM_BRONZE
from shoplake.pipeline.steptrace import ENV as TRACE_ENV
from shoplake.pipeline.steptrace import open_steps, parse_line
from shoplake.settings import Settings
from shoplake.tables import open_store
from tests.conftest import SHOPLAKE
from tests.integration.equivalence import (
    assert_bronze_is_the_log,
    assert_equals_a_clean_run,
    run_to_idle,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Each kind of step, as the trace names them.
KINDS: dict[str, tuple[str, ...]] = {
    "bronze": ("bronze",),
    "silver": ("silver",),
    "order payments": (ORDER_PAYMENTS.qualified,),
    "sales per minute": (FCT_SALES_MINUTE.qualified,),
    "daily gold": tuple(m.spec.qualified for m in DAILY_MODELS),
    "dimensions": (DIM_PRODUCTS.qualified, DIM_CUSTOMERS.qualified),
    "customer analytics": (DAILY_CUSTOMER_ANALYTICS.qualified,),
    "data-quality report": (DATA_QUALITY_REPORT.qualified,),
    "compaction": ("compact ",),
    "vacuum": ("vacuum ",),
}


def kind_of(step: str) -> str | None:
    for kind, names in KINDS.items():
        if any(step == n or (n.endswith(" ") and step.startswith(n)) for n in names):
            return kind
    return None


def interrupted_kinds(trace: str, pids: list[int]) -> dict[str, int]:
    """How many kills interrupted each kind of step."""
    counts = dict.fromkeys(KINDS, 0)
    for pid in pids:
        for kind in {kind_of(s) for s in open_steps(trace, pid)} - {None}:
            counts[str(kind)] += 1
    return counts


def test_interrupted_kinds_counts_only_unfinished_steps() -> None:
    """The check below cannot pass on steps that completed before the kill."""
    trace = "\n".join(
        [
            "7 1 0.5 start silver",
            "7 1 0.9 end silver",
            "7 2 1.0 start compact silver.orders",
            "7 2 1.2 end compact silver.orders",
            "7 2 1.3 start silver.dim_products",  # open: pid 7 died here
            "8 1 0.7 start vacuum bronze.raw_events",  # pid 8 was never killed by us
        ]
    )
    counts = interrupted_kinds(trace, [7])
    assert counts["dimensions"] == 1
    assert counts["silver"] == counts["compaction"] == counts["vacuum"] == 0


def env_for(home: Path, trace: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SHOPLAKE_HOME": str(home),
        "SHOPLAKE_PIPELINE__BATCH_MAX_RECORDS": "2500",
        "SHOPLAKE_PIPELINE__BATCH_MAX_SECONDS": "0.2",
        # the refresher, compaction and vacuum come round within the process's life
        "SHOPLAKE_PIPELINE__GOLD_REFRESH_S": "0.2",
        "SHOPLAKE_PIPELINE__MAINTENANCE_EVERY_S": "0.5",
        "SHOPLAKE_PIPELINE__VACUUM_EVERY_S": "0.5",
        "SHOPLAKE_PIPELINE__COMPACT_MIN_FILES": "1",
        # (the retention stays the default: at 0 a vacuum deletes the files compaction
        # just replaced while the loop's thread still reads its older snapshot)
        TRACE_ENV: str(trace),
    }


class TraceTail:
    """Follows the trace file: which steps each process has open right now."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending = b""
        # (pid, thread) → the steps open, innermost last (silver's parse within silver)
        self.running: dict[tuple[str, str], list[str]] = {}

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            parsed = parse_line(line.decode())
            assert parsed is not None, line  # whole lines only: the rest waits in pending
            pid, thread, _, event, name = parsed
            stack = self.running.setdefault((pid, thread), [])
            if event == "start":
                stack.append(name)
            elif stack and stack[-1] == name:
                stack.pop()

    def open_kinds(self, pid: int) -> set[str | None]:
        mine = [steps for (p, _), steps in self.running.items() if p == str(pid)]
        return {kind_of(step) for steps in mine for step in steps}


def test_kills_inside_every_kind_of_step_change_nothing(tmp_path: Path) -> None:
    rng = random.Random(1103)
    home = tmp_path / "home"
    trace_path = tmp_path / "steps.trace"
    env = env_for(home, trace_path)
    generate = ["generate", "-n", "24000", "--rate", "2400", "--bad-ratio", "0.05", "--seed", "11"]
    producer = subprocess.Popen(
        [*SHOPLAKE, *generate],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    tail = TraceTail(trace_path)
    killed: list[int] = []
    counts = dict.fromkeys(KINDS, 0)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        missing = [k for k, n in counts.items() if n == 0]
        if not missing and producer.poll() is not None and len(killed) >= 12:
            break
        target = missing[len(killed) % len(missing)] if missing else rng.choice(list(KINDS))
        job = "processing" if len(killed) % 3 == 2 else "both"
        # every other run refreshes gold in a process of its own, which dies with the run
        lane = {"SHOPLAKE_PIPELINE__GOLD_REFRESH_PROCESS": str(len(killed) % 2 == 1).lower()}
        proc = subprocess.Popen(
            [*SHOPLAKE, "run", "--job", job],
            env={**env, **lane},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Kill when a step of the target kind is under way (or after a while regardless).
        give_up = time.monotonic() + 15
        while time.monotonic() < give_up:
            tail.poll()
            if target in tail.open_kinds(proc.pid):
                time.sleep(rng.uniform(0, 0.01))
                break
            if proc.poll() is not None:
                break
            time.sleep(0.002)
        if proc.poll() is not None:  # it must not have died by itself
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed.append(proc.pid)
        counts = interrupted_kinds(trace_path.read_text(), killed)
    assert producer.wait(timeout=120) == 0
    # Every kind of step was cut short by a SIGKILL at least once.
    assert all(counts.values()), counts

    run_to_idle(home)
    settings = Settings(home=home)
    assert assert_bronze_is_the_log(settings) == 24000

    # silver: each event id (each key: order items are keyed by event and line) once
    store = open_store(settings)
    for spec in SILVER_FROM_BRONZE:
        keys = store.open(spec).dataset().to_table(columns=list(spec.key))
        assert keys.num_rows == keys.group_by(list(spec.key)).aggregate([]).num_rows, spec

    # every table equals a clean, uninterrupted run over the same log
    assert_equals_a_clean_run(settings, tmp_path)
