"""CreatePolicy with ids the caller chose: a setup script run twice must not make duplicates."""

from __future__ import annotations

import grpc
import pytest
from rpcutil import expect_error
from test_governance_helpers import Project, uid

from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane.governance.v1 import policy_pb2

DENY = policy_pb2.POLICY_EFFECT_DENY


@pytest.fixture
def p(server) -> Project:  # type: ignore[no-untyped-def]
    return Project(server)


def names(p: Project) -> list[str]:
    listed = p.gov.ListPolicies(pb.ListPoliciesRequest(page_size=100), metadata=p.md)
    return sorted(policy.policy_id for policy in listed.policies)


def test_policy_id_inside_the_policy_is_honoured(p: Project) -> None:
    chosen = uid("setup")
    request = pb.CreatePolicyRequest(
        policy=policy_pb2.Policy(policy_id=chosen, name="n", effect=DENY)
    )
    created = p.gov.CreatePolicy(request, metadata=p.md).policy
    assert created.policy_id == chosen
    # Re-running the setup: the same id is refused, and no second policy appears.
    error = expect_error(grpc.StatusCode.ALREADY_EXISTS, p.gov.CreatePolicy, request, metadata=p.md)
    assert error.metadata["resource_id"] == chosen
    assert names(p) == [chosen]


def test_same_request_id_is_idempotent_and_a_different_policy_under_it_is_refused(
    p: Project,
) -> None:
    chosen, request_id = uid("pol"), uid("req")
    request = pb.CreatePolicyRequest(
        policy_id=chosen, request_id=request_id, policy=policy_pb2.Policy(name="n", effect=DENY)
    )
    first = p.gov.CreatePolicy(request, metadata=p.md).policy
    again = p.gov.CreatePolicy(request, metadata=p.md).policy
    assert again == first
    changed = pb.CreatePolicyRequest()
    changed.CopyFrom(request)
    changed.policy.priority = 7
    expect_error(grpc.StatusCode.ALREADY_EXISTS, p.gov.CreatePolicy, changed, metadata=p.md)
    assert names(p) == [chosen]


def test_two_different_ids_are_refused_and_nothing_is_stored(p: Project) -> None:
    request = pb.CreatePolicyRequest(
        policy_id="outer", policy=policy_pb2.Policy(policy_id="inner", name="n", effect=DENY)
    )
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, p.gov.CreatePolicy, request, metadata=p.md
    )
    assert "policy.policy_id differs from policy_id" in " ".join(
        [error.message, *error.field_violations.values()]
    )
    # Both set to the same id is fine.
    request.policy.policy_id = "outer"
    assert p.gov.CreatePolicy(request, metadata=p.md).policy.policy_id == "outer"
    assert names(p) == ["outer"]


def test_a_malformed_policy_id_inside_the_policy_is_a_field_violation(p: Project) -> None:
    request = pb.CreatePolicyRequest(
        policy=policy_pb2.Policy(policy_id="-bad id", name="n", effect=DENY)
    )
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, p.gov.CreatePolicy, request, metadata=p.md
    )
    assert "policy.policy_id" in error.field_violations
    assert names(p) == []
