"""Apache Airflow for the tests, in a virtual environment of its own: its pins clash with
the project's (it would move FastAPI, among others). Built once from PyPI with Airflow and
shoplake's dependencies, cached under ~/.cache/shoplake (a new key when either changes);
shoplake itself comes from this checkout through PYTHONPATH."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.integration.kafka_broker import CACHE, REPO, cache_lock

AIRFLOW = "apache-airflow>=3.1,<4"


def airflow_venv() -> Path:
    """The environment's root; built (minutes, once) when missing."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    key = hashlib.sha1(json.dumps([AIRFLOW, deps, sys.version_info[:2]]).encode()).hexdigest()
    root = CACHE / f"airflow-{key[:12]}"
    with cache_lock(root.name):
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
            subprocess.run(
                [str(root / "bin" / "python"), "-m", "pip", "install", "-q", AIRFLOW, *deps],
                check=True, timeout=1800,
            )  # fmt: skip
            (root / ".complete").touch()
    return root


class Airflow:
    """`airflow` commands on a metadata database of their own (SQLite), with shoplake's
    DAGs folder, on a given shoplake home."""

    def __init__(self, venv: Path, home: Path) -> None:
        self.venv = venv
        self.home = home
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "src/shoplake/orchestration/airflow_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": str(REPO / "src"),
        }
        self.run("db", "migrate")

    def run(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.venv / "bin" / "airflow"), *args],
            env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done
