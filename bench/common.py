"""Shared helpers for the benchmarks: cached simulated input, machine description."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "out"


def simulated_ndjson(events: int, seed: int = 42, bad_ratio: float = 0.0) -> Path:
    """An NDJSON file of ``events`` simulated events, generated once and cached in bench/out."""
    from shoplake.simulator import ShopSimulator

    OUT.mkdir(exist_ok=True)
    path = OUT / f"events-{events}-seed{seed}-bad{bad_ratio}.ndjson"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            stream = itertools.islice(ShopSimulator(seed, bad_ratio=bad_ratio).stream(), events)
            for chunk in iter(lambda: list(itertools.islice(stream, 50_000)), []):
                f.write(b"".join(e.value + b"\n" for e in chunk))
        tmp.rename(path)
    return path


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"{mem_gb:.0f} GiB RAM, Python {platform.python_version()}"
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def command() -> str:
    return " ".join([".venv/bin/python", *sys.argv])


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        result: dict[str, Any] = json.loads(r.read())
        return result


def wait_up(url: str, seconds: float = 60) -> None:
    """Until the server at ``url`` answers /healthz (a demo or gateway just started)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {seconds:.0f} s")


def own_rss_mb(pid: int) -> float:
    """The RSS of process ``pid`` alone (MiB), NaN when it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_pids(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (the demo's pipeline thread starts the
    gold refresh lane's process, not its main thread)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (its threads included), NaN
    when it is gone."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def measured_from(src: Path, script: str, *args: str) -> dict[str, Any]:
    """What ``script`` prints as JSON on its last line when run with ``args`` in a process
    importing shoplake from ``src`` (a checkout's src/ folder): one side of a comparison."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{Path(__file__).parent}"}
    out = subprocess.run(
        [sys.executable, script, *args], env=env, check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result
