"""grpc.health.v1.Health/List, and the services GetServerInfo names all answer health checks."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentplane.admin.v1 import admin_service_pb2, admin_service_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def test_list_reports_every_service_and_matches_check(server) -> None:  # type: ignore[no-untyped-def]
    health = health_pb2_grpc.HealthStub(server.channel())
    listed = health.List(health_pb2.HealthListRequest(), timeout=5).statuses
    info = admin_service_pb2_grpc.AdminServiceStub(server.channel()).GetServerInfo(
        admin_service_pb2.GetServerInfoRequest(), metadata=server.metadata()
    )
    assert set(info.services) | {""} == set(listed)
    for service in info.services:
        # Check answers (no NOT_FOUND) for every service the server says it serves.
        checked = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert checked.status == listed[service].status, service
    assert listed["grpc.health.v1.Health"].status == SERVING
    assert listed["agentplane.session.v1.SessionService"].status == SERVING
    # This server has no Triton (an unused address): inference is listed as NOT_SERVING.
    assert (
        listed["agentplane.inference.v1.InferenceService"].status
        == health_pb2.HealthCheckResponse.NOT_SERVING
    )
