"""Transports: the durable log between the producers and bronze (embedded SQLite log or Kafka)."""

from __future__ import annotations

from shoplake.errors import ConfigError
from shoplake.settings import Settings
from shoplake.transport.base import OutgoingMessage, ReadBatch, TopicPartition, Transport

__all__ = ["OutgoingMessage", "ReadBatch", "TopicPartition", "Transport", "open_transport"]


def open_transport(settings: Settings, *, create: bool = True) -> Transport:
    """The transport the settings pick."""
    if settings.transport.kind == "embedded":
        from shoplake.transport.embedded import EmbeddedLog

        return EmbeddedLog.open(settings.log_path, settings, create=create)
    if settings.transport.kind == "kafka":
        from shoplake.transport.kafka import KafkaTransport

        return KafkaTransport(settings, create=create)
    raise ConfigError(f"unknown transport {settings.transport.kind!r}: use embedded or kafka")
