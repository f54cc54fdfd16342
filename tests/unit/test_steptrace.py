"""The step trace: what a killed process was doing (crash tests) and how long each step
took (the benchmarks' breakdown of a round)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoplake.pipeline import steptrace


@pytest.fixture
def trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "trace"
    monkeypatch.setenv(steptrace.ENV, str(path))
    monkeypatch.delenv(steptrace.RUN_ENV, raising=False)
    monkeypatch.setattr(steptrace, "_fd", None)
    monkeypatch.setattr(steptrace, "_checked", False)
    yield path
    if steptrace._fd is not None:
        os.close(steptrace._fd)


def test_a_trace_says_which_steps_ran_how_long_and_which_never_ended(trace: Path) -> None:
    with steptrace.step("silver"), steptrace.step("silver parse"):
        time.sleep(0.05)
    with steptrace.step("gold.fct_sales_minute"):
        pass
    with pytest.raises(RuntimeError), steptrace.step("silver"), steptrace.step("silver append"):
        raise RuntimeError("killed")  # a step that raised did not complete, nor its part
    text = trace.read_text()
    assert steptrace.open_steps(text, os.getpid()) == ["silver", "silver append"]
    assert steptrace.open_steps(text, os.getpid() + 1) == []
    times = steptrace.step_times(text)
    names = [name for name, _, _ in times]
    assert names == ["silver", "silver parse", "gold.fct_sales_minute"]
    (_, silver_start, silver_took), (_, parse_start, parse_took), (_, gold_start, gold_took) = times
    assert 0.05 <= parse_took <= silver_took < 1
    assert silver_start <= parse_start
    assert 0 <= gold_took < silver_took
    assert gold_start >= silver_start + silver_took
