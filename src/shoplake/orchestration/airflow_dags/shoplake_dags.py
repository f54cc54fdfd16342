"""shoplake's DAGs for Apache Airflow (point AIRFLOW__CORE__DAGS_FOLDER at this folder:
`shoplake airflow-dags` prints it). Streaming stays in `shoplake run --job ingestion`;
these DAGs run the batch side over the same home and settings (SHOPLAKE_HOME, ...):

- bronze_streams_raw, every 5 minutes: the ingestion workers keep up (the transport
  answers, bronze lags little); it fails naming the check and its figure when not;
- silver_jobs, every 5 minutes: silver up to bronze, then order_payments and the
  dimensions; it updates the asset shoplake://silver;
- gold, on each update of shoplake://silver: every gold table up to silver, then the
  checks that gold is fresh and reconciles with silver.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, Asset, task
except ImportError:  # Airflow 2.x: assets were datasets
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef]
    from airflow.decorators import task  # type: ignore[no-redef]

from shoplake.orchestration import steps

SILVER = Asset("shoplake://silver")
GOLD = Asset("shoplake://gold")
COMMON: dict[str, Any] = {
    "start_date": datetime(2026, 1, 1),
    "catchup": False,
    "max_active_runs": 1,
    "tags": ["shoplake"],
}

with DAG(
    "bronze_streams_raw",
    schedule=timedelta(minutes=5),
    description="The ingestion workers keep up with the transport.",
    **COMMON,
):

    @task
    def ingestion_health() -> dict[str, str]:
        return steps.ingestion_health()

    ingestion_health()

with DAG(
    "silver_jobs",
    schedule=timedelta(minutes=5),
    description="Silver, order_payments and the dimensions up to bronze.",
    **COMMON,
):

    @task(outlets=[SILVER])
    def silver() -> dict[str, Any]:
        return steps.silver_catch_up()

    silver()

with DAG(
    "gold",
    schedule=[SILVER],
    description="Every gold table up to silver, then gold's checks.",
    **COMMON,
):

    @task(outlets=[GOLD])
    def gold_tables() -> dict[str, Any]:
        return steps.gold_catch_up()

    @task
    def gold_checks() -> dict[str, str]:
        return steps.gold_checks()

    gold_tables() >> gold_checks()
