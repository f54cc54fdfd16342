"""An opt-in trace of the pipeline's steps, so a crash test can tell what a process was
doing when it was killed.

With ``SHOPLAKE_STEP_TRACE=FILE`` in the environment, every step (bronze ingest, silver,
each derived table's model, each table's compaction and vacuum; silver's parse, dedupe
and appends as steps within silver's) writes one line
``PID THREAD TIME start NAME`` before it and ``PID THREAD TIME end NAME`` after it (TIME:
the monotonic clock in seconds, shared by the run's processes), each with one
``write`` to FILE opened with O_APPEND (atomic for lines this short, no fsync: the kernel
keeps what a SIGKILLed process wrote). A step a killed process started and never ended
was interrupted by the kill (``open_steps``). PID is the run's: the gold refresh lane's
process (pipeline/refresher.py) dies with the run and traces its steps under the run's
PID (``RUN_ENV``), its THREAD qualified by its own. Unset, as it is outside tests, a step
costs one check of a module global. ``step_times`` reads how long each step took (the
benchmarks' breakdown of a round).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "SHOPLAKE_STEP_TRACE"
RUN_ENV = "SHOPLAKE_STEP_TRACE_RUN"  # set in a helper process: the PID of the run it serves

_fd: int | None = None
_checked = False
_lock = threading.Lock()


def _trace_fd() -> int | None:
    global _fd, _checked
    if not _checked:
        with _lock:
            if not _checked:
                path = os.environ.get(ENV)
                if path:
                    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _checked = True
    return _fd


@contextmanager
def step(name: str) -> Iterator[None]:
    """Trace ``name`` as started, and as ended once the block completes (not on error:
    a step that raised did not complete either)."""
    fd = _trace_fd()
    if fd is None:
        yield
        return
    run = os.environ.get(RUN_ENV)
    thread = threading.get_ident()
    prefix = f"{run} {os.getpid()}.{thread}" if run else f"{os.getpid()} {thread}"
    os.write(fd, f"{prefix} {time.monotonic():.6f} start {name}\n".encode())
    yield
    os.write(fd, f"{prefix} {time.monotonic():.6f} end {name}\n".encode())


def parse_line(line: str) -> tuple[str, str, str, str, str] | None:
    """A trace line as (pid, thread, time, event, name); None for a line cut short."""
    parts = line.split(" ", 4)
    return (parts[0], parts[1], parts[2], parts[3], parts[4]) if len(parts) == 5 else None


def open_steps(trace: str, pid: int) -> list[str]:
    """The steps process ``pid`` had started and not ended in ``trace`` (the file's text):
    after a SIGKILL, what the kill interrupted (per thread, a step and the parts of it
    that were running: silver's parse within silver)."""
    running: dict[str, list[str]] = {}  # thread → the steps open, innermost last
    for parsed in map(parse_line, trace.splitlines()):
        if parsed is None or parsed[0] != str(pid):
            continue
        _, thread, _, event, name = parsed
        stack = running.setdefault(thread, [])
        if event == "start":
            stack.append(name)
        elif event == "end" and stack and stack[-1] == name:
            stack.pop()
    return sorted(name for stack in running.values() for name in stack)


def step_times(trace: str) -> list[tuple[str, float, float]]:
    """Every completed step in ``trace`` as (name, start, seconds), in order of start."""
    started: dict[tuple[str, str, str], float] = {}  # (pid, thread, step) → start
    done: list[tuple[str, float, float]] = []
    for parsed in map(parse_line, trace.splitlines()):
        if parsed is None:
            continue
        pid, thread, at, event, name = parsed
        if event == "start":
            started[(pid, thread, name)] = float(at)
        elif event == "end" and (pid, thread, name) in started:
            begun = started.pop((pid, thread, name))
            done.append((name, begun, float(at) - begun))
    return sorted(done, key=lambda d: d[1])
