"""Kafka topology, routing policy and the client SDK."""

from .client import Client, ClientSettings, ResultTimeout
from .routing import route

__all__ = ["Client", "ClientSettings", "ResultTimeout", "route"]
