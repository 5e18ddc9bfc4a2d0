"""GovernanceService end to end against a real server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import queue
import threading

import grpc
import pytest
from google.protobuf import field_mask_pb2
from rpcutil import expect_error
from test_governance_helpers import Project, eventually, struct, uid

from agentplane.common.v1 import usage_pb2
from agentplane.governance.v1 import (
    approval_pb2,
    decision_pb2,
    governance_settings_pb2,
    policy_pb2,
    trust_pb2,
)
from agentplane.governance.v1 import governance_service_pb2 as pb

ALLOW = policy_pb2.POLICY_EFFECT_ALLOW
DENY = policy_pb2.POLICY_EFFECT_DENY
REVIEW = policy_pb2.POLICY_EFFECT_REQUIRE_APPROVAL
D = decision_pb2


@pytest.fixture(scope="module")
def server(backend, postgres):  # type: ignore[no-untyped-def]
    from conftest import database_url_for
    from serverproc import ServerProcess

    process = ServerProcess(
        database_url_for(backend, postgres),
        extra_args=("--governance-housekeeping-interval", "0.3"),
    )
    yield process
    process.stop()


@pytest.fixture
def p(server) -> Project:  # type: ignore[no-untyped-def]
    return Project(server)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# -- policies ----------------------------------------------------------------------------------


def test_policy_crud_versions_and_etags(p: Project) -> None:
    created = p.policy("db-read", ALLOW, priority=5, actions=["tool:db.*"], description="reads")
    assert (created.version, created.etag, created.enabled) == (1, "1", True)
    assert created.project_id == p.project_id and created.create_time.seconds > 0
    generated = p.gov.CreatePolicy(
        pb.CreatePolicyRequest(policy=policy_pb2.Policy(name="gen", effect=DENY)), metadata=p.md
    ).policy
    assert generated.policy_id.startswith("pol_")
    error = expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        p.gov.CreatePolicy,
        pb.CreatePolicyRequest(policy_id="db-read", policy=policy_pb2.Policy(name="x", effect=1)),
        metadata=p.md,
    )
    assert error.reason == "ERROR_REASON_RESOURCE_ALREADY_EXISTS"
    assert p.gov.GetPolicy(pb.GetPolicyRequest(policy_id="db-read"), metadata=p.md).policy == (
        created
    )
    update = pb.UpdatePolicyRequest(
        policy=policy_pb2.Policy(policy_id="db-read", etag="1", priority=9, enabled=False),
        update_mask=mask("priority", "enabled"),
    )
    updated = p.gov.UpdatePolicy(update, metadata=p.md).policy
    assert (updated.version, updated.priority, updated.enabled) == (2, 9, False)
    assert list(updated.actions) == ["tool:db.*"] and updated.description == "reads"
    error = expect_error(grpc.StatusCode.ABORTED, p.gov.UpdatePolicy, update, metadata=p.md)
    assert error.reason == "ERROR_REASON_ETAG_MISMATCH"
    expect_error(
        grpc.StatusCode.ABORTED,
        p.gov.DeletePolicy,
        pb.DeletePolicyRequest(policy_id="db-read", etag="1"),
        metadata=p.md,
    )
    p.gov.DeletePolicy(pb.DeletePolicyRequest(policy_id="db-read", etag="2"), metadata=p.md)
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        p.gov.GetPolicy,
        pb.GetPolicyRequest(policy_id="db-read"),
        metadata=p.md,
    )


def test_create_policy_is_idempotent_by_request_id(p: Project) -> None:
    request = pb.CreatePolicyRequest(
        policy=policy_pb2.Policy(name="once", effect=ALLOW), request_id=uid("req")
    )
    first = p.gov.CreatePolicy(request, metadata=p.md).policy
    assert p.gov.CreatePolicy(request, metadata=p.md).policy.policy_id == first.policy_id
    request.policy.name = "different"
    error = expect_error(grpc.StatusCode.ALREADY_EXISTS, p.gov.CreatePolicy, request, metadata=p.md)
    assert error.reason == "ERROR_REASON_REQUEST_ID_CONFLICT"


def test_condition_that_does_not_compile_is_refused_with_its_position(p: Project) -> None:
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        p.gov.CreatePolicy,
        pb.CreatePolicyRequest(
            policy_id="bad",
            policy=policy_pb2.Policy(name="bad", effect=ALLOW, condition="contxt.env == 'prod'"),
        ),
        metadata=p.md,
    )
    assert error.reason == "ERROR_REASON_POLICY_INVALID"
    description = error.field_violations["policy.condition"]
    assert description.startswith("line 1, column ") and "undeclared reference to 'contxt" in (
        description
    )
    p.policy("good", ALLOW, condition="context.env == 'prod'")
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        p.gov.UpdatePolicy,
        pb.UpdatePolicyRequest(
            policy=policy_pb2.Policy(policy_id="good", condition="1 + 1"),
            update_mask=mask("condition"),
        ),
        metadata=p.md,
    )
    assert "must be a bool" in error.field_violations["policy.condition"]
    listed = p.gov.ListPolicies(pb.ListPoliciesRequest(), metadata=p.md).policies
    assert [x.policy_id for x in listed] == ["good"] and listed[0].version == 1


def test_list_policies_order_filters_and_pages(p: Project) -> None:
    p.register("billing:1", labels={"team": "billing"})
    p.policy("a-low", ALLOW, priority=1, actions=["tool:db.*"])
    p.policy("b-high", DENY, priority=10, agents=policy_pb2.AgentSelector(labels={"team": "x"}))
    p.policy("c-mid", ALLOW, priority=5, enabled=False)
    p.policy(
        "d-mid",
        REVIEW,
        priority=5,
        agents=policy_pb2.AgentSelector(agent_id_patterns=["billing:*"]),
    )

    def ids(**filters) -> list[str]:  # type: ignore[no-untyped-def]
        request = pb.ListPoliciesRequest(**filters)
        return [x.policy_id for x in p.gov.ListPolicies(request, metadata=p.md).policies]

    assert ids() == ["b-high", "c-mid", "d-mid", "a-low"]
    assert ids(effect=ALLOW) == ["c-mid", "a-low"]
    assert ids(enabled=False) == ["c-mid"]
    assert ids(agent_id="billing:1") == ["c-mid", "d-mid", "a-low"]
    assert ids(action="tool:http.get") == ["b-high", "c-mid", "d-mid"]
    page = p.gov.ListPolicies(pb.ListPoliciesRequest(page_size=3), metadata=p.md)
    assert [x.policy_id for x in page.policies] == ["b-high", "c-mid", "d-mid"]
    rest = p.gov.ListPolicies(
        pb.ListPoliciesRequest(page_size=3, page_token=page.next_page_token), metadata=p.md
    )
    assert [x.policy_id for x in rest.policies] == ["a-low"] and not rest.next_page_token
    filtered = p.gov.ListPolicies(
        pb.ListPoliciesRequest(page_size=2, agent_id="billing:1"), metadata=p.md
    )
    assert [x.policy_id for x in filtered.policies] == ["c-mid", "d-mid"]
    more = p.gov.ListPolicies(
        pb.ListPoliciesRequest(
            page_size=2, agent_id="billing:1", page_token=filtered.next_page_token
        ),
        metadata=p.md,
    )
    assert [x.policy_id for x in more.policies] == ["a-low"]


# -- CheckPermission ---------------------------------------------------------------------------


def test_check_permission_decides_and_logs(p: Project) -> None:
    denied = p.check()
    assert denied.decision == D.DECISION_DENY and not denied.deciding_policy_id
    assert "default decision is DENY" in denied.reasons[0]
    assert denied.trust_score == 0.5 and denied.trust_tier == trust_pb2.TRUST_TIER_MEDIUM
    p.policy("db", ALLOW, priority=1, actions=["tool:db.*"])
    p.policy("prod-write", DENY, priority=5, actions=["tool:db.write"], resources=["db://prod/**"])
    allowed = p.check("tool:db.query", resource="db://prod/users", request_id="", trace_id="a" * 32)
    assert allowed.decision == D.DECISION_ALLOW
    assert allowed.deciding_policy_id == "db" and list(allowed.matched_policy_ids) == ["db"]
    assert allowed.cache_ttl.seconds == 30 and allowed.decision_id.startswith("dec_")
    write = p.check("tool:db.write", resource="db://prod/users")
    assert write.decision == D.DECISION_DENY
    assert list(write.matched_policy_ids) == ["prod-write", "db"]
    assert write.reasons[0] == "policy prod-write denies tool:db.write on db://prod/users"
    assert p.check("tool:db.write", resource="db://staging/x").decision == D.DECISION_ALLOW

    record = eventually(
        lambda: (
            p.gov.GetDecision(
                pb.GetDecisionRequest(decision_id=allowed.decision_id), metadata=p.md
            ).decision_record
        )
    )
    assert record.kind == D.DECISION_KIND_CHECK_PERMISSION and record.decision == D.DECISION_ALLOW
    assert (record.agent_id, record.action, record.resource) == (
        "billing",
        "tool:db.query",
        "db://prod/users",
    )
    assert record.trace_id == "a" * 32 and list(record.policy_ids) == ["db"]
    assert record.latency.ToNanoseconds() > 0

    def listed(**filters) -> list[str]:  # type: ignore[no-untyped-def]
        request = pb.ListDecisionsRequest(**filters)
        return [r.decision_id for r in p.gov.ListDecisions(request, metadata=p.md).decision_records]

    eventually(lambda: len(listed()) == 4)
    assert listed(policy_id="prod-write") == [write.decision_id]
    assert listed(decision=D.DECISION_DENY) == [write.decision_id, denied.decision_id]
    assert listed(action="tool:db.query", decision=D.DECISION_ALLOW) == [allowed.decision_id]
    assert listed(kind=D.DECISION_KIND_VALIDATE_OUTPUT) == []
    page = p.gov.ListDecisions(pb.ListDecisionsRequest(page_size=3), metadata=p.md)
    rest = p.gov.ListDecisions(
        pb.ListDecisionsRequest(page_size=3, page_token=page.next_page_token), metadata=p.md
    )
    assert len(page.decision_records) == 3 and [r.decision_id for r in rest.decision_records] == [
        denied.decision_id
    ]


def test_conditions_context_labels_and_trust(p: Project) -> None:
    p.register("billing", labels={"team": "billing"})
    p.policy(
        "prod-only",
        ALLOW,
        agents=policy_pb2.AgentSelector(labels={"team": "billing"}),
        condition="context.env == 'prod' && agent.registered && trust.tier == 'MEDIUM'",
    )
    p.policy("trusted-refunds", ALLOW, actions=["tool:refund"], min_trust_score=0.6)
    assert p.check(context={"env": "prod"}).decision == D.DECISION_ALLOW
    assert p.check(context={"env": "dev"}).decision == D.DECISION_DENY
    missing = p.check(context={"other": 1})  # evaluation error: an ALLOW does not match
    assert missing.decision == D.DECISION_DENY
    assert any("could not be evaluated" in r for r in missing.reasons)
    assert p.check("tool:refund").decision == D.DECISION_DENY  # trust 0.5 < 0.6
    p.gov.AdjustTrustScore(pb.AdjustTrustScoreRequest(agent_id="billing", score=0.7), metadata=p.md)
    assert p.check("tool:refund").decision == D.DECISION_ALLOW


def test_default_decision_setting_and_etag(p: Project) -> None:
    settings = p.gov.GetGovernanceSettings(
        pb.GetGovernanceSettingsRequest(), metadata=p.md
    ).settings
    assert settings.default_decision == D.DECISION_DENY and settings.trust_baseline == 0.5
    assert settings.approval_expiry.seconds == 86400 and settings.decision_cache_ttl.seconds == 30
    assert settings.trust_decay_half_life.seconds == 7 * 86400
    assert settings.etag == "0" and not settings.HasField("update_time")
    change = pb.UpdateGovernanceSettingsRequest(
        settings=governance_settings_pb2.GovernanceSettings(
            default_decision=D.DECISION_ALLOW, etag="0"
        ),
        update_mask=mask("default_decision", "decision_cache_ttl"),
    )
    updated = p.gov.UpdateGovernanceSettings(change, metadata=p.md).settings
    assert updated.default_decision == D.DECISION_ALLOW and updated.etag == "1"
    assert updated.decision_cache_ttl.seconds == 30  # unset resets to the default
    expect_error(grpc.StatusCode.ABORTED, p.gov.UpdateGovernanceSettings, change, metadata=p.md)
    allowed = p.check()
    assert (
        allowed.decision == D.DECISION_ALLOW and "default decision is ALLOW" in allowed.reasons[0]
    )
    ttl = pb.UpdateGovernanceSettingsRequest(
        settings=governance_settings_pb2.GovernanceSettings(trust_baseline=0.9),
        update_mask=mask("trust_baseline", "decision_cache_ttl"),
    )
    ttl.settings.decision_cache_ttl.FromSeconds(0)
    p.gov.UpdateGovernanceSettings(ttl, metadata=p.md)
    again = p.check()
    assert again.cache_ttl.ToMicroseconds() == 0 and again.trust_score == pytest.approx(0.9)
    assert again.trust_tier == trust_pb2.TRUST_TIER_HIGH


def test_budgets_deny_once_spent_and_reports_replace_estimates(p: Project) -> None:
    calls = policy_pb2.Budget(metric=policy_pb2.BUDGET_METRIC_CALLS, limit=2, per_agent=True)
    calls.window.FromSeconds(60)
    tokens = policy_pb2.Budget(metric=policy_pb2.BUDGET_METRIC_TOKENS, limit=100)
    tokens.window.FromSeconds(60)
    p.policy("llm", ALLOW, actions=["llm:*"], budgets=[calls, tokens])
    estimate = usage_pb2.Usage(input_tokens=30, output_tokens=20)
    first = p.check("llm:generate", usage_estimate=estimate)
    assert first.decision == D.DECISION_ALLOW and first.cache_ttl.ToMicroseconds() == 0
    assert [(b.spent, b.exceeded) for b in first.budgets] == [(1, False), (50, False)]
    # The estimate of 50 tokens is replaced by the 10 really used.
    p.gov.ReportExecution(
        pb.ReportExecutionRequest(
            agent_id="billing",
            action="llm:generate",
            outcome=trust_pb2.EXECUTION_OUTCOME_SUCCESS,
            decision_id=first.decision_id,
            usage=usage_pb2.Usage(input_tokens=5, output_tokens=5),
        ),
        metadata=p.md,
    )
    second = p.check("llm:generate", usage_estimate=estimate)
    assert [(b.spent, b.exceeded) for b in second.budgets] == [(2, False), (60, False)]
    small = usage_pb2.Usage(input_tokens=10)
    third = p.check("llm:generate", usage_estimate=small)
    assert third.decision == D.DECISION_DENY
    assert [b.exceeded for b in third.budgets] == [True, False]
    assert any("budget of 2 calls per 60s" in r for r in third.reasons)
    other = p.check("llm:generate", agent_id="search", usage_estimate=small)
    assert other.decision == D.DECISION_ALLOW  # calls are per agent...
    big = p.check(
        "llm:generate", agent_id="search2", usage_estimate=usage_pb2.Usage(input_tokens=50)
    )
    assert big.decision == D.DECISION_DENY  # ...tokens are shared: 70 + 50 > 100
    assert [b.exceeded for b in big.budgets] == [False, True]


def test_check_permission_request_id_decides_once(p: Project) -> None:
    calls = policy_pb2.Budget(metric=policy_pb2.BUDGET_METRIC_CALLS, limit=1)
    calls.window.FromSeconds(60)
    p.policy("one-call", ALLOW, budgets=[calls])
    request_id = uid("req")
    first = p.check(request_id=request_id)
    again = p.check(request_id=request_id)
    assert first == again and first.decision == D.DECISION_ALLOW  # charged once
    error = expect_error(
        grpc.StatusCode.ALREADY_EXISTS, p.check, "tool:other", request_id=request_id
    )
    assert error.reason == "ERROR_REASON_REQUEST_ID_CONFLICT"
    assert p.check().decision == D.DECISION_DENY  # the one call is spent


# -- approvals ---------------------------------------------------------------------------------


def _watch_approval(p: Project, approval_id: str) -> queue.Queue:
    events: queue.Queue = queue.Queue()
    call = p.gov.WatchApproval(
        pb.WatchApprovalRequest(approval_id=approval_id), metadata=p.agent, timeout=30
    )

    def pump() -> None:
        try:
            for message in call:
                events.put(message.approval)
            events.put("end")
        except grpc.RpcError as error:
            events.put(error)

    threading.Thread(target=pump, daemon=True).start()
    return events


def test_require_approval_flow(p: Project) -> None:
    p.policy("refunds", REVIEW, actions=["tool:refund"])
    context = {"order": 42, "amount": 120}
    held = p.check("tool:refund", md=p.agent, resource="order/42", context=context)
    assert held.decision == D.DECISION_REQUIRE_APPROVAL and held.approval_id.startswith("apr_")
    assert held.cache_ttl.ToMicroseconds() == 0
    # The same request gets the same pending approval; another context another one.
    assert p.check("tool:refund", md=p.agent, resource="order/42", context=context).approval_id == (
        held.approval_id
    )
    other = p.check("tool:refund", md=p.agent, resource="order/42", context={"order": 43})
    assert other.approval_id != held.approval_id
    approval = p.gov.GetApproval(
        pb.GetApprovalRequest(approval_id=held.approval_id), metadata=p.agent
    ).approval
    assert approval.state == approval_pb2.APPROVAL_STATE_PENDING
    assert (approval.agent_id, approval.action, approval.policy_id) == (
        "billing",
        "tool:refund",
        "refunds",
    )
    assert approval.context["order"] == 42 and approval.decision_id == held.decision_id
    assert approval.expire_time.seconds - approval.create_time.seconds == 86400
    pending = p.gov.ListApprovals(
        pb.ListApprovalsRequest(state=approval_pb2.APPROVAL_STATE_PENDING, policy_id="refunds"),
        metadata=p.md,
    ).approvals
    assert {a.approval_id for a in pending} == {held.approval_id, other.approval_id}

    events = _watch_approval(p, held.approval_id)
    assert events.get(timeout=5).state == approval_pb2.APPROVAL_STATE_PENDING
    # Only a project admin resolves; agents and readers are refused.
    for md in (p.agent, p.reader):
        expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            p.gov.ResolveApproval,
            pb.ResolveApprovalRequest(
                approval_id=held.approval_id, state=approval_pb2.APPROVAL_STATE_APPROVED
            ),
            metadata=md,
        )
    resolve = pb.ResolveApprovalRequest(
        approval_id=held.approval_id, state=approval_pb2.APPROVAL_STATE_APPROVED, comment="ok"
    )
    resolved = p.gov.ResolveApproval(resolve, metadata=p.md).approval
    assert resolved.state == approval_pb2.APPROVAL_STATE_APPROVED and resolved.comment == "ok"
    assert resolved.reviewer and resolved.resolve_time.seconds > 0
    assert p.gov.ResolveApproval(resolve, metadata=p.md).approval == resolved  # retry: unchanged
    resolve.state = approval_pb2.APPROVAL_STATE_REJECTED
    error = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, p.gov.ResolveApproval, resolve, metadata=p.md
    )
    assert error.reason == "ERROR_REASON_APPROVAL_ALREADY_RESOLVED"
    watched = events.get(timeout=5)
    assert watched.state == approval_pb2.APPROVAL_STATE_APPROVED
    assert events.get(timeout=5) == "end"  # the stream ends after the outcome

    # Presenting it: one ALLOW, then it is used up and the request is decided afresh.
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        p.check,
        "tool:refund",
        md=p.agent,
        resource="order/42",
        context={"order": 42, "amount": 999},
        approval_id=held.approval_id,
    )
    assert "approval_id" in error.field_violations
    used = p.check(
        "tool:refund",
        md=p.agent,
        resource="order/42",
        context=context,
        approval_id=held.approval_id,
    )
    assert used.decision == D.DECISION_ALLOW and used.approval_id == held.approval_id
    assert used.cache_ttl.ToMicroseconds() == 0
    again = p.check(
        "tool:refund",
        md=p.agent,
        resource="order/42",
        context=context,
        approval_id=held.approval_id,
    )
    assert again.decision == D.DECISION_REQUIRE_APPROVAL and again.approval_id != held.approval_id
    assert (
        p.gov.GetApproval(
            pb.GetApprovalRequest(approval_id=held.approval_id), metadata=p.md
        ).approval.use_time.seconds
        > 0
    )

    # Rejected: DENY.
    p.gov.ResolveApproval(
        pb.ResolveApprovalRequest(
            approval_id=other.approval_id, state=approval_pb2.APPROVAL_STATE_REJECTED
        ),
        metadata=p.md,
    )
    rejected = p.check(
        "tool:refund",
        md=p.agent,
        resource="order/42",
        context={"order": 43},
        approval_id=other.approval_id,
    )
    assert rejected.decision == D.DECISION_DENY
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        p.check,
        "tool:refund",
        md=p.agent,
        approval_id="apr_doesnotexist",
    )


def test_approvals_expire(p: Project, backend: str) -> None:
    p.policy("review-all", REVIEW)
    held = p.check("tool:x", md=p.agent)
    _age_approval(p, held.approval_id)
    approval = p.gov.GetApproval(
        pb.GetApprovalRequest(approval_id=held.approval_id), metadata=p.md
    ).approval
    assert approval.state == approval_pb2.APPROVAL_STATE_EXPIRED
    events = _watch_approval(p, held.approval_id)
    assert events.get(timeout=5).state == approval_pb2.APPROVAL_STATE_EXPIRED
    assert events.get(timeout=5) == "end"
    error = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        p.gov.ResolveApproval,
        pb.ResolveApprovalRequest(
            approval_id=held.approval_id, state=approval_pb2.APPROVAL_STATE_APPROVED
        ),
        metadata=p.md,
    )
    assert error.reason == "ERROR_REASON_APPROVAL_EXPIRED"
    # An expired approval is ignored: the check opens a new one.
    fresh = p.check("tool:x", md=p.agent, approval_id=held.approval_id)
    assert fresh.decision == D.DECISION_REQUIRE_APPROVAL and fresh.approval_id != held.approval_id
    expired = p.gov.ListApprovals(
        pb.ListApprovalsRequest(state=approval_pb2.APPROVAL_STATE_EXPIRED), metadata=p.md
    ).approvals
    assert [a.approval_id for a in expired] == [held.approval_id]


def _age_approval(p: Project, approval_id: str) -> None:
    """Move an approval's expiry into the past, as if a day had gone by."""
    import sqlite3

    import psycopg

    sql = "UPDATE governance_approvals SET expire_time_us = 1 WHERE approval_id = "
    url = p.server.database_url
    if url is None:
        with sqlite3.connect(p.server.data_dir / "agentplane.db", timeout=30) as db:
            db.execute(sql + "?", (approval_id,))
    else:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as db:
            db.execute(sql + "%s", (approval_id,))


# -- ValidateOutput ----------------------------------------------------------------------------


def test_validate_output_detectors_and_verdicts(p: Project) -> None:
    content = "Write to jane.doe@example.com or call +1 415-555-2671. Card 4111 1111 1111 1111."
    flagged = p.gov.ValidateOutput(
        pb.ValidateOutputRequest(agent_id="billing", content=content), metadata=p.md
    )
    assert flagged.verdict == D.VERDICT_FLAG_FOR_REVIEW  # the card is HIGH
    found = [
        (f.detector, content.encode()[f.start_offset : f.end_offset].decode())
        for f in flagged.findings
    ]
    assert found == [
        (D.DETECTOR_EMAIL, "jane.doe@example.com"),
        (D.DETECTOR_PHONE, "+1 415-555-2671"),
        (D.DETECTOR_CARD_NUMBER, "4111 1111 1111 1111"),
    ]
    assert flagged.findings[0].redacted_snippet == "j*******@e******.com"
    assert "jane" not in flagged.redacted_content and "4111 1111" not in flagged.redacted_content
    assert flagged.redacted_content.startswith("Write to ********************")

    accepted = p.gov.ValidateOutput(
        pb.ValidateOutputRequest(
            agent_id="billing", content="héllo jane@example.com", checks=[D.DETECTOR_EMAIL]
        ),
        metadata=p.md,
    )
    assert accepted.verdict == D.VERDICT_ACCEPT
    assert (accepted.findings[0].start_offset, accepted.findings[0].end_offset) == (7, 23)

    secret = p.gov.ValidateOutput(
        pb.ValidateOutputRequest(
            agent_id="billing", content="use key AKIAIOSFODNN7EXAMPLE", request_id=uid("r")
        ),
        metadata=p.md,
    )
    assert secret.verdict == D.VERDICT_REJECT
    assert secret.findings[0].detector_name == "aws_access_key"
    trust = p.gov.GetTrustScore(
        pb.GetTrustScoreRequest(agent_id="billing"), metadata=p.md
    ).trust_score
    assert trust.score == pytest.approx(0.5 * 0.85) and trust.event_count == 1
    events = p.gov.ListTrustEvents(pb.ListTrustEventsRequest(agent_id="billing"), metadata=p.md)
    assert events.trust_events[0].cause == trust_pb2.TRUST_EVENT_CAUSE_OUTPUT_REJECTED
    assert events.trust_events[0].decision_id == secret.decision_id
    record = eventually(
        lambda: (
            p.gov.GetDecision(
                pb.GetDecisionRequest(decision_id=secret.decision_id), metadata=p.md
            ).decision_record
        )
    )
    assert record.kind == D.DECISION_KIND_VALIDATE_OUTPUT and record.verdict == D.VERDICT_REJECT
    assert "IOSFODNN7EXAMPLE" not in str(record) and record.request_summary["content_length"] == 28


def test_validate_output_policy_checks_and_model(p: Project) -> None:
    p.policy(
        "no-sql", DENY, actions=["output:*"], condition="request.content.contains('DROP TABLE')"
    )
    p.policy(
        "review-json",
        REVIEW,
        actions=["output:*"],
        condition="request.content_type == 'application/json'",
    )
    rejected = p.gov.ValidateOutput(
        pb.ValidateOutputRequest(
            agent_id="billing", action="output:reply", content="DROP TABLE users"
        ),
        metadata=p.md,
    )
    assert rejected.verdict == D.VERDICT_REJECT
    policy_finding = rejected.findings[0]
    assert (policy_finding.detector, policy_finding.policy_id, policy_finding.severity) == (
        D.DETECTOR_POLICY,
        "no-sql",
        D.SEVERITY_CRITICAL,
    )
    assert (policy_finding.start_offset, policy_finding.end_offset) == (0, 0)
    review = p.gov.ValidateOutput(
        pb.ValidateOutputRequest(
            agent_id="billing", action="output:reply", content="{}", content_type="application/json"
        ),
        metadata=p.md,
    )
    assert review.verdict == D.VERDICT_FLAG_FOR_REVIEW
    # No Triton behind this server: MODEL asked for explicitly cannot run
    # (tests/test_validate_output_guard.py runs it against a real one).
    error = expect_error(
        grpc.StatusCode.UNAVAILABLE,
        p.gov.ValidateOutput,
        pb.ValidateOutputRequest(agent_id="billing", content="x", checks=[D.DETECTOR_MODEL]),
        metadata=p.md,
    )
    assert error.reason == "ERROR_REASON_INFERENCE_UNAVAILABLE"


# -- trust -------------------------------------------------------------------------------------


def test_trust_moves_with_reports_and_manual_changes(p: Project) -> None:
    base = p.gov.GetTrustScore(pb.GetTrustScoreRequest(), metadata=p.agent).trust_score
    assert (base.agent_id, base.score, base.event_count) == ("billing", 0.5, 0)
    assert not base.HasField("update_time")
    report = pb.ReportExecutionRequest(
        action="tool:db.query", outcome=trust_pb2.EXECUTION_OUTCOME_SUCCESS, request_id=uid("r")
    )
    report.duration.FromMilliseconds(120)
    up = p.gov.ReportExecution(report, metadata=p.agent)
    assert up.trust_score.score == pytest.approx(0.525)
    assert up.trust_event.cause == trust_pb2.TRUST_EVENT_CAUSE_EXECUTION_SUCCESS
    assert up.trust_event.delta == pytest.approx(0.025) and up.trust_event.action == "tool:db.query"
    assert p.gov.ReportExecution(report, metadata=p.agent) == up  # the retry counts once
    violation = p.gov.ReportExecution(
        pb.ReportExecutionRequest(action="tool:x", outcome=trust_pb2.EXECUTION_OUTCOME_VIOLATION),
        metadata=p.agent,
    )
    assert violation.trust_score.score == pytest.approx(0.525 * 0.7)
    assert violation.trust_score.tier == trust_pb2.TRUST_TIER_LOW
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        p.gov.ReportExecution,
        pb.ReportExecutionRequest(agent_id="search", action="x", outcome=1),
        metadata=p.agent,
    )
    assert error.reason == "ERROR_REASON_AGENT_IDENTITY_MISMATCH"
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        p.gov.AdjustTrustScore,
        pb.AdjustTrustScoreRequest(agent_id="billing", delta=0.5),
        metadata=p.reader,
    )
    manual = p.gov.AdjustTrustScore(
        pb.AdjustTrustScoreRequest(agent_id="billing", delta=0.9, comment="vetted"), metadata=p.md
    )
    assert manual.trust_score.score == 1.0 and manual.trust_event.comment == "vetted"
    assert (
        manual.trust_event.actor and manual.trust_event.cause == trust_pb2.TRUST_EVENT_CAUSE_MANUAL
    )
    p.gov.AdjustTrustScore(pb.AdjustTrustScoreRequest(agent_id="search", score=0.1), metadata=p.md)

    events = p.gov.ListTrustEvents(pb.ListTrustEventsRequest(agent_id="billing"), metadata=p.md)
    assert [e.cause for e in events.trust_events] == [
        trust_pb2.TRUST_EVENT_CAUSE_MANUAL,
        trust_pb2.TRUST_EVENT_CAUSE_EXECUTION_VIOLATION,
        trust_pb2.TRUST_EVENT_CAUSE_EXECUTION_SUCCESS,
    ]
    by_cause = p.gov.ListTrustEvents(
        pb.ListTrustEventsRequest(cause=trust_pb2.TRUST_EVENT_CAUSE_MANUAL, page_size=1),
        metadata=p.md,
    )
    assert [e.agent_id for e in by_cause.trust_events] == ["search"] and by_cause.next_page_token
    scores = p.gov.ListTrustScores(pb.ListTrustScoresRequest(), metadata=p.md).trust_scores
    assert [(s.agent_id, s.tier) for s in scores] == [
        ("billing", trust_pb2.TRUST_TIER_HIGH),
        ("search", trust_pb2.TRUST_TIER_UNTRUSTED),
    ]
    low = p.gov.ListTrustScores(
        pb.ListTrustScoresRequest(tier=trust_pb2.TRUST_TIER_UNTRUSTED), metadata=p.md
    ).trust_scores
    assert [s.agent_id for s in low] == ["search"]
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        p.gov.ListTrustEvents,
        pb.ListTrustEventsRequest(),
        metadata=p.agent,
    )


# -- dry runs and the policy stream ------------------------------------------------------------


def test_evaluate_policies_explains_without_side_effects(p: Project) -> None:
    p.policy("db", ALLOW, priority=1, actions=["tool:db.*"])
    p.policy("off", DENY, priority=9, enabled=False)
    candidate = policy_pb2.Policy(
        policy_id="cand", effect=DENY, priority=5, resources=["db://prod/**"], min_trust_score=0.4
    )
    result = p.gov.EvaluatePolicies(
        pb.EvaluatePoliciesRequest(
            agent_id="billing",
            action="tool:db.query",
            resource="db://prod/users",
            candidate_policies=[candidate],
        ),
        metadata=p.md,
    )
    assert result.decision == D.DECISION_DENY and result.deciding_policy_id == "cand"
    assert list(result.matched_policy_ids) == ["cand", "db"]
    by_id = {e.policy_id: e for e in result.explanations}
    assert by_id["cand"].decided and by_id["cand"].candidate_index == 0
    assert (
        by_id["db"].matched
        and not by_id["db"].decided
        and not by_id["db"].HasField("candidate_index")
    )
    assert "off" not in by_id  # disabled stored policies are not considered
    low_trust = p.gov.EvaluatePolicies(
        pb.EvaluatePoliciesRequest(
            agent_id="billing",
            action="tool:db.query",
            resource="db://prod/users",
            candidate_policies=[candidate],
            trust_score=0.1,
            only_candidates=True,
        ),
        metadata=p.md,
    )
    assert low_trust.decision == D.DECISION_DENY and not low_trust.deciding_policy_id
    [explained] = low_trust.explanations
    assert (
        not explained.trust_matched
        and explained.resource_matched
        and "trust" in explained.explanation
    )
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        p.gov.EvaluatePolicies,
        pb.EvaluatePoliciesRequest(
            agent_id="billing",
            action="x",
            candidate_policies=[
                policy_pb2.Policy(effect=ALLOW),
                policy_pb2.Policy(effect=ALLOW, condition="("),
            ],
        ),
        metadata=p.md,
    )
    assert error.reason == "ERROR_REASON_POLICY_INVALID"
    assert "candidate_policies[1].condition" in error.field_violations
    # Nothing was logged and no approval was opened.
    assert p.gov.ListDecisions(pb.ListDecisionsRequest(), metadata=p.md).decision_records == []


def test_watch_policies_snapshot_and_changes(p: Project) -> None:
    p.register("billing", labels={"team": "billing"}, framework="adk")
    p.policy("mine", ALLOW, agents=policy_pb2.AgentSelector(labels={"team": "billing"}))
    p.policy("theirs", ALLOW, agents=policy_pb2.AgentSelector(agent_ids=["search"]))
    messages: queue.Queue = queue.Queue()
    call = p.gov.WatchPolicies(pb.WatchPoliciesRequest(), metadata=p.agent, timeout=30)

    def pump() -> None:
        try:
            for message in call:
                messages.put(message)
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = messages.get(timeout=5)
        snapshot = first.snapshot
        assert [x.policy_id for x in snapshot.policies] == ["mine"]
        assert snapshot.default_decision == D.DECISION_DENY and snapshot.cache_ttl.seconds == 30
        assert snapshot.agent["registered"] is True and snapshot.agent["framework"] == "adk"
        assert snapshot.agent["labels"]["team"] == "billing"
        assert snapshot.trust_score.score == 0.5
        version = first.snapshot_version
        added = p.policy("new", DENY, priority=3)
        upsert = messages.get(timeout=5)
        assert upsert.upserted_policy == added and upsert.snapshot_version > version
        p.gov.UpdatePolicy(
            pb.UpdatePolicyRequest(
                policy=policy_pb2.Policy(policy_id="mine", enabled=False),
                update_mask=mask("enabled"),
            ),
            metadata=p.md,
        )
        deleted = messages.get(timeout=5)
        assert (
            deleted.deleted_policy_id == "mine"
            and deleted.snapshot_version > upsert.snapshot_version
        )
        p.gov.ReportExecution(
            pb.ReportExecutionRequest(action="x", outcome=trust_pb2.EXECUTION_OUTCOME_SUCCESS),
            metadata=p.agent,
        )
        trust = messages.get(timeout=5)
        assert trust.trust_score.score == pytest.approx(0.525)
        assert trust.snapshot_version == deleted.snapshot_version
        p.gov.UpdateGovernanceSettings(
            pb.UpdateGovernanceSettingsRequest(
                settings=governance_settings_pb2.GovernanceSettings(
                    default_decision=D.DECISION_ALLOW
                ),
                update_mask=mask("default_decision"),
            ),
            metadata=p.md,
        )
        fresh = messages.get(timeout=5)
        assert fresh.snapshot.default_decision == D.DECISION_ALLOW
        assert [x.policy_id for x in fresh.snapshot.policies] == ["new"]
    finally:
        call.cancel()


# -- who may call what -------------------------------------------------------------------------


def test_credentials_and_roles(p: Project) -> None:
    # Agents check for themselves only; other credentials must name the agent.
    assert p.check(md=p.agent).decision == D.DECISION_DENY
    error = expect_error(grpc.StatusCode.PERMISSION_DENIED, p.check, md=p.agent, agent_id="search")
    assert error.reason == "ERROR_REASON_AGENT_IDENTITY_MISMATCH"
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        p.gov.CheckPermission,
        pb.CheckPermissionRequest(action="x"),
        metadata=p.md,
    )
    assert "agent_id" in error.field_violations
    expect_error(grpc.StatusCode.PERMISSION_DENIED, p.check, md=p.reader, agent_id="billing")
    for call, request in (
        (p.gov.CreatePolicy, pb.CreatePolicyRequest(policy=policy_pb2.Policy(name="x", effect=1))),
        (p.gov.ListPolicies, pb.ListPoliciesRequest()),
        (p.gov.ListDecisions, pb.ListDecisionsRequest()),
        (p.gov.GetGovernanceSettings, pb.GetGovernanceSettingsRequest()),
        (p.gov.ListApprovals, pb.ListApprovalsRequest()),
    ):
        error = expect_error(grpc.StatusCode.PERMISSION_DENIED, call, request, metadata=p.agent)
        assert error.reason == "ERROR_REASON_PERMISSION_DENIED"
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        p.gov.CreatePolicy,
        pb.CreatePolicyRequest(policy=policy_pb2.Policy(name="x", effect=1)),
        metadata=p.reader,
    )
    assert p.gov.ListPolicies(pb.ListPoliciesRequest(), metadata=p.reader).policies == []
    # Another project's policies and decisions are not visible.
    other = Project(p.server)
    p.policy("private", ALLOW)
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        other.gov.GetPolicy,
        pb.GetPolicyRequest(policy_id="private"),
        metadata=other.md,
    )
    assert other.check().decision == D.DECISION_DENY


def test_housekeeping_expires_pending_approvals(p: Project) -> None:
    p.policy("review", REVIEW)
    held = p.check(md=p.agent)
    _age_approval(p, held.approval_id)

    def recorded() -> bool:
        listed = p.gov.ListApprovals(pb.ListApprovalsRequest(), metadata=p.md).approvals
        return (
            listed[0].state == approval_pb2.APPROVAL_STATE_EXPIRED
            and listed[0].update_time.seconds > 1
        )

    eventually(recorded, timeout=5)
    assert struct({"a": 1})["a"] == 1
