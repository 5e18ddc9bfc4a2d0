"""Agentplane server: one gRPC server for every Agentplane service."""

__version__ = "0.1.0"
