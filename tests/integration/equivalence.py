"""What every crash and fault test demands of a home once its pipeline has caught up:
bronze holds the log, record for record, and every table equals a clean run's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from shoplake.contract.tables import QUARANTINE, RAW_EVENTS, TableSpec
from shoplake.pipeline.reconcile import VOLATILE, current_gold, recomputed_gold
from shoplake.pipeline.silver import SILVER_FROM_BRONZE
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport import open_transport
from tests.conftest import SHOPLAKE


def run_to_idle(home: Path, env: dict[str, str] | None = None) -> None:
    """`shoplake run --until-idle` on ``home``; it must succeed."""
    proc = subprocess.run(
        [*SHOPLAKE, "run", "--until-idle"],
        env={**os.environ, **(env or {}), "SHOPLAKE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr


def table_rows(settings: Settings, spec: TableSpec, columns: list[str]) -> list[tuple[Any, ...]]:
    store = open_store(settings)
    try:
        table = store.open(spec).dataset().to_table(columns=columns)
    finally:
        store.close()
    return sorted(zip(*(table[c].to_pylist() for c in columns), strict=True))


def assert_bronze_is_the_log(settings: Settings) -> int:
    """Every record of the log is in bronze exactly once (by lineage), byte for byte;
    returns how many the log holds."""
    log = open_transport(settings)
    try:
        ends = log.end_offsets()
        appended = log.read(dict.fromkeys(ends, 0), 10**9).records
    finally:
        log.close()
    assert appended.num_rows == sum(ends.values())
    bronze = table_rows(settings, RAW_EVENTS, ["topic", "partition", "offset", "raw_value"])
    assert len({(t, p, o) for t, p, o, _ in bronze}) == len(bronze), "a record twice in bronze"
    expected = sorted(
        zip(
            appended["topic"].to_pylist(),
            appended["partition"].to_pylist(),
            appended["offset"].to_pylist(),
            [v.decode("utf-8", "backslashreplace") for v in appended["value"].to_pylist()],
            strict=True,
        )
    )
    assert bronze == expected
    return int(appended.num_rows)


def assert_equals_a_clean_run(settings: Settings, workdir: Path) -> None:
    """Silver, quarantine and every derived table equal those of an uninterrupted run over
    a copy of the same log, and the derived tables equal a from-scratch recomputation."""
    clean_home = workdir / "clean"
    (clean_home / "transport").mkdir(parents=True)
    shutil.copy(settings.log_path, clean_home / "transport" / "log.sqlite")
    run_to_idle(clean_home)
    assert_same_tables(settings, Settings(home=clean_home))


def assert_same_tables(settings: Settings, clean: Settings) -> None:
    """Silver, quarantine and every derived table of ``settings``'s home equal those of
    ``clean``'s, and its derived tables equal a from-scratch recomputation."""
    for spec in (spec for spec in SILVER_FROM_BRONZE if spec is not QUARANTINE):
        cols = [c for c in spec.schema.names if c not in VOLATILE]  # processed_ts differs
        assert table_rows(settings, spec, cols) == table_rows(clean, spec, cols), spec.qualified
    q_cols = ["topic", "partition", "offset", "reason", "detail"]
    assert table_rows(settings, QUARANTINE, q_cols) == table_rows(clean, QUARANTINE, q_cols)
    store, clean_store = open_store(settings), open_store(clean)
    try:
        assert current_gold(store) == current_gold(clean_store)
        assert current_gold(store) == recomputed_gold(store, settings.reporting)
    finally:
        store.close()
        clean_store.close()
