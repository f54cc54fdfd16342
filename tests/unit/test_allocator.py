"""A continuous run's memory: Arrow's buffers from the system allocator."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from shoplake import allocator
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import PipelineSettings, Settings


@pytest.fixture
def pool_restored() -> Iterator[str]:
    """pyarrow's own pool as the default (another test's run may have changed it),
    and the pool as it was after the test."""
    pool = pa.default_memory_pool()
    try:
        own = pa.mimalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without it
        own = pa.jemalloc_memory_pool()
    pa.set_memory_pool(own)
    yield own.backend_name
    pa.set_memory_pool(pool)


def test_a_continuous_run_allocates_arrow_from_the_system(
    tmp_path: Path, pool_restored: str
) -> None:
    pipeline = Pipeline(Settings(home=tmp_path))
    stop = threading.Event()
    stop.set()  # one look, then stop
    try:
        pipeline.run("both", stop=stop)
    finally:
        pipeline.close()
    assert pa.default_memory_pool().backend_name == "system"


def test_a_drain_keeps_pyarrows_pool(tmp_path: Path, pool_restored: str) -> None:
    pipeline = Pipeline(Settings(home=tmp_path))
    try:
        pipeline.run("both", until_idle=True)
    finally:
        pipeline.close()
    assert pa.default_memory_pool().backend_name == pool_restored


def test_the_settings_can_keep_pyarrows_pool(tmp_path: Path, pool_restored: str) -> None:
    settings = Settings(home=tmp_path, pipeline=PipelineSettings(arrow_memory_pool="default"))
    pipeline = Pipeline(settings)
    stop = threading.Event()
    stop.set()
    try:
        pipeline.run("both", stop=stop)
    finally:
        pipeline.close()
    assert pa.default_memory_pool().backend_name == pool_restored


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_heap_limit() -> None:
    assert allocator._limit_heaps(os.cpu_count() or 1)
