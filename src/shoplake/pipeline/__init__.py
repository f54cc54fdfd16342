"""The pipeline: ingest (transport → bronze), process (bronze → silver), models (→ gold)."""
