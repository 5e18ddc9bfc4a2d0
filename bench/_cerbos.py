"""The Cerbos policy decision point as a baseline of bench_governance.py, measured in the same
run through the same Python grpc.aio client as echo and CheckPermission.

Cerbos (Go) comes from npm (`cd bench/cerbos && npm ci`: the `cerbos` package brings the
binary, @cerbos/cerbos-<os>-<arch>); its Python protos and stubs from PyPI `cerbos`
(bench/requirements.txt). Both are installed by `make bench`.

Equivalent policies: Cerbos has no priorities (any matching DENY wins), so the bench's policy
set is compiled into one resource policy whose rules are mutually exclusive: for each action,
the Agentplane policies matching it in deciding order (priority, then DENY first), and rule k
fires when policy k matches and no earlier policy of the other effect does (so a DENY fires
only when it would decide, and an ALLOW is overruled only by a DENY that would). Agent selectors
become conditions on the principal (its id and the team label), resource globs on the
resource's `path` attribute; the request context becomes resource attributes and the trust
score a principal attribute (the default baseline, 0.5: the bench's agents have no trust
events), and the CEL condition is rewritten onto them. No match: Cerbos's default, DENY, as the
project's default decision. The agreement check runs every distinct request of the bench
through Cerbos and through the server's own decision function (agentplane_server.governance
.evaluate: the shared rule with the server's CEL engine) in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from _common import CpuMeter, free_port, latency, throughput
from cerbos.effect.v1 import effect_pb2
from cerbos.engine.v1 import engine_pb2
from cerbos.request.v1 import request_pb2
from cerbos.svc.v1 import svc_pb2_grpc
from google.protobuf import json_format, struct_pb2

from agentplane.decision import DENY, EFFECT_RANK, compile_glob
from agentplane.governance.v1 import decision_pb2, policy_pb2
from agentplane.governance.v1 import governance_service_pb2 as pb

HERE = Path(__file__).resolve().parent
TRUST = 0.5  # the default trust baseline: the score of an agent without trust events
KIND = "agent_action"
CONDITION = 'context.env == "prod" && trust.score >= 0.4'  # the bench's one CEL condition
CERBOS_CONDITION = 'R.attr.env == "prod" && P.attr.trust >= 0.4'


def binary() -> Path:
    """The Cerbos binary installed by `npm ci` in bench/cerbos."""
    arch = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    system = platform.system().lower()
    found = HERE / "cerbos" / "node_modules" / "@cerbos" / f"cerbos-{system}-{arch}"
    path = found / f"cerbos-{system}-{arch}"
    if not path.exists():
        raise SystemExit(f"{path} not found: run `cd bench/cerbos && npm ci` (or `make bench`)")
    return path


def _quote(text: str) -> str:
    return json.dumps(text)


def _selects(policy: policy_pb2.Policy) -> str:
    """The agent selector and resource globs of one policy as a Cerbos (CEL) expression."""
    parts: list[str] = []
    selector = policy.agents
    ids = [f"P.id == {_quote(i)}" for i in selector.agent_ids]
    for pattern in selector.agent_id_patterns:
        # The bench's patterns are "teamN:*": a prefix ("*" never crosses "/"; ids have none).
        assert pattern.endswith(":*") and "*" not in pattern[:-1], pattern
        ids.append(f"P.id.startsWith({_quote(pattern[:-1])})")
    if ids:
        parts.append("(" + " || ".join(ids) + ")")
    for key, value in sorted(selector.labels.items()):
        parts.append(f"P.attr.{key} == {_quote(value)}")
    if policy.resources:
        globs = []
        for pattern in policy.resources:
            assert pattern.endswith("/**") and "*" not in pattern[:-3], pattern
            globs.append(f"R.attr.path.startsWith({_quote(pattern[:-2])})")
        parts.append("(" + " || ".join(globs) + ")")
    if policy.min_trust_score:
        parts.append(f"P.attr.trust >= {policy.min_trust_score!r}")
    if policy.condition:
        assert policy.condition == CONDITION, policy.condition
        parts.append(f"({CERBOS_CONDITION})")
    return " && ".join(parts) or "true"


def resource_policy(policies: list[policy_pb2.Policy], actions: list[str]) -> dict[str, Any]:
    """One Cerbos resource policy deciding `actions` as the Agentplane policies do."""
    ordered = sorted(
        enumerate(policies), key=lambda ip: (-ip[1].priority, EFFECT_RANK[ip[1].effect], ip[0])
    )
    rules = []
    for action in actions:
        earlier: dict[bool, list[str]] = {True: [], False: []}  # by "is DENY"
        for _, policy in ordered:
            if policy.actions and not any(compile_glob(a)(action) for a in policy.actions):
                continue
            match = _selects(policy)
            deny = policy.effect == DENY
            # Only earlier policies of the other effect can overrule this one.
            expr = " && ".join([f"({match})", *(f"!({e})" for e in earlier[not deny])])
            rules.append(
                {
                    "actions": [action],
                    "effect": "EFFECT_DENY" if deny else "EFFECT_ALLOW",
                    "roles": ["*"],
                    "condition": {"match": {"expr": expr}},
                }
            )
            earlier[deny].append(match)
    return {
        "apiVersion": "api.cerbos.dev/v1",
        "resourcePolicy": {"version": "default", "resource": KIND, "rules": rules},
    }


class CerbosServer:
    """`cerbos server` on free ports with the compiled policy, disk storage, no audit log."""

    def __init__(self, policy: dict[str, Any]) -> None:
        folder = Path(tempfile.mkdtemp(prefix="bench-cerbos-"))
        (folder / "policies").mkdir()
        # JSON is YAML: no YAML writer needed.
        (folder / "policies" / "agent_action.yaml").write_text(json.dumps(policy, indent=1))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        config = {
            "server": {
                "grpcListenAddr": self.address,
                "httpListenAddr": f"127.0.0.1:{free_port()}",
            },
            "storage": {
                "driver": "disk",
                "disk": {"directory": str(folder / "policies"), "watchForChanges": False},
            },
            "audit": {"enabled": False},
            "telemetry": {"disabled": True},
        }
        (folder / "config.yaml").write_text(json.dumps(config))
        self.log = (folder / "cerbos.log").open("w")
        self.process = subprocess.Popen(
            [str(binary()), "server", f"--config={folder / 'config.yaml'}", "--log-level=error"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CERBOS_NO_TELEMETRY": "1"},
        )
        self.folder = folder
        with grpc.insecure_channel(self.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def cerbos_request(
    request: pb.CheckPermissionRequest, team: str, n: int
) -> request_pb2.CheckResourcesRequest:
    """CheckPermission's request as Cerbos's: the agent is the principal, the action on the
    resource is the resource entry, the context its attributes."""
    resource_attr = {"path": struct_pb2.Value(string_value=request.resource)}
    for key, value in request.context.fields.items():
        resource_attr[key] = value
    return request_pb2.CheckResourcesRequest(
        request_id=f"r{n}",
        principal=engine_pb2.Principal(
            id=request.agent_id,
            roles=["agent"],
            attr={
                "team": struct_pb2.Value(string_value=team),
                "trust": struct_pb2.Value(number_value=TRUST),
            },
        ),
        resources=[
            request_pb2.CheckResourcesRequest.ResourceEntry(
                actions=[request.action],
                resource=engine_pb2.Resource(
                    kind=KIND, id=request.resource or "none", attr=resource_attr
                ),
            )
        ],
    )


def agentplane_decisions(
    policies: list[policy_pb2.Policy], requests: list[pb.CheckPermissionRequest], teams: list[str]
) -> list[bool]:
    """ALLOW or not for each request by the server's decision function, in this process."""
    from agentplane_server.governance.evaluate import AgentView, CompiledPolicy, Subject, decide

    compiled = []
    for i, policy in enumerate(policies):
        stored = policy_pb2.Policy()
        stored.CopyFrom(policy)
        stored.policy_id = f"p{i:03d}"
        compiled.append(CompiledPolicy(stored))
    out = []
    for request, team in zip(requests, teams, strict=True):
        subject = Subject(
            agent=AgentView(request.agent_id, True, "ACTIVE", {"team": team}),
            action=request.action,
            resource=request.resource,
            context=request.context,
            trust_score=TRUST,
        )
        outcome = decide(compiled, subject, decision_pb2.DECISION_DENY)
        out.append(outcome.decision == decision_pb2.DECISION_ALLOW)
    return out


async def bench_cerbos(
    args: Any,
    policies: list[policy_pb2.Policy],
    requests: list[pb.CheckPermissionRequest],
    team_of: Any,
) -> dict[str, Any]:
    """Latency and throughput of Cerbos CheckResources, and agreement with Agentplane on every
    distinct request of the bench."""
    actions = sorted({r.action for r in requests})
    began = time.monotonic()
    policy = resource_policy(policies, actions)
    server = CerbosServer(policy)
    teams = [team_of(r.agent_id) for r in requests]
    converted = [
        cerbos_request(r, t, n) for n, (r, t) in enumerate(zip(requests, teams, strict=True))
    ]
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = svc_pb2_grpc.CerbosServiceStub(channel)

            async def call(i: int) -> object:
                return await stub.CheckResources(converted[i % len(converted)])

            allowed = []
            for request in converted:
                reply = await stub.CheckResources(request)
                effect = reply.results[0].actions[request.resources[0].actions[0]]
                allowed.append(effect == effect_pb2.EFFECT_ALLOW)
            expected = await asyncio.to_thread(agentplane_decisions, policies, requests, teams)
            disagree = [
                json_format.MessageToDict(requests[i])
                for i, (a, b) in enumerate(zip(allowed, expected, strict=True))
                if a != b
            ]
            cpu = CpuMeter(server.process.pid)
            return {
                "version": "0.51.0",
                "setup_s": round(time.monotonic() - began, 1),
                "rules": len(policy["resourcePolicy"]["rules"]),
                "agreement": {
                    "requests": len(requests),
                    "allowed": sum(allowed),
                    "same_decision": len(requests) - len(disagree),
                    "first_disagreements": disagree[:3],
                },
                "latency": await latency(call, args.calls, args.warmup, cpu),
                "throughput": await throughput(
                    call, args.concurrency, args.seconds, cpu, args.ramp
                ),
            }
    finally:
        server.stop()
