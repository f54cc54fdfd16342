"""Compute engines: DuckDB in process (default); Spark comes as a lazy-imported adapter."""
