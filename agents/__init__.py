"""Agents wire Kafka topics to the pure domain functions in ``supplyflow.tables``."""

from supplyflow.agents.ingest import Accepted, EntityHandler, register_input_agent

__all__ = ["Accepted", "EntityHandler", "register_input_agent"]
