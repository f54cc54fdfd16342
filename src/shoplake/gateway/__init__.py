"""The HTTP gateway shops send events to (FastAPI)."""
