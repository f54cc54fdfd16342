"""Scratch directories a process names after its pid, and the ones a killed process left.

A process removes its own on the way out; one killed (``kill -9``, a crash) cannot, so the
next process that makes one of the same kind removes those whose pid is gone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def remove_orphans(root: Path, prefix: str) -> None:
    """Removes the directories ``<prefix><pid>`` or ``<prefix><pid>-…`` under ``root``
    whose process has ended."""
    for path in root.glob(f"{prefix}*"):
        pid = path.name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
