"""The policy decision, as a pure function of the policies and one request.

Among the matching policies the highest priority wins; at equal priority DENY beats
REQUIRE_APPROVAL beats ALLOW; remaining ties are broken by policy_id, so the outcome never
depends on the order policies are given in. No match: the project's default decision.
An evaluation error in a condition never widens access: an ALLOW policy then does not match,
a DENY or REQUIRE_APPROVAL policy does. Budgets are applied afterwards (logic.py), because
they need the spend ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agentplane.governance.v1 import decision_pb2, policy_pb2, trust_pb2
from agentplane_server.governance.conditions import (
    AgentVar,
    Condition,
    EvaluationError,
    RequestVar,
    TrustVar,
    activation,
    compile_condition,
)
from agentplane_server.governance.globs import compile_glob

ALLOW = policy_pb2.POLICY_EFFECT_ALLOW
DENY = policy_pb2.POLICY_EFFECT_DENY
REQUIRE_APPROVAL = policy_pb2.POLICY_EFFECT_REQUIRE_APPROVAL
EFFECT_RANK = {DENY: 0, REQUIRE_APPROVAL: 1, ALLOW: 2}
EFFECT_DECISION = {
    ALLOW: decision_pb2.DECISION_ALLOW,
    DENY: decision_pb2.DECISION_DENY,
    REQUIRE_APPROVAL: decision_pb2.DECISION_REQUIRE_APPROVAL,
}
EFFECT_NAME = {ALLOW: "ALLOW", DENY: "DENY", REQUIRE_APPROVAL: "REQUIRE_APPROVAL"}
EFFECT_VERB = {ALLOW: "allows", DENY: "denies", REQUIRE_APPROVAL: "requires approval for"}
DECISION_NAME = {
    decision_pb2.DECISION_ALLOW: "ALLOW",
    decision_pb2.DECISION_DENY: "DENY",
    decision_pb2.DECISION_REQUIRE_APPROVAL: "REQUIRE_APPROVAL",
}
TIER_NAME = {
    trust_pb2.TRUST_TIER_UNTRUSTED: "UNTRUSTED",
    trust_pb2.TRUST_TIER_LOW: "LOW",
    trust_pb2.TRUST_TIER_MEDIUM: "MEDIUM",
    trust_pb2.TRUST_TIER_HIGH: "HIGH",
}


def trust_tier(score: float) -> int:
    """UNTRUSTED [0, 0.2), LOW [0.2, 0.5), MEDIUM [0.5, 0.8), HIGH [0.8, 1] (fixed)."""
    if score >= 0.8:
        return trust_pb2.TRUST_TIER_HIGH
    if score >= 0.5:
        return trust_pb2.TRUST_TIER_MEDIUM
    if score >= 0.2:
        return trust_pb2.TRUST_TIER_LOW
    return trust_pb2.TRUST_TIER_UNTRUSTED


@dataclass(frozen=True, slots=True)
class AgentView:
    """What policies know about an agent: its registration (labels for selectors, the
    `agent` variable of conditions)."""

    agent_id: str
    registered: bool = False
    status: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    framework: str = ""
    sdk_language: str = ""
    skill_ids: tuple[str, ...] = ()
    lease_expire_time_us: int = 0

    def status_at(self, now_us: int) -> str:
        if self.registered and self.status == "ACTIVE" and self.lease_expire_time_us <= now_us:
            return "STALE"
        return self.status

    def as_json(self, now_us: int) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "registered": self.registered,
            "status": self.status_at(now_us),
            "labels": dict(self.labels),
            "framework": self.framework,
            "sdk_language": self.sdk_language,
            "skill_ids": list(self.skill_ids),
        }


@dataclass(slots=True)
class Subject:
    """One request to decide (CheckPermission, EvaluatePolicies, or ValidateOutput's POLICY
    check) with the agent and trust it is decided with."""

    agent: AgentView
    action: str
    resource: str = ""
    context: Any = None  # google.protobuf.Struct or None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0
    content: str = ""
    content_type: str = ""
    trust_score: float = 0.5
    now_us: int = 0
    _activation: Any = None

    def bindings(self) -> Any:
        """The CEL variables, built on first use (most checks evaluate no condition)."""
        if self._activation is None:
            agent = self.agent
            request = RequestVar(
                agent_id=agent.agent_id,
                action=self.action,
                resource=self.resource,
                content=self.content,
                content_type=self.content_type,
            )
            usage = request.usage_estimate
            usage.input_tokens = self.input_tokens
            usage.output_tokens = self.output_tokens
            usage.cost_micros = self.cost_micros
            context = struct_to_dict(self.context) if self.context is not None else {}
            self._activation = activation(
                request,
                context,
                AgentVar(**agent.as_json(self.now_us)),
                TrustVar(score=self.trust_score, tier=TIER_NAME[trust_tier(self.trust_score)]),
            )
        return self._activation


def struct_to_dict(struct: Any) -> dict[str, Any]:
    """google.protobuf.Struct as plain Python values (several times faster than
    json_format.MessageToDict, which builds the result through the generic reflection path)."""
    return {key: _value(value) for key, value in struct.fields.items()}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        # JSON has one number type; integral values become CEL ints so `context.n == 3`
        # and `context.n > 2` read naturally (CEL does not compare int with double).
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    return None


Matcher = Callable[[str], Any]


class CompiledPolicy:
    """A policy ready to evaluate: globs and condition compiled once per policy version."""

    __slots__ = (
        "actions",
        "agent_ids",
        "agent_patterns",
        "budgets",
        "condition",
        "effect",
        "enabled",
        "index",
        "labels",
        "min_trust",
        "policy",
        "policy_id",
        "priority",
        "resources",
        "sort_key",
        "version",
    )

    def __init__(self, policy: policy_pb2.Policy, index: int = -1) -> None:
        self.policy = policy
        self.policy_id = policy.policy_id
        self.effect = policy.effect
        self.priority = policy.priority
        self.enabled = policy.enabled if policy.HasField("enabled") else True
        self.version = policy.version
        self.index = index  # candidate index in EvaluatePolicies; -1 for stored policies
        selector = policy.agents
        self.agent_ids = frozenset(selector.agent_ids)
        self.agent_patterns: tuple[Matcher, ...] = tuple(
            compile_glob(p) for p in selector.agent_id_patterns
        )
        self.labels = tuple(sorted(selector.labels.items()))
        self.actions: tuple[Matcher, ...] = tuple(compile_glob(p) for p in policy.actions)
        self.resources: tuple[Matcher, ...] = tuple(compile_glob(p) for p in policy.resources)
        self.min_trust = policy.min_trust_score
        self.condition: Condition | None = (
            compile_condition(policy.condition) if policy.condition else None
        )
        self.budgets = tuple(policy.budgets)
        self.sort_key = (-self.priority, EFFECT_RANK[self.effect], self.policy_id, index)

    def selects(self, agent: AgentView) -> bool:
        if (self.agent_ids or self.agent_patterns) and not (
            agent.agent_id in self.agent_ids
            or any(m(agent.agent_id) is not None for m in self.agent_patterns)
        ):
            return False
        labels = agent.labels
        return all(labels.get(k) == v for k, v in self.labels)

    def action_matches(self, action: str) -> bool:
        return not self.actions or any(m(action) is not None for m in self.actions)

    def resource_matches(self, resource: str) -> bool:
        return not self.resources or any(m(resource) is not None for m in self.resources)

    def condition_result(self, subject: Subject) -> tuple[bool, str]:
        """(matched, evaluation error). An error matches DENY and REQUIRE_APPROVAL policies
        and does not match ALLOW policies: an error never widens access."""
        if self.condition is None:
            return True, ""
        try:
            return self.condition.evaluate(subject.bindings()), ""
        except EvaluationError as exc:
            return self.effect != ALLOW, str(exc)
        except Exception as exc:
            return self.effect != ALLOW, str(exc)[:300] or type(exc).__name__

    @property
    def label(self) -> str:
        if self.policy_id:
            return self.policy_id
        return f"candidate_policies[{self.index}]"


@dataclass(slots=True)
class Explanation:
    policy: CompiledPolicy
    agent_matched: bool
    action_matched: bool
    resource_matched: bool
    trust_matched: bool
    condition_matched: bool
    condition_error: str

    @property
    def matched(self) -> bool:
        return (
            self.policy.enabled
            and self.agent_matched
            and self.action_matched
            and self.resource_matched
            and self.trust_matched
            and self.condition_matched
        )


@dataclass(slots=True)
class Outcome:
    decision: int
    deciding: CompiledPolicy | None
    matched: list[CompiledPolicy]  # deciding first, then by priority
    reasons: list[str]
    explanations: list[Explanation] | None = None


def _describe(action: str, resource: str) -> str:
    return f"{action} on {resource}" if resource else action


def evaluate_policy(policy: CompiledPolicy, subject: Subject) -> Explanation:
    """Every criterion of one policy (EvaluatePolicies shows each)."""
    condition, error = policy.condition_result(subject)
    return Explanation(
        policy=policy,
        agent_matched=policy.selects(subject.agent),
        action_matched=policy.action_matches(subject.action),
        resource_matched=policy.resource_matches(subject.resource),
        trust_matched=subject.trust_score >= policy.min_trust,
        condition_matched=condition,
        condition_error=error,
    )


def decide(
    policies: Iterable[CompiledPolicy],
    subject: Subject,
    default_decision: int,
    *,
    explain: bool = False,
    prefiltered: bool = False,
) -> Outcome:
    """The decision for `subject`. With `prefiltered`, `policies` are already known to be
    enabled, to select the agent and to match the action (the hot path's cached candidates);
    otherwise every criterion is checked."""
    matched: list[CompiledPolicy] = []
    reasons: list[str] = []
    explanations: list[Explanation] | None = [] if explain else None
    for policy in policies:
        if explain:
            explanation = evaluate_policy(policy, subject)
            assert explanations is not None
            explanations.append(explanation)
            if explanation.matched:
                matched.append(policy)
                if explanation.condition_error:
                    reasons.append(_condition_error_reason(policy, explanation.condition_error))
            elif explanation.condition_error and policy.enabled:
                reasons.append(_condition_error_reason(policy, explanation.condition_error))
            continue
        if not prefiltered and not (
            policy.enabled
            and policy.selects(subject.agent)
            and policy.action_matches(subject.action)
        ):
            continue
        if not policy.resource_matches(subject.resource):
            continue
        if subject.trust_score < policy.min_trust:
            continue
        ok, error = policy.condition_result(subject)
        if error:
            reasons.append(_condition_error_reason(policy, error))
        if ok:
            matched.append(policy)
    matched.sort(key=_sort_key)
    if explanations is not None:
        explanations.sort(key=lambda e: e.policy.sort_key)
    where = _describe(subject.action, subject.resource)
    if not matched:
        decision = default_decision or decision_pb2.DECISION_DENY
        reasons.insert(
            0,
            f"no policy matches {where}; the project's default decision is "
            f"{DECISION_NAME[decision]}",
        )
        return Outcome(decision, None, matched, reasons, explanations)
    deciding = matched[0]
    reasons.insert(0, f"policy {deciding.label} {EFFECT_VERB[deciding.effect]} {where}")
    return Outcome(EFFECT_DECISION[deciding.effect], deciding, matched, reasons, explanations)


def _sort_key(policy: CompiledPolicy) -> tuple:
    return policy.sort_key


def _condition_error_reason(policy: CompiledPolicy, error: str) -> str:
    consequence = "does not match" if policy.effect == ALLOW else "matches"
    return (
        f"policy {policy.label}: the condition could not be evaluated ({error}); "
        f"the policy (effect {EFFECT_NAME[policy.effect]}) therefore {consequence}"
    )
