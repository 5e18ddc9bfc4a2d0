"""Test servers ignore a Triton that happens to run on this machine (`make triton` on the default
port, or AGENTPLANE_TRITON_URL in the environment): every server gets its own unused address."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serverproc import ServerProcess, free_port
from tritonclient.grpc import service_pb2

INFERENCE = "agentplane.inference.v1.InferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def live_triton() -> Iterator[str]:
    """Something that answers Triton's ServerLive as a running Triton does (live=true): the
    probe the inference health check makes. A stand-in: only liveness is asked of it here."""
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ServerLive": grpc.unary_unary_rpc_method_handler(
                lambda request, context: service_pb2.ServerLiveResponse(live=True),
                request_deserializer=service_pb2.ServerLiveRequest.FromString,
                response_serializer=service_pb2.ServerLiveResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    yield address
    server.stop(None)


def inference_status(process: ServerProcess) -> int:
    with grpc.insecure_channel(process.address) as channel:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=INFERENCE), timeout=5)
            .status
        )


def test_a_running_triton_does_not_reach_test_servers(live_triton: str) -> None:
    # The control: told to, a server does find it (the stand-in is a live Triton to it).
    told = ServerProcess(None, extra_args=("--triton-url", live_triton))
    # As if `make triton` had left one running and the environment pointed at it.
    untold = ServerProcess(None, env={"AGENTPLANE_TRITON_URL": live_triton})
    try:
        deadline = time.monotonic() + 20
        while inference_status(told) != SERVING:
            assert time.monotonic() < deadline, "the control server never saw the stand-in"
            time.sleep(0.2)
        time.sleep(2.5)  # more than two health rounds of the other server (1 s apart)
        assert inference_status(untold) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert untold.triton_url != live_triton
        assert untold.triton_url != "127.0.0.1:8001"  # never the default
    finally:
        told.stop()
        untold.stop()
