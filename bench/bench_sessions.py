"""SessionService AppendMessages and GetSession against a real `agentplane serve`, on SQLite and
PostgreSQL, beside an echo gRPC server measured in the same run. Prints one JSON document.

    .venv/bin/python bench/bench_sessions.py            # full run, about 50-90 s
    .venv/bin/python bench/bench_sessions.py --quick    # smoke run, about 15 s
    .venv/bin/python bench/bench_sessions.py --profile /tmp/prof   # + py-spy (the dev extra)

Latency: one call in flight, p50/p99 in microseconds. Throughput: `--concurrency` asyncio tasks
on one grpc.aio channel calling back to back. The client is this process; each server is a
child process; all share the host's cores (see "host" in the output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import protovalidate
from _common import (
    ECHO_METHOD,
    CpuMeter,
    EchoServer,
    Postgres,
    ServerProcess,
    host_info,
    latency,
    throughput,
)
from _profile import summarise

from agentplane.session.v1 import session_pb2
from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc

CONTENT_BYTES = 200
SESSIONS = 8


def append_request(session_id: str, i: int) -> pb.AppendMessagesRequest:
    text = f"message {i:08d} "
    return pb.AppendMessagesRequest(
        session_id=session_id,
        messages=[
            pb.MessageInput(
                role=session_pb2.ROLE_USER,
                content=(text * (CONTENT_BYTES // len(text) + 1))[:CONTENT_BYTES],
                agent_id="bench-agent",
            )
        ],
    )


def validation_cost(calls: int) -> dict[str, float]:
    """protovalidate in this process on the requests the bench sends: what the server's
    validation interceptor spends before any servicer runs (single-threaded, no I/O)."""
    validator = protovalidate.Validator()
    figures = {}
    for name, request in (
        ("append_request_us", append_request("ses_0123456789", 0)),
        ("get_request_us", pb.GetSessionRequest(session_id="ses_0123456789")),
    ):
        for _ in range(5):
            validator.collect_violations(request)
        start = time.perf_counter()
        for _ in range(calls):
            validator.collect_violations(request)
        figures[name] = round((time.perf_counter() - start) / calls * 1e6, 1)
    return figures


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


async def bench_echo(args: argparse.Namespace, metadata: tuple) -> dict:
    payload = append_request("bench-session-0", 0).SerializeToString()
    echo = EchoServer()
    try:
        async with grpc.aio.insecure_channel(echo.address) as channel:
            call_echo = channel.unary_unary(ECHO_METHOD)  # bytes in, bytes out

            async def call(i: int) -> object:
                return await call_echo(payload, metadata=metadata)

            cpu = CpuMeter(echo.process.pid)
            return {
                "payload_bytes": len(payload),
                "latency": await latency(call, args.calls, args.warmup, cpu),
                "throughput": await throughput(
                    call, args.concurrency, args.seconds, cpu, args.ramp
                ),
            }
    finally:
        echo.stop()


def start_profile(args: argparse.Namespace, pid: int, name: str) -> subprocess.Popen | None:
    if not args.profile:
        return None
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    duration = str(int(args.profile_seconds))
    # --gil: only samples where a thread holds the GIL, i.e. where the Python CPU time goes.
    common = [py_spy, "record", "--pid", str(pid), "-d", duration, "-r", "250", "--gil"]
    return subprocess.Popen(
        [*common, "--format", "raw", "-o", str(out / f"{name}.collapsed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def bench_server(args: argparse.Namespace, backend: str, server: ServerProcess) -> dict:
    try:
        md = server.metadata()
        async with grpc.aio.insecure_channel(server.address) as channel:
            sessions = rpc.SessionServiceStub(channel)
            ids = [
                (
                    await sessions.CreateSession(
                        pb.CreateSessionRequest(title=f"bench {n}"), metadata=md
                    )
                ).session.session_id
                for n in range(SESSIONS)
            ]
            requests = [append_request(ids[n % SESSIONS], n) for n in range(SESSIONS * 4)]
            get_request = pb.GetSessionRequest(session_id=ids[0])

            async def append(i: int) -> object:
                return await sessions.AppendMessages(requests[i % len(requests)], metadata=md)

            async def get(i: int) -> object:
                return await sessions.GetSession(get_request, metadata=md)

            cpu = CpuMeter(server.process.pid)
            result = {
                "database": "sqlite" if server.database_url is None else "postgresql",
                "sessions": SESSIONS,
                "request_bytes": requests[0].ByteSize(),
                "append": {
                    "latency": await latency(append, args.calls, args.warmup, cpu),
                    "throughput": await throughput(
                        append, args.concurrency, args.seconds, cpu, args.ramp
                    ),
                },
                "get": {
                    "latency": await latency(get, args.calls, args.warmup, cpu),
                    "throughput": await throughput(
                        get, args.concurrency, args.seconds, cpu, args.ramp
                    ),
                },
            }
            if args.profile:  # after the measured phases, so py-spy does not perturb them
                result["profile"] = {}
                for name, call, concurrency in (
                    ("append-c1", append, 1),
                    ("append-c64", append, args.concurrency),
                    ("get-c1", get, 1),
                ):
                    spy = start_profile(args, server.process.pid, f"{backend}-{name}")
                    await asyncio.sleep(0.5)
                    await throughput(call, concurrency, args.profile_seconds, cpu, 0)
                    if spy is not None:
                        spy.wait(30)
                        collapsed = Path(args.profile) / f"{backend}-{name}.collapsed"
                        if collapsed.exists():
                            result["profile"][name] = summarise(collapsed)
            return result
    finally:
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, about 15 s")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy the server after measuring; collapsed stacks in DIR",
    )
    parser.add_argument("--profile-seconds", type=float, default=8)
    args = parser.parse_args()
    quick, full = (100, 20, 0.5, 0.3), (1500, 150, 4.0, 0.5)
    args.calls, args.warmup, args.seconds, args.ramp = quick if args.quick else full

    began = time.monotonic()
    metadata = (("authorization", "Bearer 0123456789abcdef0123456789abcdef"),)
    report: dict = {
        "bench": "sessions",
        "mode": "quick" if args.quick else "full",
        "host": host_info(),
        "method": {
            "latency": f"{args.calls} calls after {args.warmup} warm-up, one in flight",
            "throughput": f"{args.concurrency} asyncio tasks on one grpc.aio channel, "
            f"{args.seconds} s after {args.ramp} s warm-up",
            "append": f"1 message of {CONTENT_BYTES} bytes content per call, "
            f"round-robin over {SESSIONS} sessions",
            "get": "GetSession of one session",
            "server": "agentplane serve, defaults (1 worker, access log on), child process",
            "echo": "grpc.aio generic unary handler returning the request bytes, child process",
        },
    }
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    postgres = Postgres.find() if "postgres" in backends else None
    servers: dict[str, ServerProcess] = {}
    try:
        # Start every server up front, side by side (each waits idle until its turn).
        urls = {
            b: postgres.create_database() if b == "postgres" and postgres else None
            for b in backends
        }
        started = await asyncio.gather(
            *(asyncio.to_thread(ServerProcess, urls[b]) for b in backends), return_exceptions=True
        )
        for backend, server in zip(backends, started, strict=True):
            if isinstance(server, ServerProcess):
                servers[backend] = server
        for server in started:
            if isinstance(server, BaseException):
                raise server
        report["echo"] = await bench_echo(args, metadata)
        report["protovalidate_in_process"] = validation_cost(30 if args.quick else 150)
        for backend in backends:
            report[backend] = await bench_server(args, backend, servers[backend])
    finally:
        for server in servers.values():
            if server.process.poll() is None:
                server.stop()
        if postgres:
            postgres.close()

    echo_p50 = report["echo"]["latency"]["p50_us"]
    echo_rate = report["echo"]["throughput"]["calls_per_s"]
    report["ratios"] = {
        backend: {
            "append_p50_over_echo_p50": ratio(
                report[backend]["append"]["latency"]["p50_us"], echo_p50
            ),
            "get_p50_over_echo_p50": ratio(report[backend]["get"]["latency"]["p50_us"], echo_p50),
            "append_throughput_over_echo": ratio(
                report[backend]["append"]["throughput"]["calls_per_s"], echo_rate
            ),
            "get_throughput_over_echo": ratio(
                report[backend]["get"]["throughput"]["calls_per_s"], echo_rate
            ),
        }
        for backend in backends
    }
    report["wall_s"] = round(time.monotonic() - began, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
