"""The event contract (what shops send) and the table schemas (what shoplake writes)."""
