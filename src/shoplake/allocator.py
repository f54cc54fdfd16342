"""Where a long-running process's memory comes from, so that what a pass frees goes back.

A continuous run allocates and frees large Arrow buffers every pass (a day's rows read,
aggregated, dropped). Measured in the demo at 5k events/s (docs/benchmarks.md,
"allocators"): pyarrow's bundled mimalloc kept ~290 MB more resident than the C
library's malloc; glibc's malloc, in turn, kept ~70 MB less (and peaks ~150 MB lower)
with as many heaps as cores rather than its default of eight per core, since every
thread that allocates under contention gets a heap of its own that freed chunks stay
in. Trimming the heaps every 5 s (``malloc_trim``) gave back nothing more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from shoplake.settings import PipelineSettings

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def hold_memory_down(settings: PipelineSettings) -> None:
    """Arrow's allocations from here on come from the pool the settings name ("system":
    the C library's malloc; "default": what pyarrow picks; buffers allocated before stay
    with their pool), and glibc's malloc keeps at most one heap a core."""
    if settings.arrow_memory_pool == "system":
        pa.set_memory_pool(pa.system_memory_pool())
        _limit_heaps(os.cpu_count() or 1)
    log.debug("Arrow allocates from %s", pa.default_memory_pool().backend_name)


def _limit_heaps(heaps: int) -> bool:
    """At most ``heaps`` malloc heaps (glibc; heaps made already stay). False where the
    C library has no such knob (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt is not None and mallopt(_M_ARENA_MAX, heaps) == 1)
