"""GetSession and CheckPermission over the HTTP listener (Connect protocol, JSON) beside the same
calls over native gRPC and an echo gRPC server, measured in the same run against one real
`agentplane serve` (SQLite). Prints one JSON document.

    .venv/bin/python bench/bench_http.py            # full run, about 60 s
    .venv/bin/python bench/bench_http.py --quick    # smoke run, about 15 s

Latency: one call in flight, p50/p99 in microseconds. Throughput: `--concurrency` asyncio tasks
calling back to back; gRPC on one grpc.aio channel, Connect through connectrpc's async client
(its pooled HTTP/1.1 connections). `health_check_connect` is the HTTP floor: grpc.health Check
over Connect JSON, which skips the pipeline (no credentials, no database). The client is this
process; the servers are child processes; all share the host's cores (see "host").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import grpc
from _common import ECHO_METHOD, CpuMeter, EchoServer, ServerProcess, host_info, latency, throughput
from connectrpc.client import ConnectClient
from connectrpc.compat import google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from agentplane.governance.v1 import governance_service_pb2 as gov
from agentplane.governance.v1 import governance_service_pb2_grpc as gov_rpc
from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc


def method(service: str, name: str, request: type, response: type) -> MethodInfo:
    return MethodInfo(
        name=name,
        service_name=service,
        input=request,
        output=response,
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=StreamType.UNARY,
    )


GET_SESSION = method(
    "agentplane.session.v1.SessionService",
    "GetSession",
    pb.GetSessionRequest,
    pb.GetSessionResponse,
)
CHECK_PERMISSION = method(
    "agentplane.governance.v1.GovernanceService",
    "CheckPermission",
    gov.CheckPermissionRequest,
    gov.CheckPermissionResponse,
)
HEALTH_CHECK = method(
    "grpc.health.v1.Health",
    "Check",
    health_pb2.HealthCheckRequest,
    health_pb2.HealthCheckResponse,
)


def connect_call(
    client: ConnectClient, info: MethodInfo, request: Message, headers: dict[str, str]
) -> Callable[[int], Awaitable[object]]:
    async def call(i: int) -> object:
        try:
            return await client.execute_unary(request=request, method=info, headers=headers)
        except ConnectError as error:  # throughput() counts gRPC errors; raise as one
            raise grpc.aio.AioRpcError(
                grpc.StatusCode[error.code.name.replace("CANCELED", "CANCELLED")],
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                error.message,
            ) from error

    return call


async def measure(call: Callable, args: argparse.Namespace, cpu: CpuMeter) -> dict:
    return {
        "latency": await latency(call, args.calls, args.warmup, cpu),
        "throughput": await throughput(call, args.concurrency, args.seconds, cpu, args.ramp),
    }


async def bench_echo(args: argparse.Namespace, payload: bytes) -> dict:
    echo = EchoServer()
    try:
        async with grpc.aio.insecure_channel(echo.address) as channel:
            call_echo = channel.unary_unary(ECHO_METHOD)

            async def call(i: int) -> object:
                return await call_echo(payload)

            return {
                "payload_bytes": len(payload),
                **await measure(call, args, CpuMeter(echo.process.pid)),
            }
    finally:
        echo.stop()


async def bench_server(args: argparse.Namespace) -> dict:
    server = ServerProcess(None)
    try:
        md = server.metadata()
        headers = dict(md)
        cpu = CpuMeter(server.process.pid)
        async with (
            grpc.aio.insecure_channel(server.address) as channel,
            ConnectClient(
                server.http_url,
                codec=google_protobuf_json_codec(),
                send_compression=None,
                accept_compression=(),
            ) as client,
        ):
            sessions = rpc.SessionServiceStub(channel)
            governance = gov_rpc.GovernanceServiceStub(channel)
            created = await sessions.CreateSession(
                pb.CreateSessionRequest(title="bench"), metadata=md
            )
            get = pb.GetSessionRequest(session_id=created.session.session_id)
            check = gov.CheckPermissionRequest(
                agent_id="bench-agent", action="tool:orders.read", resource="db://orders"
            )

            async def get_grpc(i: int) -> object:
                return await sessions.GetSession(get, metadata=md)

            async def check_grpc(i: int) -> object:
                return await governance.CheckPermission(check, metadata=md)

            calls = {
                "get_session_grpc": get_grpc,
                "get_session_connect_json": connect_call(client, GET_SESSION, get, headers),
                "check_permission_grpc": check_grpc,
                "check_permission_connect_json": connect_call(
                    client, CHECK_PERMISSION, check, headers
                ),
                "health_check_connect_json": connect_call(
                    client, HEALTH_CHECK, health_pb2.HealthCheckRequest(), {}
                ),
            }
            figures = {name: await measure(call, args, cpu) for name, call in calls.items()}
            return {"database": "sqlite", "request_bytes": get.ByteSize(), **figures}
    finally:
        server.stop()


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, about 15 s")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    quick, full = (100, 20, 0.5, 0.3), (1000, 100, 3.0, 0.5)
    args.calls, args.warmup, args.seconds, args.ramp = quick if args.quick else full
    began = time.monotonic()
    echo = await bench_echo(
        args, pb.GetSessionRequest(session_id="ses_0123456789").SerializeToString()
    )
    server = await bench_server(args)

    def p50(name: str) -> float:
        return server[name]["latency"]["p50_us"]

    def rate(name: str) -> float:
        return server[name]["throughput"]["calls_per_s"]

    summary = {
        "echo_grpc": {
            "p50_us": echo["latency"]["p50_us"],
            "calls_per_s": echo["throughput"]["calls_per_s"],
        },
        **{
            name: {"p50_us": p50(name), "calls_per_s": rate(name)}
            for name in server
            if isinstance(server[name], dict)
        },
        "connect_vs_grpc_p50": {
            "get_session": ratio(p50("get_session_connect_json"), p50("get_session_grpc")),
            "check_permission": ratio(
                p50("check_permission_connect_json"), p50("check_permission_grpc")
            ),
        },
        "connect_vs_grpc_calls_per_s": {
            "get_session": ratio(rate("get_session_connect_json"), rate("get_session_grpc")),
            "check_permission": ratio(
                rate("check_permission_connect_json"), rate("check_permission_grpc")
            ),
        },
    }
    print(
        json.dumps(
            {
                "bench": "http",
                "server": "agentplane serve, defaults (1 worker, access log on), child process",
                "client": "this process: grpc.aio channel; connectrpc ConnectClient (JSON codec)",
                "summary": summary,
                "echo": echo,
                "server_figures": server,
                "params": {
                    "calls": args.calls,
                    "warmup": args.warmup,
                    "concurrency": args.concurrency,
                    "seconds": args.seconds,
                },
                "host": host_info(),
                "elapsed_s": round(time.monotonic() - began, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
