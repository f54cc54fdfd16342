"""The deployment files under deploy/ are valid for the tools that read them, and name
only what shoplake exports: Prometheus's scrape config and alert rules (promtool)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from shoplake.gateway.app import create_app
from shoplake.gateway.metrics import PipelineMetrics
from shoplake.pipeline.runner import Pipeline
from shoplake.settings import Settings
from shoplake.tables import open_store
from shoplake.transport import open_transport
from tests.prerequisites import require_promtool
from tests.unit.test_events import event

pytestmark = pytest.mark.integration

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_promtool(), *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS
    )


def test_promtool_accepts_the_config_and_the_rules() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # each alert fires on the series that should raise it, none on a healthy shop
    fired = promtool("test", "rules", "alerts_test.yml")
    assert fired.returncode == 0, fired.stdout + fired.stderr


def test_the_alerts_cover_lag_freshness_quarantine_and_5xx_on_exported_metrics(
    tmp_path: Path,
) -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "ShoplakeIngestionLag",
        "ShoplakeGoldStale",
        "ShoplakeQuarantineRateHigh",
        "ShoplakeGateway5xx",
    }
    named = {m for r in rules for m in re.findall(r"\bshoplake_\w+", r["expr"])}

    # /metrics of a gateway over a home with every table, with the pipeline's metrics
    settings = Settings(home=tmp_path / "home", gateway={"auth": False})
    transport = open_transport(settings)
    store = open_store(settings)
    registry = CollectorRegistry()
    try:
        client = TestClient(create_app(settings, transport, store=store, registry=registry))
        unknown = event("page_view", event_type="teleport")  # kept, silver quarantines it
        posted = client.post("/v1/events", json=[event("page_view"), event("purchase"), unknown])
        assert posted.status_code == 202
        PipelineMetrics(registry).stage("bronze", 2, 0.1)
        pipeline = Pipeline(settings)
        pipeline.run("both", until_idle=True)
        pipeline.close()
        client.post("/v1/events", json=[event("page_view", event_id="again")])
        text = client.get("/metrics").text
    finally:
        store.close()
        transport.close()
    assert 'shoplake_quarantined_records{reason="unknown_event_type"} 1.0' in text
    exported = set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))
    samples = set(re.findall(r"^(\w+)[{ ]", text, re.MULTILINE))
    for metric in named:
        assert metric in exported or metric in samples, f"{metric} is not in /metrics"
    # freshness reads a gold table's commit time
    assert 'shoplake_table_last_commit_timestamp_seconds{table="gold.fct_sales_minute"}' in text
