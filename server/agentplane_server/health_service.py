"""grpc.health.v1.Health with List.

grpcio-health-checking ships the List method in its generated stubs but its aio servicer does
not implement it (UNIMPLEMENTED up to 1.85 at least); List is a snapshot of the statuses the
servicer already keeps, so it is added here rather than replacing the library's Check/Watch.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2


class HealthServicer(health.aio.HealthServicer):
    """The library's aio servicer plus List (every service with a status, "" included)."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: object
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in list(self._server_status.items())
            }
        )
