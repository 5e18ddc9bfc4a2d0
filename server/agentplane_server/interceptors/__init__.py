"""The per-call pipeline every Agentplane RPC runs through.

Order, outermost first: request id -> metrics and access log -> error mapping ->
authentication and authorisation -> request validation -> servicer. One grpc.aio interceptor
composes the steps (each in its own module) so a call pays for one wrapper, not five.
"""

from agentplane_server.interceptors.pipeline import CallInterceptor

__all__ = ["CallInterceptor"]
