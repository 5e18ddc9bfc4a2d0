"""One decision rule everywhere: the server's CheckPermission, the Python SDK's local decision
(agentplane.decision through PolicyState) and the TypeScript SDK's port (decision.ts, one
long-lived node process fed JSON lines) agree on random policy sets and requests (hypothesis).

- server: random policy sets (each in a project of its own, with registered agents whose labels
  the selectors read, and a random default decision); each agent's WatchPolicies snapshot feeds
  the Python and TypeScript local states; a sample of the requests goes to CheckPermission.
  Local answers must equal the server's decision and deciding policy, or be UNDECIDABLE naming
  a policy whose condition the SDKs cannot evaluate and that outranks the server's deciding
  policy; the policies a side knows to match are the server's, less the conditional ones.
- rule: the full rule (selectors, disabled policies, trust ranges, injected condition results
  with errors) in Python and TypeScript on many more cases, reasons included.

The server runs on SQLite: this compares decisions, not storage (the governance tests cover
both backends). The printed summary states the counts.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_governance_helpers import Project

from agentplane import decision
from agentplane._policy import PolicyState
from agentplane.governance.v1 import (
    decision_pb2,
    governance_service_pb2,
    governance_settings_pb2,
    policy_pb2,
)

ROOT = Path(__file__).resolve().parents[1]
TS = ROOT / "sdk-typescript-gen"
D = decision_pb2
ALLOW, DENY, REVIEW = (
    policy_pb2.POLICY_EFFECT_ALLOW,
    policy_pb2.POLICY_EFFECT_DENY,
    policy_pb2.POLICY_EFFECT_REQUIRE_APPROVAL,
)
DEFAULTS = [D.DECISION_DENY, D.DECISION_ALLOW, D.DECISION_REQUIRE_APPROVAL]

AGENTS = {
    "billing:1": {"team": "billing", "tier": "gold"},
    "billing:2": {"team": "billing"},
    "ops:1": {"team": "ops"},
}
ACTIONS = [
    "tool:db.query",
    "tool:db.insert",
    "tool:http.get",
    "tool:db/x",
    "tool:xb.query",
    "llm:chat",
]
RESOURCES = ["", "db://prod/users", "db://prod/a/b", "db://staging/users", "web://x"]
CONDITIONS = [  # server-side CEL; the SDKs cannot evaluate any of them
    "trust.score > 0.3",
    "trust.score > 0.9",
    "context.env == 'prod'",  # no context: an evaluation error
    "request.resource.startsWith('db://prod')",
]

selectors = st.one_of(
    st.none(),
    st.builds(
        lambda ids: policy_pb2.AgentSelector(agent_ids=ids),
        st.lists(st.sampled_from(sorted(AGENTS)), min_size=1, max_size=2, unique=True),
    ),
    st.builds(
        lambda p: policy_pb2.AgentSelector(agent_id_patterns=p),
        st.lists(st.sampled_from(["billing:*", "ops:?", "*:1", "**"]), min_size=1, max_size=2),
    ),
    st.builds(
        lambda labels: policy_pb2.AgentSelector(labels=labels),
        st.sampled_from([{"team": "billing"}, {"tier": "gold"}, {"team": "ops"}]),
    ),
)


@st.composite
def policy_sets(draw: Any, conditions: list[str], without: int) -> list[policy_pb2.Policy]:
    """Up to 9 policies; `without` in len(conditions) + `without` have no condition."""
    ids = draw(st.lists(st.sampled_from([f"p{i}" for i in range(12)]), max_size=9, unique=True))
    policies = []
    for policy_id in ids:
        selector = draw(selectors)
        policy = policy_pb2.Policy(
            policy_id=policy_id,
            name=policy_id,
            effect=draw(st.sampled_from([ALLOW, DENY, REVIEW])),
            priority=draw(st.integers(-2, 2)),
            actions=draw(
                st.lists(
                    st.sampled_from(
                        [
                            "tool:*",
                            "tool:db.*",
                            "tool:db.query",
                            "tool:http.get",
                            "**",
                            "tool:?b.query",
                            "llm:chat",
                        ]
                    ),
                    max_size=2,
                    unique=True,
                )
            ),
            resources=draw(
                st.lists(
                    st.sampled_from(
                        ["db://prod/**", "db://prod/*", "db://staging/users", "web://*"]
                    ),
                    max_size=2,
                    unique=True,
                )
            ),
            min_trust_score=draw(st.sampled_from([0.0, 0.0, 0.3, 0.5, 0.7])),
            condition=draw(st.sampled_from([""] * without + conditions)),
            enabled=draw(st.sampled_from([True, True, True, False])),
        )
        if selector is not None:
            policy.agents.CopyFrom(selector)
        policies.append(policy)
    return policies


requests = st.tuples(st.sampled_from(ACTIONS), st.sampled_from(RESOURCES))


class TypeScriptRule:
    """The TypeScript SDK's rule in one node process, one JSON line per command."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            ["node", str(TS / "test" / "decision-harness.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=TS,
        )

    def call(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        assert "error" not in reply, reply["error"]
        return reply

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def typescript() -> Any:
    built = subprocess.run(
        ["npm", "run", "--silent", "build"], cwd=TS, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout + built.stderr
    rule = TypeScriptRule()
    yield rule
    rule.close()


@pytest.fixture(scope="module")
def server() -> Any:
    from serverproc import ServerProcess

    process = ServerProcess(None)
    yield process
    process.stop()


def b64(message: Any) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def answer(outcome: decision.Outcome) -> list[Any]:
    return [
        outcome.decision,
        outcome.deciding.policy_id if outcome.deciding else "",
        outcome.undecided_by.policy_id if outcome.undecided_by else "",
        [r.policy_id for r in outcome.matched],
        outcome.reasons,
    ]


def sort_key(policy: policy_pb2.Policy) -> tuple[int, int, str]:
    return (-policy.priority, decision.EFFECT_RANK[policy.effect], policy.policy_id)


def check_local(
    local: list[Any], server: governance_service_pb2.CheckPermissionResponse, by_id: dict
) -> str:
    """A local answer against the server's; returns "decided" or "undecidable"."""
    decided, deciding, undecided_by, matched, _reasons = local
    unconditional = [p for p in server.matched_policy_ids if not by_id[p].condition]
    assert matched == unconditional, (local, server)
    if decided == decision.UNDECIDABLE:
        blocker = by_id[undecided_by]
        assert blocker.condition, f"{undecided_by} has no condition, yet undecidable"
        if server.deciding_policy_id:
            assert sort_key(blocker) <= sort_key(by_id[server.deciding_policy_id]), (
                local,
                server,
            )
        return "undecidable"
    assert (decided, deciding) == (server.decision, server.deciding_policy_id), (local, server)
    return "decided"


def test_server_python_and_typescript_agree(
    server: Any, typescript: TypeScriptRule, capsys: Any
) -> None:
    counts: Counter[str] = Counter()

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        policies=policy_sets(CONDITIONS, without=12),
        default=st.sampled_from(DEFAULTS),
        asked=st.lists(requests, min_size=150, max_size=150),
    )
    def run(policies: list[policy_pb2.Policy], default: int, asked: list) -> None:
        p = Project(server, agent_id="billing:1")
        for agent_id, labels in AGENTS.items():
            p.register(agent_id, labels=labels)
        p.gov.UpdateGovernanceSettings(
            governance_service_pb2.UpdateGovernanceSettingsRequest(
                settings=governance_settings_pb2.GovernanceSettings(default_decision=default),
                update_mask=field_mask_pb2.FieldMask(paths=["default_decision"]),
            ),
            metadata=p.md,
        )
        for policy in policies:
            p.gov.CreatePolicy(
                governance_service_pb2.CreatePolicyRequest(
                    policy_id=policy.policy_id, policy=policy
                ),
                metadata=p.md,
            )
        by_id = {policy.policy_id: policy for policy in policies}
        for agent_id in AGENTS:
            stream = p.gov.WatchPolicies(
                governance_service_pb2.WatchPoliciesRequest(agent_id=agent_id), metadata=p.md
            )
            first = next(stream)
            stream.cancel()
            assert first.WhichOneof("change") == "snapshot"
            python = PolicyState()
            python.apply(first)
            key = f"{p.project_id}/{agent_id}"
            typescript.call(op="watch", id=key, message=b64(first))
            py_answers = [answer(python.outcome(a, r)) for a, r in asked]
            ts_answers = typescript.call(op="local", id=key, requests=asked)["answers"]
            assert py_answers == ts_answers
            counts["local python = typescript"] += len(asked)
            # A sample to the server, in flight together.
            sample = asked[:50]
            futures = [
                p.gov.CheckPermission.future(
                    governance_service_pb2.CheckPermissionRequest(
                        agent_id=agent_id, action=a, resource=r
                    ),
                    metadata=p.md,
                    timeout=30,
                )
                for a, r in sample
            ]
            for local, future in zip(py_answers, futures, strict=False):
                counts[f"server vs local: {check_local(local, future.result(), by_id)}"] += 1
        counts["policy sets"] += 1

    run()
    with capsys.disabled():
        print(f"\ndecision differential (server): {dict(sorted(counts.items()))}")
    assert counts["local python = typescript"] >= 10_000
    assert counts["server vs local: decided"] + counts["server vs local: undecidable"] >= 5_000
    assert counts["server vs local: decided"] > counts["server vs local: undecidable"]


CONDITION_RESULTS = {  # what an injected condition engine answers, by condition text
    "true": (True, ""),
    "false": (False, ""),
    "unknown": (None, ""),
    "error": (False, "no such key: env"),
}


def test_python_and_typescript_rules_agree(typescript: TypeScriptRule, capsys: Any) -> None:
    counts: Counter[str] = Counter()

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        policies=policy_sets(list(CONDITION_RESULTS), without=4),
        cases=st.lists(
            st.tuples(
                st.sampled_from([*AGENTS, "unregistered:9"]),
                requests,
                st.sampled_from(
                    [(0.5, None), (0.3, 0.7), (0.0, 1.0), (0.7, None), (0.0, float("inf"))]
                ),
                st.sampled_from(DEFAULTS),
            ),
            min_size=100,
            max_size=100,
        ),
    )
    def run(policies: list[policy_pb2.Policy], cases: list) -> None:
        rules = [decision.Rule(p, i) for i, p in enumerate(policies)]
        conditions = {p.policy_id: CONDITION_RESULTS[p.condition] for p in policies if p.condition}
        wire = []
        expected = []
        for agent_id, (action, resource), (low, high), default in cases:
            labels = AGENTS.get(agent_id, {})
            outcome = decision.decide(
                rules,
                agent_id=agent_id,
                labels=labels,
                action=action,
                resource=resource,
                trust_score=low,
                trust_ceiling=high,
                default_decision=default,
                condition=lambda rule: conditions[rule.policy_id],
            )
            expected.append(answer(outcome))
            counts[decision.DECISION_NAME.get(outcome.decision, "UNDECIDABLE")] += 1
            wire.append(
                {
                    "agentId": agent_id,
                    "labels": labels,
                    "action": action,
                    "resource": resource,
                    "trust": low,
                    # JSON has no infinity: "unbounded" says the ceiling is Infinity.
                    "trustCeiling": None if high == float("inf") else high,
                    "unbounded": high == float("inf"),
                    "defaultDecision": default,
                    "conditions": conditions,
                }
            )
        got = typescript.call(
            op="rule",
            policies=b64(governance_service_pb2.PolicySnapshot(policies=policies)),
            requests=wire,
        )["answers"]
        assert got == expected
        counts["cases"] += len(cases)

    run()
    with capsys.disabled():
        print(f"\ndecision differential (rule): {dict(sorted(counts.items()))}")
    assert counts["cases"] >= 10_000
