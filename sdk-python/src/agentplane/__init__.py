"""Agentplane Python SDK: the way agent containers use Agentplane.

    from agentplane import Agent, governed

    with Agent(agent_id="orders", name="Orders", version="1.0.0") as agent:
        @governed(action="tool:db.query", resource="db://prod/orders")
        def query(sql: str) -> list[dict]: ...

Layers: generated messages and stubs in ``agentplane.<service>.v1``; ``Client``/``AsyncClient``
with one typed sub-client per service (``sessions``, ``feedback``, ``traces``, ``registry``,
``governance``, ``inference``, ``admin``); helpers ``Agent``, ``governed``, ``configure_tracing``.
Without ``AGENTPLANE_URL`` everything runs in null mode: a logged no-op.
"""

__version__ = "0.1.0"

from agentplane._agent import Agent, AsyncAgent, build_card
from agentplane._client import AsyncClient, Client
from agentplane._config import ConnectConfig, TLSConfig
from agentplane._contract import CONTRACT_DIGEST, CONTRACT_VERSION
from agentplane._errors import (
    AbortedError,
    ActionDenied,
    AgentplaneError,
    AlreadyExistsError,
    ApprovalRequired,
    CancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    GovernanceError,
    GovernanceUnavailable,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    OutputRejected,
    PermissionDeniedError,
    ResourceExhaustedError,
    RpcError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)
from agentplane._governed import (
    AsyncGovernor,
    Decision,
    GovernedCall,
    Governor,
    governed,
    set_default_governor,
)
from agentplane._retry import NO_RETRY, RetryPolicy
from agentplane._tracing import (
    configure_tracing,
    current_session_id,
    current_trace_id,
    session_scope,
    session_span_processor,
)
from agentplane._transport import AsyncStream, SyncStream

__all__ = [
    "CONTRACT_DIGEST",
    "CONTRACT_VERSION",
    "NO_RETRY",
    "AbortedError",
    "ActionDenied",
    "Agent",
    "AgentplaneError",
    "AlreadyExistsError",
    "ApprovalRequired",
    "AsyncAgent",
    "AsyncClient",
    "AsyncGovernor",
    "AsyncStream",
    "CancelledError",
    "Client",
    "ConnectConfig",
    "DataLossError",
    "DeadlineExceededError",
    "Decision",
    "FailedPreconditionError",
    "FieldViolation",
    "GovernanceError",
    "GovernanceUnavailable",
    "GovernedCall",
    "Governor",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "OutputRejected",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RpcError",
    "SyncStream",
    "TLSConfig",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "__version__",
    "build_card",
    "configure_tracing",
    "current_session_id",
    "current_trace_id",
    "governed",
    "session_scope",
    "session_span_processor",
    "set_default_governor",
]
