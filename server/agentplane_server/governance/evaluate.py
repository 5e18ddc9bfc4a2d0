"""The policy decision on the server: the shared rule (agentplane.decision, the same module
the SDKs decide locally with) fed with the server's request view and its CEL engine.

The rule: among the matching policies the highest priority wins; at equal priority DENY beats
REQUIRE_APPROVAL beats ALLOW; remaining ties are broken by policy_id. No match: the project's
default decision. An evaluation error in a condition never widens access. Budgets are applied
afterwards (logic.py), because they need the spend ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentplane import decision as rule
from agentplane.decision import ALLOW, DENY, EFFECT_VERB, Explanation, Outcome, Rule
from agentplane.governance.v1 import policy_pb2, trust_pb2
from agentplane_server.governance.conditions import (
    AgentVar,
    EvaluationError,
    RequestVar,
    TrustVar,
    activation,
    compile_condition,
)

# The shared rule's names, as the server's modules import them from here.
__all__ = ["ALLOW", "DENY", "EFFECT_VERB", "Explanation", "Outcome"]

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


class CompiledPolicy(Rule):
    """A stored or candidate policy with its CEL condition compiled (once per policy version);
    the decision rule itself is agentplane.decision's, shared with the SDKs."""

    __slots__ = ()

    def __init__(self, policy: policy_pb2.Policy, index: int = -1) -> None:
        super().__init__(
            policy, index, compile_condition(policy.condition) if policy.condition else None
        )

    @classmethod
    def uncompilable(cls, policy: policy_pb2.Policy, problem: str) -> CompiledPolicy:
        """A stored policy whose condition no longer compiles (e.g. under a stricter limit of a
        newer version): its condition fails on every request, so a DENY or REQUIRE_APPROVAL
        policy still applies and an ALLOW policy does not. Failing closed, never wider."""
        compiled = cls.__new__(cls)
        Rule.__init__(compiled, policy, -1, _BrokenCondition(problem))
        return compiled

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


class _BrokenCondition:
    """Stands in for a stored condition that no longer compiles."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def evaluate(self, bindings: Any) -> bool:
        raise EvaluationError(f"the stored condition no longer compiles: {self.problem}")


def decide(
    policies: Iterable[CompiledPolicy],
    subject: Subject,
    default_decision: int,
    *,
    explain: bool = False,
    prefiltered: bool = False,
) -> Outcome:
    """The decision for `subject` (agentplane.decision.decide with the server's CEL engine).
    With `prefiltered`, `policies` are already known to be enabled, to select the agent and to
    match the action (the hot path's cached candidates); otherwise every criterion is checked."""
    agent = subject.agent
    return rule.decide(
        policies,
        agent_id=agent.agent_id,
        labels=agent.labels,
        action=subject.action,
        resource=subject.resource,
        trust_score=subject.trust_score,
        default_decision=default_decision,
        condition=lambda policy: policy.condition_result(subject),  # type: ignore[attr-defined]
        explain=explain,
        prefiltered=prefiltered,
    )
