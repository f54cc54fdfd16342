"""Where a shoplake process's memory comes from, so that what a pass frees goes back.

A continuous run allocates and frees large Arrow buffers every pass (a day's rows read,
aggregated, dropped). Measured in the demo at 5k events/s (docs/benchmarks.md,
"allocators"): pyarrow's bundled mimalloc kept ~290 MB more resident than the C
library's malloc; glibc's malloc in turn kept ~70 MB less (peaks ~150 MB lower) with as
many heaps as cores rather than its default of eight a core, since every thread that
allocates under contention gets a heap of its own, which freed chunks stay in. Trimming
the heaps every 5 s (``malloc_trim``) gave back nothing more.

Both are read once, when a library starts: Arrow's pool when pyarrow loads, glibc's
limit when a process starts. So the CLI chooses before it imports pyarrow (no command
module does at import), and through the environment for the processes it starts.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoplake.settings import PipelineSettings

_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def choose_allocators(settings: PipelineSettings) -> None:
    """With ``arrow_memory_pool`` "system": Arrow's buffers from the C library's malloc
    (unless ARROW_DEFAULT_MEMORY_POOL names a pool already) and glibc's malloc with at
    most one heap a core (unless MALLOC_ARENA_MAX says otherwise), in this process and
    those it starts."""
    if settings.arrow_memory_pool != "system":
        return
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    os.environ.setdefault("MALLOC_ARENA_MAX", str(os.cpu_count() or 1))
    if "pyarrow" in sys.modules:  # loaded already (an embedding program): from now on
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    heaps = os.environ["MALLOC_ARENA_MAX"]
    if heaps.isdigit():
        _limit_heaps(int(heaps))  # this process's glibc has read the environment already


def _limit_heaps(heaps: int) -> bool:
    """At most ``heaps`` malloc heaps in this process (glibc; heaps made already stay).
    False where the C library has no such knob (musl, macOS)."""
    try:  # the C library this process runs on (find_library would spawn ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, heaps) == 1)
