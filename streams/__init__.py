"""Kafka topology, routing policy and the client SDK."""

from .client import Client, ClientNotStarted, ClientSettings, ResultTimeout
from .routing import route

__all__ = ["Client", "ClientNotStarted", "ClientSettings", "ResultTimeout", "route"]
