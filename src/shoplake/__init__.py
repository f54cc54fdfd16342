"""shoplake: real-time analytics for online shops — bronze / silver / gold tables in one process."""

__version__ = "0.1.0"
