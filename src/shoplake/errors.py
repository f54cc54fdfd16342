"""One root exception for shoplake; its kind decides whether a caller retries.

Adapters translate library errors into these at their edge, so the rest of the
code (and the CLI's single error handler) never sees a delta-rs, DuckDB or SQLite
exception type.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    TRANSIENT = "transient"  # retrying the same call may succeed (busy lock, broker down)
    TERMINAL = "terminal"  # retrying will not help (bad input, bad config, missing table)


class ShoplakeError(Exception):
    """Root of every error shoplake raises on purpose."""

    kind: ErrorKind = ErrorKind.TERMINAL

    def __init__(self, message: str, *, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def transient(self) -> bool:
        return self.kind is ErrorKind.TRANSIENT


class ConfigError(ShoplakeError):
    """Settings or the home directory are unusable."""


class TransportError(ShoplakeError):
    """The transport (embedded log or Kafka) could not do what was asked."""

    kind = ErrorKind.TRANSIENT


class DamagedLog(TransportError):
    """A file of the embedded log is truncated or corrupt: retrying cannot help; the
    message names the file and what to do."""

    kind = ErrorKind.TERMINAL


class TableError(ShoplakeError):
    """A table is missing, unreadable, or a write to it failed."""


class DamagedTable(TableError):
    """A file of a table's log (a Delta commit) is truncated or corrupt; the message names
    it and what to do."""


class DiskFull(TableError):
    """No space left to write a table: retrying once space is freed succeeds, and
    nothing is lost meanwhile (a failed commit leaves the table as it was)."""

    kind = ErrorKind.TRANSIENT


class TableNotFound(TableError):
    """A table that was asked for does not exist (yet)."""


class CommitConflict(TableError):
    """Another writer committed the same positions first (a zombie worker was fenced)."""

    kind = ErrorKind.TRANSIENT


class QueryError(ShoplakeError):
    """A user's SQL failed: unknown table, syntax error, bad types."""


class InputError(ShoplakeError):
    """A user-supplied file or value is unusable."""
