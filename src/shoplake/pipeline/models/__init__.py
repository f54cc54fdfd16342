"""SQL models, plain enough to run on DuckDB and Spark alike."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def load_model(name: str) -> str:
    """The SQL text of ``models/NAME.sql``."""
    return (files(__package__) / f"{name}.sql").read_text(encoding="utf-8")
