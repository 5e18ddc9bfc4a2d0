"""GovernanceService CheckPermission against a real `agentplane serve`, on SQLite and PostgreSQL,
beside an echo gRPC server and the Cerbos policy decision point (bench/_cerbos.py, equivalent
policies) measured in the same run. Prints one JSON document.

    .venv/bin/python bench/bench_governance.py            # full run (60 s backlog run per backend)
    .venv/bin/python bench/bench_governance.py --quick    # smoke run
    .venv/bin/python bench/bench_governance.py --profile /tmp/prof   # also py-spy the server

Setup per backend: 1,000 registered agents (10 teams by label) and 100 policies (priorities,
agent selectors by id, glob and label, action and resource globs, 20 with CEL conditions over
the context and trust, some DENY). Requests go round-robin over 100 agents and 8 actions.

Latency: one call in flight, p50/p99 in microseconds. Throughput: `--concurrency` asyncio tasks
on one grpc.aio channel. Backlog: the decision-log queue (the server's
agentplane_governance_decision_log_backlog gauge) sampled every second while `--concurrency`
tasks call CheckPermission for `--backlog-seconds`; afterwards the server is stopped with
SIGTERM and the decision log rows are counted against the decisions the client received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import psycopg
from _cerbos import bench_cerbos
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
from google.protobuf import struct_pb2

from agentplane.governance.v1 import decision_pb2, policy_pb2
from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane.governance.v1 import governance_service_pb2_grpc as rpc
from agentplane.registry.v1 import agent_pb2
from agentplane.registry.v1 import registry_service_pb2 as registry_pb
from agentplane.registry.v1 import registry_service_pb2_grpc as registry_rpc

AGENTS = 1000
POLICIES = 100
ACTIONS = [
    "tool:db.query",
    "tool:db.write",
    "tool:http.get",
    "tool:search.web",
    "tool:mail.send",
    "tool:files.read",
    "tool:payments.refund",
    "llm:generate",
]
RESOURCES = ["db://prod/users", "db://staging/orders", "https://api.example.com/v1/x", ""]


def agent_id(i: int) -> str:
    return f"team{i % 10}:agent-{i:04d}"


def policies() -> list[policy_pb2.Policy]:
    out = []
    for i in range(POLICIES):
        kind = i % 10
        policy = policy_pb2.Policy(
            name=f"bench policy {i}",
            effect=policy_pb2.POLICY_EFFECT_DENY
            if kind in (3, 7)
            else policy_pb2.POLICY_EFFECT_ALLOW,
            priority=i % 7,
            actions=[f"tool:{['db', 'http', 'search', 'mail', 'files'][i % 5]}.*"],
        )
        if kind in (0, 1):
            policy.agents.labels["team"] = f"team{i % 10}"
        elif kind == 2:
            policy.agents.agent_id_patterns.append(f"team{i % 10}:*")
        elif kind == 4:
            policy.agents.agent_ids.extend(agent_id(j) for j in range(i, i + 20))
        if kind in (3, 5):
            policy.resources.append("db://prod/**")
        if kind in (6, 8):
            policy.condition = 'context.env == "prod" && trust.score >= 0.4'
        out.append(policy)
    out.append(
        policy_pb2.Policy(name="llm", effect=policy_pb2.POLICY_EFFECT_ALLOW, actions=["llm:*"])
    )
    return out


def requests() -> list[pb.CheckPermissionRequest]:
    context = struct_pb2.Struct()
    context.update({"env": "prod", "ticket": "T-1234", "user": {"id": "u-7", "tier": "gold"}})
    return [
        pb.CheckPermissionRequest(
            agent_id=agent_id(n % 100),
            action=ACTIONS[n % len(ACTIONS)],
            resource=RESOURCES[n % len(RESOURCES)],
            context=context,
        )
        for n in range(800)
    ]


async def setup(channel: grpc.aio.Channel, md: tuple) -> None:
    registry = registry_rpc.RegistryServiceStub(channel)
    governance = rpc.GovernanceServiceStub(channel)

    async def register(i: int) -> None:
        card = agent_pb2.AgentCard(
            name=f"agent {i}",
            version="1.0.0",
            labels={"team": f"team{i % 10}", "tier": "gold" if i % 3 == 0 else "std"},
            skills=[agent_pb2.AgentSkill(id=f"skill-{i % 20}", name="skill", tags=["bench"])],
            framework="langgraph",
            sdk_language="python",
        )
        lease = registry_pb.RegisterAgentRequest(agent_id=agent_id(i), card=card)
        lease.lease_duration.FromSeconds(3600)
        await registry.RegisterAgent(lease, metadata=md)

    for start in range(0, AGENTS, 50):
        await asyncio.gather(*(register(i) for i in range(start, min(AGENTS, start + 50))))
    for policy in policies():
        await governance.CreatePolicy(pb.CreatePolicyRequest(policy=policy), metadata=md)


def backlog_gauge(server: ServerProcess) -> float | None:
    try:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=2)
            .read()
            .decode()
        )
    except OSError:
        return None
    found = re.search(r"^agentplane_governance_decision_log_backlog\S* ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else None


def count_rows(server: ServerProcess) -> int:
    query = "SELECT count(*) FROM governance_decisions"
    if server.database_url is None:
        with sqlite3.connect(server.data_dir / "agentplane.db") as db:
            return db.execute(query).fetchone()[0]
    url = server.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as db:
        return db.execute(query).fetchone()[0]


async def bench_echo(args: argparse.Namespace, metadata: tuple) -> dict:
    payload = requests()[0].SerializeToString()
    echo = EchoServer()
    try:
        async with grpc.aio.insecure_channel(echo.address) as channel:
            call_echo = channel.unary_unary(ECHO_METHOD)

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


async def bench_server(args: argparse.Namespace, server: ServerProcess) -> dict:
    md = server.metadata()
    received = [0]
    result: dict = {"database": "sqlite" if server.database_url is None else "postgresql"}
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            began = time.monotonic()
            await setup(channel, md)
            result["setup_s"] = round(time.monotonic() - began, 1)
            governance = rpc.GovernanceServiceStub(channel)
            reqs = requests()
            decisions: dict[str, int] = {}

            async def check(i: int) -> object:
                reply = await governance.CheckPermission(reqs[i % len(reqs)], metadata=md)
                received[0] += 1
                decisions[reply.decision] = decisions.get(reply.decision, 0) + 1
                return reply

            cpu = CpuMeter(server.process.pid)
            result["check"] = {
                "latency": await latency(check, args.calls, args.warmup, cpu),
                "throughput": await throughput(
                    check, args.concurrency, args.seconds, cpu, args.ramp
                ),
            }
            # Backlog: sustained load while sampling the decision-log queue every second.
            samples: list[float] = []
            stop = asyncio.Event()

            async def sample() -> None:
                while not stop.is_set():
                    value = await asyncio.to_thread(backlog_gauge, server)
                    if value is not None:
                        samples.append(value)
                    try:
                        await asyncio.wait_for(stop.wait(), 1.0)
                    except TimeoutError:
                        pass

            sampler = asyncio.create_task(sample())
            sustained = await throughput(check, args.concurrency, args.backlog_seconds, cpu, 0)
            stop.set()
            await sampler
            third = max(1, len(samples) // 3)
            result["backlog"] = {
                "seconds": args.backlog_seconds,
                "calls_per_s": sustained["calls_per_s"],
                "errors": sustained["errors"],
                "samples": len(samples),
                "max": max(samples, default=None),
                "mean": round(statistics.fmean(samples), 1) if samples else None,
                "first_third_mean": round(statistics.fmean(samples[:third]), 1)
                if samples
                else None,
                "last_third_mean": round(statistics.fmean(samples[-third:]), 1)
                if samples
                else None,
                "series": samples,
            }
            result["decisions_by_outcome"] = {
                decision_pb2.Decision.Name(k): v for k, v in sorted(decisions.items())
            }
            if args.profile:
                result["profile"] = await profile(args, server, check)
    finally:
        server.stop()
    stored = count_rows(server)
    result["decision_log_after_sigterm"] = {
        "decisions_received_by_client": received[0],
        "rows_in_decision_log": stored,
        "exactly_once": stored == received[0],
    }
    return result


def start_spy(args: argparse.Namespace, pid: int, path: Path) -> subprocess.Popen:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    path.parent.mkdir(parents=True, exist_ok=True)
    duration = str(int(args.profile_seconds))
    command = [py_spy, "record", "--pid", str(pid), "-d", duration, "-r", "250", "--gil"]
    command += ["--format", "raw", "-o", str(path)]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def profile(args: argparse.Namespace, server: ServerProcess, check) -> dict:  # type: ignore[no-untyped-def]
    from _profile import summarise

    figures = {}
    for name, concurrency in (("check-c1", 1), ("check-c64", args.concurrency)):
        path = Path(args.profile) / f"{name}-{server.port}.collapsed"
        spy = start_spy(args, server.process.pid, path)
        await asyncio.sleep(0.5)
        await throughput(check, concurrency, args.profile_seconds, CpuMeter(None), 0)
        await asyncio.to_thread(spy.wait, 30)
        if path.exists():
            figures[name] = summarise(path)
    return figures


async def inprocess(calls: int) -> dict:
    """GovernanceLogic.check called directly (no gRPC, no interceptors) on the same policies,
    agents and requests: what the governance code itself costs per check."""
    import tempfile

    from agentplane_server.context import Principal, Role
    from agentplane_server.governance.decision_log import DecisionLog
    from agentplane_server.governance.logic import GovernanceLogic
    from agentplane_server.pagination import PageTokens
    from agentplane_server.registry.logic import RegistryLogic
    from agentplane_server.storage.db import Database, migrate

    folder = Path(tempfile.mkdtemp(prefix="bench-gov-"))
    url = f"sqlite+aiosqlite:///{folder / 'db.sqlite'}"
    await asyncio.to_thread(migrate, url)
    db = Database(url)
    shutdown = asyncio.Event()
    tokens = PageTokens(b"k" * 32)
    registry = RegistryLogic(db, tokens, removal_grace=300, poll_interval=1, shutdown=shutdown)
    log = DecisionLog(
        db, capacity=10**7, batch_size=1000, flush_interval=0.1, journal_dir=folder / "journal"
    )
    logic = GovernanceLogic(
        db, tokens, poll_interval=0.2, watch_poll_interval=0.5, decision_log=log, shutdown=shutdown
    )
    logic.start()
    who = Principal(project_id="default", role=Role.ADMIN, key_id="bench")
    try:
        for i in range(AGENTS):
            card = agent_pb2.AgentCard(
                name=f"agent {i}", version="1", labels={"team": f"team{i % 10}"}
            )
            await registry.register(
                who, registry_pb.RegisterAgentRequest(agent_id=agent_id(i), card=card)
            )
        for policy in policies():
            await logic.create_policy(who, pb.CreatePolicyRequest(policy=policy))
        reqs = requests()
        for i in range(200):
            await logic.check(who, reqs[i % len(reqs)])
        began = time.perf_counter()
        for i in range(calls):
            await logic.check(who, reqs[i % len(reqs)])
        per_call = (time.perf_counter() - began) / calls * 1e6
    finally:
        await logic.stop(10)
        await db.dispose()
    return {"calls": calls, "check_us_per_call": round(per_call, 1)}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, about a minute")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--backlog-seconds", type=float, default=None)
    parser.add_argument("--profile", metavar="DIR", help="py-spy the server after measuring")
    parser.add_argument("--profile-seconds", type=float, default=8)
    args = parser.parse_args()
    quick, full = (300, 50, 2.0, 0.5, 10.0), (3000, 300, 8.0, 1.0, 60.0)
    args.calls, args.warmup, args.seconds, args.ramp, backlog = quick if args.quick else full
    args.backlog_seconds = args.backlog_seconds or backlog

    began = time.monotonic()
    report: dict = {
        "bench": "governance",
        "mode": "quick" if args.quick else "full",
        "host": host_info(),
        "method": {
            "latency": f"{args.calls} calls after {args.warmup} warm-up, one in flight",
            "throughput": f"{args.concurrency} asyncio tasks on one grpc.aio channel, "
            f"{args.seconds} s after {args.ramp} s warm-up",
            "setup": f"{AGENTS} registered agents, {POLICIES + 1} policies (20 with CEL "
            "conditions), requests round-robin over 100 agents x 8 actions x 4 resources",
            "backlog": f"decision-log queue sampled every second during {args.backlog_seconds} s "
            f"at {args.concurrency} in flight; then SIGTERM and a row count",
            "server": "agentplane serve, defaults (1 worker, access log on), child process",
            "echo": "grpc.aio generic unary handler returning the request bytes, child process",
        },
    }
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    postgres = Postgres.find() if "postgres" in backends else None
    try:
        report["echo"] = await bench_echo(args, (("authorization", "Bearer x" * 4),))
        team_of = lambda agent: agent.split(":")[0]  # noqa: E731 - agent_id() is "teamN:..."
        report["cerbos"] = await bench_cerbos(args, policies(), requests(), team_of)
        report["governance_logic_in_process"] = await inprocess(2000 if args.quick else 20000)
        for backend in backends:
            url = postgres.create_database() if backend == "postgres" and postgres else None
            server = await asyncio.to_thread(ServerProcess, url)
            report[backend] = await bench_server(args, server)
    finally:
        if postgres:
            postgres.close()
    echo_p50 = report["echo"]["latency"]["p50_us"]
    echo_rate = report["echo"]["throughput"]["calls_per_s"]
    cerbos_p50 = report["cerbos"]["latency"]["p50_us"]
    cerbos_rate = report["cerbos"]["throughput"]["calls_per_s"]
    report["ratios"] = {
        backend: {
            "check_p50_over_echo_p50": ratio(
                report[backend]["check"]["latency"]["p50_us"], echo_p50
            ),
            "check_throughput_over_echo": ratio(
                report[backend]["check"]["throughput"]["calls_per_s"], echo_rate
            ),
            "check_p50_over_cerbos_p50": ratio(
                report[backend]["check"]["latency"]["p50_us"], cerbos_p50
            ),
            "check_throughput_over_cerbos": ratio(
                report[backend]["check"]["throughput"]["calls_per_s"], cerbos_rate
            ),
            "targets": "p50 ratio <= 1.5, throughput ratio >= 0.6, backlog flat",
        }
        for backend in backends
    }
    report["ratios"]["cerbos"] = {
        "cerbos_p50_over_echo_p50": ratio(cerbos_p50, echo_p50),
        "cerbos_throughput_over_echo": ratio(cerbos_rate, echo_rate),
    }
    report["wall_s"] = round(time.monotonic() - began, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
