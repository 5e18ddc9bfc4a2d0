"""Authentication overhead on a unary call, beside the same call without authentication.

Three servers on SQLite, each in its own process, measured in the same run:
- `api_key`: the server as shipped, the call carrying an API key;
- `jwt`: the server verifying an RS256 JWT against a JWKS key file;
- `no_auth`: the same server whose authenticator returns a fixed principal without looking
  at the call (built only here, for this comparison; the product has no such mode);
plus the echo baseline. The call is GetSession on one session. Prints one JSON document.

    .venv/bin/python bench/bench_auth.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import grpc
from _common import (
    ROOT,
    CpuMeter,
    EchoServer,
    ServerProcess,
    free_port,
    host_info,
    latency,
    throughput,
)

from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc


def serve_without_auth(listen: str, data_dir: str) -> None:
    """Child process: the real server, with authentication replaced by a fixed principal."""
    from agentplane_server import app
    from agentplane_server.config import Settings
    from agentplane_server.context import Principal, Role
    from agentplane_server.interceptors import auth

    fixed = Principal(project_id="default", role=Role.ADMIN, credential_project_id="default")

    async def authenticate(self, metadata, method, auth_context=None):  # type: ignore[no-untyped-def]
        return fixed

    auth.Authenticator.authenticate = authenticate  # type: ignore[method-assign]
    settings = Settings(
        listen=listen, data_dir=Path(data_dir), metrics_listen="", http_listen="", access_log=True
    )
    asyncio.run(app.prepare(settings))
    asyncio.run(app.serve_forever(settings))


class NoAuthServer(ServerProcess):
    """ServerProcess, started through serve_without_auth instead of `agentplane serve`."""

    def __init__(self) -> None:
        import subprocess

        self.data_dir = Path(tempfile.mkdtemp(prefix="agentplane-bench-noauth-"))
        self.database_url = None
        self.port = free_port()
        self.metrics_port = 0
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "server.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "serve-noauth", self.address, str(self.data_dir)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
        )
        self._channels = []
        self.wait_ready()
        self.admin_key = (self.data_dir / "admin.key").read_text().strip()


def jwt_server() -> tuple[ServerProcess, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_jwt import AUDIENCE, ISSUER, jwk, mint, rsa_key

    key = rsa_key()
    jwks = Path(tempfile.mkdtemp(prefix="agentplane-bench-jwks-")) / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(key, "k1")]}))
    server = ServerProcess(
        None,
        extra_args=(
            "--jwt-key-file",
            str(jwks),
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
        ),
    )
    token = mint(
        key, "k1", project_id="default", role="admin", agent_id=None, exp=int(time.time()) + 3600
    )
    return server, token


async def measure(address: str, token: str, args: argparse.Namespace, cpu: CpuMeter) -> dict:
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        sessions = rpc.SessionServiceStub(channel)
        created = await sessions.CreateSession(
            pb.CreateSessionRequest(title="bench"), metadata=metadata
        )
        request = pb.GetSessionRequest(session_id=created.session.session_id)

        async def call(_: int) -> object:
            return await sessions.GetSession(request, metadata=metadata)

        return {
            "latency_1_in_flight": await latency(call, args.calls, args.warmup, cpu),
            "throughput_64_in_flight": await throughput(call, 64, args.seconds, cpu),
        }


async def measure_echo(echo: EchoServer, args: argparse.Namespace) -> dict:
    payload = pb.GetSessionRequest(session_id="ses_0123456789abcdef0123").SerializeToString()
    cpu = CpuMeter(echo.process.pid)
    async with grpc.aio.insecure_channel(echo.address) as channel:
        method = channel.unary_unary("/bench.Echo/Echo")

        async def call(_: int) -> object:
            return await method(payload)

        return {
            "latency_1_in_flight": await latency(call, args.calls, args.warmup, cpu),
            "throughput_64_in_flight": await throughput(call, 64, args.seconds, cpu),
        }


async def main(args: argparse.Namespace) -> dict:
    echo = EchoServer()
    keyed = ServerProcess(None)
    unauthenticated = NoAuthServer()
    jwt, token = jwt_server()
    try:
        results = {"echo": await measure_echo(echo, args)}
        for name, server, credential in (
            ("no_auth", unauthenticated, "ignored"),
            ("api_key", keyed, keyed.admin_key),
            ("jwt", jwt, token),
        ):
            results[name] = await measure(
                server.address, credential, args, CpuMeter(server.process.pid)
            )
    finally:
        for server in (keyed, unauthenticated, jwt):
            server.stop()
        echo.stop()

    def p50(name: str) -> float:
        return results[name]["latency_1_in_flight"]["p50_us"]

    def rate(name: str) -> float:
        return results[name]["throughput_64_in_flight"]["calls_per_s"]

    return {
        "benchmark": "auth overhead on GetSession (SQLite)",
        "host": host_info(),
        "results": results,
        "overhead": {
            "api_key_p50_us": round(p50("api_key") - p50("no_auth"), 1),
            "jwt_p50_us": round(p50("jwt") - p50("no_auth"), 1),
            "api_key_throughput_ratio": round(rate("api_key") / rate("no_auth"), 3),
            "jwt_throughput_ratio": round(rate("jwt") / rate("no_auth"), 3),
            "api_key_server_cpu_us_per_call": round(
                results["api_key"]["throughput_64_in_flight"]["server_cpu_us_per_call"]
                - results["no_auth"]["throughput_64_in_flight"]["server_cpu_us_per_call"],
                1,
            ),
        },
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve-noauth":
        serve_without_auth(sys.argv[2], sys.argv[3])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    options = parser.parse_args()
    options.calls, options.warmup, options.seconds = (
        (300, 50, 2.0) if options.quick else (2000, 200, 5.0)
    )
    print(json.dumps(asyncio.run(main(options)), indent=2))
