"""The live dashboard: one page at ``/`` and the data it shows under ``/api/``."""
