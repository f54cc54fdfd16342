"""The CLI's memory: Arrow's buffers from the C library's malloc, one heap a core."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shoplake import allocator

# A CLI command, then the pool Arrow allocates from and the environment children get.
_PROBE = """
import os
from click.testing import CliRunner
from shoplake.cli import cli
result = CliRunner().invoke(cli, ["schema"])
assert result.exit_code == 0, result.output
import pyarrow as pa
print(pa.default_memory_pool().backend_name, os.environ.get("MALLOC_ARENA_MAX"))
"""


def _cli_process(**env: str) -> list[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_ARENA_MAX")
        and not k.startswith("SHOPLAKE_")
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.split()


def test_the_cli_allocates_arrow_from_the_system_with_a_heap_a_core() -> None:
    assert _cli_process() == ["system", str(os.cpu_count() or 1)]


def test_the_settings_can_keep_pyarrows_own_pool() -> None:
    pool, heaps = _cli_process(SHOPLAKE_PIPELINE__ARROW_MEMORY_POOL="default")
    assert pool != "system" and heaps == "None"


def test_arrows_and_glibcs_own_variables_win() -> None:
    assert _cli_process(ARROW_DEFAULT_MEMORY_POOL="jemalloc", MALLOC_ARENA_MAX="4") == [
        "jemalloc",
        "4",
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_heap_limit() -> None:
    assert allocator._limit_heaps(os.cpu_count() or 1)
