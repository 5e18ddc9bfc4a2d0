"""Bad input on every RegistryService and GovernanceService RPC: INVALID_ARGUMENT with a field
violation naming the field, never INTERNAL, and nothing stored."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from rpcutil import expect_error
from test_governance_helpers import Project

from agentplane.common.v1 import time_range_pb2, usage_pb2
from agentplane.governance.v1 import (
    approval_pb2,
    decision_pb2,
    governance_settings_pb2,
    policy_pb2,
    trust_pb2,
)
from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane.registry.v1 import agent_pb2
from agentplane.registry.v1 import registry_service_pb2 as rpb

LONG = "x" * 300
REGISTRY_RPCS = {
    "RegisterAgent",
    "HeartbeatAgent",
    "DeregisterAgent",
    "GetAgent",
    "GetAgentCard",
    "ListAgents",
    "UpdateAgent",
    "WatchAgents",
}
CARD = agent_pb2.AgentCard(name="n", version="1")


def _big_context() -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update({"blob": "y" * (70 * 1024)})
    return s


def _window(seconds: int) -> policy_pb2.Budget:
    budget = policy_pb2.Budget(metric=policy_pb2.BUDGET_METRIC_CALLS, limit=1)
    budget.window.FromSeconds(seconds)
    return budget


def _lease(seconds: int) -> rpb.RegisterAgentRequest:
    request = rpb.RegisterAgentRequest(agent_id="a-1", card=CARD)
    request.lease_duration.FromSeconds(seconds)
    return request


def _range() -> time_range_pb2.TimeRange:
    r = time_range_pb2.TimeRange()
    r.start_time.FromSeconds(200)
    r.end_time.FromSeconds(100)
    return r


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


REGISTRY_CASES = [
    ("RegisterAgent", rpb.RegisterAgentRequest(agent_id="", card=CARD), "agent_id"),
    ("RegisterAgent", rpb.RegisterAgentRequest(agent_id="-bad", card=CARD), "agent_id"),
    ("RegisterAgent", rpb.RegisterAgentRequest(agent_id="a-1"), "card"),
    (
        "RegisterAgent",
        rpb.RegisterAgentRequest(agent_id="a-1", card=agent_pb2.AgentCard(version="1")),
        "card.name",
    ),
    ("RegisterAgent", _lease(1), "lease_duration"),
    ("RegisterAgent", _lease(7200), "lease_duration"),
    (
        "RegisterAgent",
        rpb.RegisterAgentRequest(
            agent_id="a-1", card=agent_pb2.AgentCard(name="n", version="1", labels={"Bad Key": "v"})
        ),
        'card.labels["Bad Key"]',
    ),
    (
        "RegisterAgent",
        rpb.RegisterAgentRequest(
            agent_id="a-1",
            card=agent_pb2.AgentCard(
                name="n",
                version="1",
                skills=[
                    agent_pb2.AgentSkill(id="s", name="a"),
                    agent_pb2.AgentSkill(id="s", name="b"),
                ],
            ),
        ),
        "card",
    ),
    (
        "RegisterAgent",
        rpb.RegisterAgentRequest(
            agent_id="a-1", card=agent_pb2.AgentCard(name="n", version="1", icon_url="not a url")
        ),
        "card.icon_url",
    ),
    ("RegisterAgent", rpb.RegisterAgentRequest(agent_id="a\x00b", card=CARD), "agent_id"),
    ("HeartbeatAgent", rpb.HeartbeatAgentRequest(), "agent_id"),
    ("DeregisterAgent", rpb.DeregisterAgentRequest(agent_id="a-1", etag="not-an-etag"), "etag"),
    ("GetAgent", rpb.GetAgentRequest(agent_id=LONG), "agent_id"),
    ("GetAgentCard", rpb.GetAgentCardRequest(), "agent_id"),
    ("ListAgents", rpb.ListAgentsRequest(page_size=-1), "page_size"),
    ("ListAgents", rpb.ListAgentsRequest(page_token="garbage"), "page_token"),
    (
        "ListAgents",
        rpb.ListAgentsRequest(
            filter=rpb.AgentFilter(capabilities=[rpb.AGENT_CAPABILITY_UNSPECIFIED])
        ),
        "filter.capabilities[0]",
    ),
    ("ListAgents", rpb.ListAgentsRequest(filter=rpb.AgentFilter(status=9)), "filter.status"),
    (
        "WatchAgents",
        rpb.WatchAgentsRequest(filter=rpb.AgentFilter(labels={"UPPER": "x"})),
        'filter.labels["UPPER"]',
    ),
    (
        "UpdateAgent",
        rpb.UpdateAgentRequest(agent=agent_pb2.Agent(agent_id="a-1"), update_mask=_mask("status")),
        "update_mask",
    ),
    (
        "UpdateAgent",
        rpb.UpdateAgentRequest(update_mask=_mask("card")),
        "agent",
    ),
    (
        "UpdateAgent",
        rpb.UpdateAgentRequest(
            agent=agent_pb2.Agent(agent_id="a-1", etag="x1"), update_mask=_mask("lease_duration")
        ),
        "agent.etag",
    ),
]

GOVERNANCE_CASES = [
    ("CheckPermission", pb.CheckPermissionRequest(agent_id="a-1"), "action"),
    ("CheckPermission", pb.CheckPermissionRequest(agent_id="a-1", action=LONG), "action"),
    ("CheckPermission", pb.CheckPermissionRequest(agent_id="-x", action="a"), "agent_id"),
    (
        "CheckPermission",
        pb.CheckPermissionRequest(agent_id="a-1", action="a", trace_id="XYZ"),
        "trace_id",
    ),
    (
        "CheckPermission",
        pb.CheckPermissionRequest(agent_id="a-1", action="a", context=_big_context()),
        "context",
    ),
    (
        "CheckPermission",
        pb.CheckPermissionRequest(
            agent_id="a-1", action="a", usage_estimate=usage_pb2.Usage(input_tokens=-1)
        ),
        "usage_estimate.input_tokens",
    ),
    ("CheckPermission", pb.CheckPermissionRequest(action="a"), "agent_id"),
    ("ValidateOutput", pb.ValidateOutputRequest(agent_id="a-1", checks=[0]), "checks[0]"),
    ("ValidateOutput", pb.ValidateOutputRequest(agent_id="a-1", checks=[1, 1]), "checks"),
    (
        "ValidateOutput",
        pb.ValidateOutputRequest(agent_id="a-1", content_type="not a type"),
        "content_type",
    ),
    (
        "ValidateOutput",
        pb.ValidateOutputRequest(agent_id="a-1", content="x" * (1024 * 1024 + 1)),
        "content",
    ),
    ("CreatePolicy", pb.CreatePolicyRequest(), "policy"),
    (
        "CreatePolicy",
        pb.CreatePolicyRequest(policy=policy_pb2.Policy(effect=1)),
        "(request)",
    ),
    (
        "CreatePolicy",
        pb.CreatePolicyRequest(policy=policy_pb2.Policy(name="n", effect=7)),
        "policy.effect",
    ),
    (
        "CreatePolicy",
        pb.CreatePolicyRequest(policy=policy_pb2.Policy(name="n", effect=2, budgets=[_window(60)])),
        "policy",
    ),
    (
        "CreatePolicy",
        pb.CreatePolicyRequest(policy=policy_pb2.Policy(name="n", effect=1, budgets=[_window(0)])),
        "policy.budgets[0].window",
    ),
    (
        "CreatePolicy",
        pb.CreatePolicyRequest(policy=policy_pb2.Policy(name="n", effect=1, min_trust_score=1.5)),
        "policy.min_trust_score",
    ),
    (
        "CreatePolicy",
        pb.CreatePolicyRequest(policy=policy_pb2.Policy(name="n", effect=1, condition="context.")),
        "policy.condition",
    ),
    (
        "CreatePolicy",
        pb.CreatePolicyRequest(policy_id="bad id", policy=policy_pb2.Policy(name="n", effect=1)),
        "policy_id",
    ),
    ("GetPolicy", pb.GetPolicyRequest(), "policy_id"),
    ("ListPolicies", pb.ListPoliciesRequest(effect=9), "effect"),
    ("ListPolicies", pb.ListPoliciesRequest(page_token="zz.zz"), "page_token"),
    (
        "UpdatePolicy",
        pb.UpdatePolicyRequest(
            policy=policy_pb2.Policy(policy_id="p"), update_mask=_mask("version")
        ),
        "update_mask",
    ),
    (
        "UpdatePolicy",
        pb.UpdatePolicyRequest(policy=policy_pb2.Policy(policy_id="p")),
        "update_mask",
    ),
    (
        "UpdatePolicy",
        pb.UpdatePolicyRequest(
            policy=policy_pb2.Policy(policy_id="p", etag="e"), update_mask=_mask("priority")
        ),
        "policy.etag",
    ),
    ("DeletePolicy", pb.DeletePolicyRequest(policy_id=""), "policy_id"),
    ("EvaluatePolicies", pb.EvaluatePoliciesRequest(agent_id="a-1"), "action"),
    (
        "EvaluatePolicies",
        pb.EvaluatePoliciesRequest(agent_id="a-1", action="a", trust_score=2),
        "trust_score",
    ),
    (
        "EvaluatePolicies",
        pb.EvaluatePoliciesRequest(
            agent_id="a-1", action="a", candidate_policies=[policy_pb2.Policy()]
        ),
        "(request)",
    ),
    ("WatchPolicies", pb.WatchPoliciesRequest(agent_id="-x"), "agent_id"),
    ("WatchPolicies", pb.WatchPoliciesRequest(), "agent_id"),
    (
        "UpdateGovernanceSettings",
        pb.UpdateGovernanceSettingsRequest(
            settings=governance_settings_pb2.GovernanceSettings(trust_baseline=1.5),
            update_mask=_mask("trust_baseline"),
        ),
        "settings.trust_baseline",
    ),
    (
        "UpdateGovernanceSettings",
        pb.UpdateGovernanceSettingsRequest(
            settings=governance_settings_pb2.GovernanceSettings(), update_mask=_mask("etag")
        ),
        "update_mask",
    ),
    ("GetTrustScore", pb.GetTrustScoreRequest(agent_id="bad id"), "agent_id"),
    ("ListTrustScores", pb.ListTrustScoresRequest(tier=9), "tier"),
    ("ReportExecution", pb.ReportExecutionRequest(agent_id="a-1", action="a"), "outcome"),
    ("ReportExecution", pb.ReportExecutionRequest(agent_id="a-1", outcome=1), "action"),
    (
        "ReportExecution",
        pb.ReportExecutionRequest(agent_id="a-1", action="a", outcome=1, message="m" * 2000),
        "message",
    ),
    ("AdjustTrustScore", pb.AdjustTrustScoreRequest(agent_id="a-1"), "adjustment"),
    ("AdjustTrustScore", pb.AdjustTrustScoreRequest(agent_id="a-1", delta=3), "delta"),
    ("AdjustTrustScore", pb.AdjustTrustScoreRequest(score=0.5), "agent_id"),
    ("ListTrustEvents", pb.ListTrustEventsRequest(create_time=_range()), "create_time"),
    ("ListApprovals", pb.ListApprovalsRequest(state=8), "state"),
    ("GetApproval", pb.GetApprovalRequest(), "approval_id"),
    (
        "ResolveApproval",
        pb.ResolveApprovalRequest(approval_id="apr_1", state=approval_pb2.APPROVAL_STATE_PENDING),
        "state",
    ),
    ("WatchApproval", pb.WatchApprovalRequest(), "approval_id"),
    ("GetDecision", pb.GetDecisionRequest(decision_id=LONG), "decision_id"),
    (
        "ListDecisions",
        pb.ListDecisionsRequest(
            kind=decision_pb2.DecisionKind.Value("DECISION_KIND_UNSPECIFIED") + 5
        ),
        "kind",
    ),
    ("ListDecisions", pb.ListDecisionsRequest(page_size=-5), "page_size"),
]


@pytest.fixture(scope="module")
def project(server) -> Project:  # type: ignore[no-untyped-def]
    return Project(server)


def _call(stub, name: str, request):  # type: ignore[no-untyped-def]
    method = getattr(stub, name)

    def invoke(req, metadata):  # type: ignore[no-untyped-def]
        result = method(req, metadata=metadata, timeout=10)
        if name.startswith("Watch"):
            return list(result)
        return result

    return invoke


@pytest.mark.parametrize(("name", "request_", "field"), REGISTRY_CASES + GOVERNANCE_CASES)
def test_bad_input_is_invalid_argument_with_field_violations(
    project: Project, name, request_, field
) -> None:  # type: ignore[no-untyped-def]
    stub = project.registry if name in REGISTRY_RPCS else project.gov
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, _call(stub, name, request_), request_, project.md
    )
    assert error.field_violations, error
    assert any(f == field or f.startswith(field) for f in error.field_violations), (
        field,
        error.field_violations,
    )


def test_bad_input_stores_nothing(project: Project) -> None:
    assert project.registry.ListAgents(rpb.ListAgentsRequest(), metadata=project.md).agents == []
    assert project.gov.ListPolicies(pb.ListPoliciesRequest(), metadata=project.md).policies == []
    assert (
        project.gov.ListTrustScores(pb.ListTrustScoresRequest(), metadata=project.md).trust_scores
        == []
    )
    assert (
        project.gov.ListDecisions(pb.ListDecisionsRequest(), metadata=project.md).decision_records
        == []
    )
    settings = project.gov.GetGovernanceSettings(
        pb.GetGovernanceSettingsRequest(), metadata=project.md
    )
    assert settings.settings.etag == "0"
    assert trust_pb2.TRUST_TIER_UNSPECIFIED == 0
