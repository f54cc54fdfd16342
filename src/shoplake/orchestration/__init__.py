"""Orchestrators over the pipeline: Dagster (shoplake.orchestration.dagster)."""
