"""The SDK's local decisions (agentplane._policy): the contract's globs and deciding rules, and
every case where the SDK must defer to CheckPermission. Pure functions, no server."""

from __future__ import annotations

import datetime
import time

import pytest

from agentplane._policy import PolicyState, glob_match, trust_matches
from agentplane.governance.v1 import decision_pb2, governance_service_pb2, policy_pb2, trust_pb2

ALLOW, DENY = decision_pb2.DECISION_ALLOW, decision_pb2.DECISION_DENY


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("tool:db.*", "tool:db.query", True),
        ("tool:db.*", "tool:db/x", False),  # * stops at "/"
        ("db://prod/**", "db://prod/users/1", True),
        ("db://prod/*", "db://prod/users/1", False),
        ("tool:?", "tool:a", True),
        ("tool:?", "tool:/", False),
        ("a.b", "axb", False),  # "." is literal
        ("exact", "exact", True),
        ("exact", "exactly", False),  # the whole string must match
    ],
)
def test_globs(pattern: str, value: str, expected: bool) -> None:
    assert glob_match(pattern, value) is expected


def state(
    *policies: dict, default: int = DENY, trust: float = 0.5, baseline: float = 0.5
) -> PolicyState:  # type: ignore[type-arg]
    snapshot = governance_service_pb2.PolicySnapshot(
        policies=[policy_pb2.Policy(**p) for p in policies],
        default_decision=default,
        trust_score=trust_pb2.TrustScore(score=trust, baseline=baseline),
        cache_ttl=datetime.timedelta(seconds=30),
    )
    result = PolicyState()
    result.apply(
        governance_service_pb2.WatchPoliciesResponse(snapshot_version=1, snapshot=snapshot)
    )
    return result


def allow(policy_id: str, **kwargs: object) -> dict:  # type: ignore[type-arg]
    return {"policy_id": policy_id, "effect": policy_pb2.POLICY_EFFECT_ALLOW, **kwargs}


def deny(policy_id: str, **kwargs: object) -> dict:  # type: ignore[type-arg]
    return {"policy_id": policy_id, "effect": policy_pb2.POLICY_EFFECT_DENY, **kwargs}


def test_priority_then_effect_decides() -> None:
    s = state(allow("a", actions=["tool:*"], priority=5), deny("d", actions=["tool:x"]))
    assert s.decide("tool:x", "").decision == ALLOW  # higher priority wins
    s = state(allow("a", actions=["tool:*"]), deny("d", actions=["tool:x"]))
    decision = s.decide("tool:x", "")
    assert decision.decision == DENY and decision.deciding_policy_id == "d"  # DENY wins a tie
    assert decision.matched_policy_ids == ("d", "a")
    assert s.decide("tool:y", "").decision == ALLOW
    assert s.decide("other", "").decision == DENY  # the default
    assert state(default=ALLOW).decide("anything", "").decision == ALLOW
    s = state(allow("r", resources=["db://prod/**"]))
    assert s.decide("q", "db://prod/t").decision == ALLOW
    assert s.decide("q", "db://dev/t").decision == DENY


def test_defers_to_the_server_when_unsure() -> None:
    # A condition may decide: ask the server (unless a surer policy already outranks it).
    s = state(allow("c", actions=["pay"], condition="context.amount < 100"))
    assert s.decide("pay", "") is None
    s = state(deny("d", actions=["pay"], priority=9), allow("c", actions=["pay"], condition="x"))
    assert s.decide("pay", "").decision == DENY
    # REQUIRE_APPROVAL and budgets belong to the server.
    s = state({"policy_id": "h", "effect": policy_pb2.POLICY_EFFECT_REQUIRE_APPROVAL})
    assert s.decide("pay", "") is None
    budget = {"metric": "BUDGET_METRIC_CALLS", "limit": 5, "window": datetime.timedelta(minutes=1)}
    assert state(allow("b", budgets=[budget])).decide("pay", "") is None
    assert state(default=decision_pb2.DECISION_REQUIRE_APPROVAL).decide("x", "") is None
    # A minimum trust between the score and the baseline it decays toward: unsure.
    s = state(allow("t", min_trust_score=0.6), trust=0.7, baseline=0.5)
    assert s.decide("x", "") is None
    assert state(allow("t", min_trust_score=0.6), trust=0.9, baseline=0.7).decide("x", "")
    assert state(allow("t", min_trust_score=0.6), trust=0.4).decide("x", "").decision == DENY


def test_trust_bounds() -> None:
    score = trust_pb2.TrustScore(score=0.3, baseline=0.5)
    assert trust_matches(0, score) is True
    assert trust_matches(0.2, score) is True
    assert trust_matches(0.6, score) is False
    assert trust_matches(0.4, score) is None


def test_changes_and_staleness() -> None:
    s = state(allow("a", actions=["x"]))
    upsert = governance_service_pb2.WatchPoliciesResponse(
        snapshot_version=2, upserted_policy=policy_pb2.Policy(**deny("d", actions=["x"]))
    )
    s.apply(upsert)
    assert s.decide("x", "").decision == DENY
    s.apply(governance_service_pb2.WatchPoliciesResponse(snapshot_version=3, deleted_policy_id="d"))
    assert s.decide("x", "").decision == ALLOW
    disabled = policy_pb2.Policy(**allow("a", actions=["x"]), enabled=False)
    s.apply(
        governance_service_pb2.WatchPoliciesResponse(snapshot_version=4, upserted_policy=disabled)
    )
    assert s.decide("x", "").decision == DENY
    assert s.snapshot_version == 4
    # Lost stream: usable for cache_ttl, then no more local decisions.
    s.lost()
    assert s.decide("x", "") is not None
    s.lost_at = time.monotonic() - 31
    assert s.decide("x", "") is None
    assert PolicyState().decide("x", "") is None  # no snapshot yet
