"""/metrics carries what the pipeline measures, and the Grafana dashboard uses exactly
those names."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from shoplake.gateway.app import create_app
from shoplake.gateway.metrics import PipelineMetrics
from shoplake.pipeline.runner import Pipeline
from shoplake.pipeline.silver import SILVER_FROM_BRONZE
from shoplake.settings import Settings
from shoplake.simulator import ShopSimulator
from shoplake.tables import TableStore, open_store
from shoplake.transport import open_transport

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"


def test_metrics_after_a_run_and_the_grafana_names(settings: Settings) -> None:
    # runs of 256 ids or more of the dedupe index go to files
    spill = settings.pipeline.model_copy(update={"dedupe_spill_mib": 256 * 16 / 2**20})
    settings = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"auth": False}), "pipeline": spill}
    )
    transport, store = open_transport(settings), open_store(settings)
    registry = CollectorRegistry()
    measured = PipelineMetrics(registry)
    client = TestClient(create_app(settings, transport, store=store, registry=registry))
    lines = [e.value for e in itertools.islice(ShopSimulator(3, bad_ratio=0.05).stream(), 3000)]
    body = b"\n".join(lines)
    r = client.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 202
    pipeline = Pipeline(settings)
    pipeline.observer = measured
    pipeline.run("both", until_idle=True)
    pipeline.close()

    text = client.get("/metrics").text
    base = lambda name: re.sub(r"_(total|bucket|count|sum)$", "", name)  # noqa: E731
    families = {base(n) for n in re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE)}
    value = lambda name: float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]  # noqa: E731
    assert value("shoplake_events_accepted_total") == r.json()["accepted"]
    assert value('shoplake_stage_rows_total{stage="bronze"}') == r.json()["accepted"]
    assert value("shoplake_end_to_end_latency_seconds_count") > 0  # orders reached gold
    # silver's dedupe index holds the id of each row it wrote to a table keyed by event id
    assert value("shoplake_dedupe_index_ids") == silver_rows_keyed_by_event(store)
    held = measured.memory()
    assert held["dedupe_index_ids"] == value("shoplake_dedupe_index_ids")
    in_files = value("shoplake_dedupe_index_file_ids")
    assert 0 < in_files < held["dedupe_index_ids"]
    on_heap = held["dedupe_index_ids"] - in_files
    assert held["dedupe_index_memory_mib"] == round(on_heap * 16 / 2**20, 1)
    assert held["dedupe_index_file_mib"] == round(in_files * 16 / 2**20, 1)
    assert 'shoplake_table_version{table="gold.fct_sales_minute"}' in text
    assert 'shoplake_transport_lag_records{partition="0",topic="purchases"} 0.0' in text

    dashboard = json.loads((GRAFANA / "shoplake.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {base(n) for e in exprs for n in re.findall(r"shoplake_\w+", e)}
    assert used and used <= families, used - families
    store.close()
    transport.close()


def silver_rows_keyed_by_event(store: TableStore) -> int:
    """Rows of the silver tables keyed by event id (what dedupe indexes)."""
    keyed = [spec for spec in SILVER_FROM_BRONZE if "event_id" in spec.key]
    return sum(store.open(spec).scan(["event_id"]).num_rows for spec in keyed)
