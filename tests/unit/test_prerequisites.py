"""The one place that decides whether the Kafka and browser tests skip (outside CI) or
fail (under CI): CI detection and the reading of ``java -version``."""

from __future__ import annotations

import pytest

from tests import prerequisites
from tests.prerequisites import parse_java_version, require, under_ci


@pytest.mark.parametrize(
    ("value", "ci"),
    [
        (None, False),
        ("", False),
        ("  ", False),
        ("false", False),
        ("FALSE", False),
        ("False", False),
        ("0", False),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("woodpecker", True),  # some providers set their name
    ],
)
def test_ci_is_any_value_but_empty_false_or_0(value: str | None, ci: bool) -> None:
    env = {} if value is None else {"CI": value}
    assert under_ci(env) is ci


@pytest.mark.parametrize(
    ("output", "major"),
    [
        (
            'openjdk version "17.0.15" 2025-04-15\n'
            "OpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)\n",
            17,
        ),
        ('openjdk version "21" 2023-09-19\n', 21),
        ('java version "1.8.0_392"\nJava(TM) SE Runtime Environment\n', 8),
        ('openjdk version "11.0.22" 2024-01-16 LTS\n', 11),
        ('openjdk version "25-ea" 2025-09-16\n', 25),
        ('Picked up JAVA_TOOL_OPTIONS: -Xmx1g\nopenjdk version "17.0.2" 2022-01-18\n', 17),
        ("bash: java: command not found\n", None),
        ("", None),
    ],
)
def test_java_major_version_is_read_from_java_version_output(
    output: str, major: int | None
) -> None:
    assert parse_java_version(output) == major


def test_old_or_missing_java_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prerequisites.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(prerequisites, "java_version", lambda: 11)
    assert prerequisites.kafka_tools_problem() == "java is version 11, Kafka 4 needs 17+"
    monkeypatch.setattr(prerequisites, "java_version", lambda: None)
    assert "java is missing" in (prerequisites.kafka_tools_problem() or "")
    monkeypatch.setattr(prerequisites, "java_version", lambda: 17)
    assert prerequisites.kafka_tools_problem() is None
    monkeypatch.setattr(prerequisites.shutil, "which", lambda name: None)
    assert prerequisites.kafka_tools_problem() == "mvn (Maven) is missing"


def test_a_missing_tool_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcomes = (pytest.fail.Exception, pytest.skip.Exception)  # caught: neither may leak
    monkeypatch.setenv("CI", "1")
    with pytest.raises(outcomes) as failed:
        require("java is missing", "install Java 17+")
    assert failed.type is pytest.fail.Exception
    assert "CI is set but java is missing" in str(failed.value)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(outcomes) as skipped:
        require("java is missing", "install Java 17+")
    assert skipped.type is pytest.skip.Exception
    assert str(skipped.value) == "java is missing: install Java 17+ to run these tests"
    require(None, "nothing to install")  # nothing missing: neither
