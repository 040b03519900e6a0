"""Fault-injection harness: a stack of its own, scenarios that kill and restart its parts."""
