"""The server as operators see it: health, reflection, errors, request ids, logs, metrics,
traces, workers, and server info."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from rpcutil import expect_error, rich_error
from serverproc import free_port

import agentplane
from agentplane.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from agentplane.contract import contract_services
from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc

CONTRACT_SERVICES = [s.full_name for s in contract_services()]


def test_health_per_service(server) -> None:  # type: ignore[no-untyped-def]
    health = health_pb2_grpc.HealthStub(server.channel())
    status = {
        name: health.Check(health_pb2.HealthCheckRequest(service=name)).status
        for name in ["", *CONTRACT_SERVICES]
    }
    serving = health_pb2.HealthCheckResponse.SERVING
    assert all(status[name] == serving for name in status if "Inference" not in name)
    # Inference reports NOT_SERVING until it is served (it needs Triton).
    assert status["agentplane.inference.v1.InferenceService"] == (
        health_pb2.HealthCheckResponse.NOT_SERVING
    )
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
def test_reflection_v1alpha_and_v1(server, version: str) -> None:  # type: ignore[no-untyped-def]
    # v1 is wire-identical to v1alpha, so the v1alpha messages speak both.
    call = server.channel().stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    replies = list(
        call(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="agentplane.session.v1.SessionService"
                    ),
                ]
            )
        )
    )
    names = {s.name for s in replies[0].list_services_response.service}
    assert set(CONTRACT_SERVICES) <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto


async def test_an_rpc_without_a_servicer_answers_unimplemented(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every contract RPC is served today; this is what a server answers for one whose
    behaviour has not landed (the generated base servicer), through the real call pipeline."""
    from agentplane.feedback.v1 import feedback_service_pb2, feedback_service_pb2_grpc
    from agentplane_server.admin.bootstrap import bootstrap
    from agentplane_server.interceptors import CallInterceptor
    from agentplane_server.interceptors.auth import Authenticator
    from agentplane_server.interceptors.validation import RequestValidator
    from agentplane_server.storage.db import Database, migrate

    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    db = Database(url)
    await bootstrap(db, tmp_path / "admin.key")
    server = grpc.aio.server(
        interceptors=[CallInterceptor(Authenticator(db), RequestValidator(), access_log=False)]
    )
    feedback_service_pb2_grpc.add_FeedbackServiceServicer_to_server(
        feedback_service_pb2_grpc.FeedbackServiceServicer(), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = feedback_service_pb2_grpc.FeedbackServiceStub(channel)
            key = (tmp_path / "admin.key").read_text().strip()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListFeedback(
                    feedback_service_pb2.ListFeedbackRequest(),
                    metadata=(("authorization", f"Bearer {key}"),),
                )
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.UNIMPLEMENTED
        assert error.reason == "ERROR_REASON_NOT_IMPLEMENTED"
        assert "FeedbackService/ListFeedback" in error.message
        assert "not serve it yet" in error.message
    finally:
        await server.stop(0)
        await db.dispose()


def test_request_id_is_echoed_and_logged(server) -> None:  # type: ignore[no-untyped-def]
    sessions = rpc.SessionServiceStub(server.channel())
    _, call = sessions.CreateSession.with_call(
        pb.CreateSessionRequest(), metadata=server.metadata(**{"x-request-id": "trace-me-42"})
    )
    assert dict(call.trailing_metadata())["x-request-id"] == "trace-me-42"
    with pytest.raises(grpc.RpcError) as failed:
        sessions.GetSession(pb.GetSessionRequest(session_id="nope"), metadata=server.metadata())
    generated = rich_error(failed.value).request_id
    assert generated.startswith("req_")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
        access = {line.get("request_id"): line for line in lines if line.get("message") == "rpc"}
        if "trace-me-42" in access and generated in access:
            break
        time.sleep(0.1)
    assert access["trace-me-42"]["method"] == "CreateSession"
    assert access["trace-me-42"]["code"] == "OK"
    assert access[generated]["code"] == "NOT_FOUND"
    assert all("request_id" in line for line in lines)


def test_metrics_per_rpc(server) -> None:  # type: ignore[no-untyped-def]
    sessions = rpc.SessionServiceStub(server.channel())
    for _ in range(3):
        sessions.CreateSession(pb.CreateSessionRequest(), metadata=server.metadata())
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as reply:
        text = reply.read().decode()
    created = [
        line
        for line in text.splitlines()
        if line.startswith("agentplane_rpc_requests_total{")
        and 'method="CreateSession"' in line
        and 'code="OK"' in line
    ]
    assert created and float(created[0].rsplit(" ", 1)[1]) >= 3
    assert any(
        line.startswith("agentplane_rpc_duration_seconds_count{") and "CreateSession" in line
        for line in text.splitlines()
    )


def test_server_info_reports_the_contract(server) -> None:  # type: ignore[no-untyped-def]
    admin = admin_service_pb2_grpc.AdminServiceStub(server.channel())
    info = admin.GetServerInfo(admin_service_pb2.GetServerInfoRequest(), metadata=server.metadata())
    assert info.contract_version == agentplane.CONTRACT_VERSION
    assert info.contract_digest == agentplane.CONTRACT_DIGEST
    assert info.contract_digest.startswith("sha256:")
    assert set(CONTRACT_SERVICES) <= set(info.services)
    assert info.principal.project_id == "default"
    assert info.principal.key_id


def test_every_rpc_needs_credentials(server) -> None:  # type: ignore[no-untyped-def]
    sessions = rpc.SessionServiceStub(server.channel())
    for metadata, message in [
        ((), "missing credentials"),
        ((("authorization", "Basic abc"),), "malformed"),
        ((("authorization", "Bearer apk_not-a-real-key"),), "unknown or revoked"),
    ]:
        error = expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            sessions.ListSessions,
            pb.ListSessionsRequest(),
            metadata=metadata,
        )
        assert error.reason == "ERROR_REASON_UNAUTHENTICATED"
        assert message in error.message
    assert server.admin_key not in server.logs()


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[str] = []
        self.received = threading.Event()

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans += [span.name for span in scope_spans.spans]
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_server_spans_reach_an_otlp_collector(make_server, backend) -> None:  # type: ignore[no-untyped-def]
    if backend != "sqlite":
        pytest.skip("transport behaviour; the storage backend does not matter")
    collector = _Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port(f"127.0.0.1:{free_port()}")
    receiver.start()
    try:
        server = make_server(
            None,
            extra_args=("--otel-traces",),
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            },
        )
        rpc.SessionServiceStub(server.channel()).CreateSession(
            pb.CreateSessionRequest(), metadata=server.metadata()
        )
        wanted = "/agentplane.session.v1.SessionService/CreateSession"
        deadline = time.monotonic() + 15
        while wanted not in collector.spans and time.monotonic() < deadline:
            collector.received.wait(0.5)
        assert wanted in collector.spans, (collector.spans, server.logs())
    finally:
        receiver.stop(0)


def test_workers_share_the_port(make_server, backend) -> None:  # type: ignore[no-untyped-def]
    server = make_server(workers=2)
    instances = set()
    for _ in range(40):  # each new connection may land on either worker
        with grpc.insecure_channel(
            server.address, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            info = admin_service_pb2_grpc.AdminServiceStub(channel).GetServerInfo(
                admin_service_pb2.GetServerInfoRequest(), metadata=server.metadata()
            )
            instances.add(info.instance_id)
        if len(instances) == 2:
            break
    assert len(instances) == 2
    # Both workers write to the same store.
    sessions = rpc.SessionServiceStub(server.channel())
    created = sessions.CreateSession(pb.CreateSessionRequest(), metadata=server.metadata())
    assert (
        sessions.GetSession(
            pb.GetSessionRequest(session_id=created.session.session_id), metadata=server.metadata()
        ).session.session_id
        == created.session.session_id
    )
    assert server.stop() == 0
