"""Agentplane Python SDK.

Generated messages and stubs live in ``agentplane.<service>.v1``; the contract version they were
generated from is in ``agentplane._contract``.
"""

from agentplane._contract import CONTRACT_DIGEST, CONTRACT_VERSION

__all__ = ["CONTRACT_DIGEST", "CONTRACT_VERSION"]
