"""The governance decision rule: which policy decides a request, as a pure function.

One rule, used by the server's CheckPermission / EvaluatePolicies / ValidateOutput and by the SDKs'
local decisions (the TypeScript SDK's ``decision.ts`` is a port of this module; a differential
test keeps the server, this module and the port identical):

- a policy matches a request when it is enabled, its agent selector selects the agent
  (``agent_ids`` or ``agent_id_patterns``, when any is given, and every label), one of its
  ``actions`` and one of its ``resources`` globs matches (empty lists match everything), the
  agent's trust score is at least ``min_trust_score``, and its CEL ``condition`` holds;
- among matching policies the highest priority wins; at equal priority DENY beats
  REQUIRE_APPROVAL beats ALLOW; remaining ties go to the smallest policy_id (then the smallest
  candidate index), so the outcome never depends on the order policies are given in;
- no match: the project's default decision (DENY when unset);
- a condition that cannot be evaluated never widens access: an ALLOW policy then does not
  match, a DENY or REQUIRE_APPROVAL policy does.

The rule carries no CEL engine: whoever decides passes ``condition``, a callable that evaluates
a policy's condition (the server's CEL engine). Without one, or when it answers ``None``, the
condition is unknown; a trust score known only within a range (an SDK between two trust
updates) can leave ``min_trust_score`` unknown too. When a policy whose match is unknown could
outrank every policy known to match, the outcome is ``UNDECIDABLE`` and ``undecided_by`` names
it: the caller must ask the server. Budgets are applied by the server after the rule.

Globs (``actions``, ``resources``, ``agent_id_patterns``): ``*`` matches any run of characters
except "/", ``**`` any run of characters, ``?`` one character except "/", anything else itself;
the whole string must match.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentplane.governance.v1 import decision_pb2, policy_pb2

__all__ = [
    "ALLOW",
    "DECISION_NAME",
    "DENY",
    "EFFECT_DECISION",
    "EFFECT_NAME",
    "EFFECT_RANK",
    "EFFECT_VERB",
    "REQUIRE_APPROVAL",
    "UNDECIDABLE",
    "ConditionResult",
    "Explanation",
    "Outcome",
    "Rule",
    "RuleIndex",
    "compile_glob",
    "decide",
    "decide_candidates",
    "decide_tuple",
    "glob_match",
]

# Policy effects.
ALLOW = policy_pb2.POLICY_EFFECT_ALLOW
DENY = policy_pb2.POLICY_EFFECT_DENY
REQUIRE_APPROVAL = policy_pb2.POLICY_EFFECT_REQUIRE_APPROVAL
# Outcome.decision when the rule cannot decide without the server (see `undecided_by`).
UNDECIDABLE = decision_pb2.DECISION_UNSPECIFIED

EFFECT_RANK = {DENY: 0, REQUIRE_APPROVAL: 1, ALLOW: 2}  # smaller wins at equal priority
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

Matcher = Callable[[str], Any]  # truthy when the glob matches the whole string

# (matched, error): matched None means "unknown" (the caller cannot evaluate it).
ConditionResult = tuple["bool | None", str]


@functools.lru_cache(maxsize=16384)
def compile_glob(pattern: str) -> Matcher:
    """A glob as a matcher: plain string equality when it has no wildcard, else a compiled
    regular expression. fnmatch and glob differ from the contract's dialect ("*" crosses "/",
    "[...]" classes), hence this short translation."""
    if "*" not in pattern and "?" not in pattern:
        return pattern.__eq__
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                parts.append(".*")
                i += 2
                continue
            parts.append("[^/]*")
        elif ch == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL).fullmatch


def glob_match(pattern: str, text: str) -> bool:
    return bool(compile_glob(pattern)(text))


class Rule:
    """A policy ready to decide with: globs compiled once per policy version.

    ``condition`` is whatever the caller's ``condition`` callable evaluates (the server passes
    its compiled CEL program); ``has_condition`` says whether the policy has one at all.
    """

    __slots__ = (
        "actions",
        "agent_ids",
        "agent_patterns",
        "budgeted",
        "budgets",
        "condition",
        "decision",
        "effect",
        "enabled",
        "has_condition",
        "index",
        "labels",
        "literal_actions",
        "min_trust",
        "policy",
        "policy_id",
        "priority",
        "resources",
        "sort_key",
        "verdict",
        "version",
    )

    def __init__(self, policy: policy_pb2.Policy, index: int = -1, condition: Any = None) -> None:
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
        # The actions when every one is a plain string (RuleIndex buckets them), else None.
        self.literal_actions: tuple[str, ...] | None = (
            tuple(policy.actions)
            if policy.actions and not any("*" in a or "?" in a for a in policy.actions)
            else None
        )
        self.resources: tuple[Matcher, ...] = tuple(compile_glob(p) for p in policy.resources)
        self.min_trust = policy.min_trust_score
        self.has_condition = bool(policy.condition)
        self.condition = condition
        self.budgets = tuple(policy.budgets)
        # A budget the server charges when the policy matches an allowed request.
        self.budgeted = bool(self.budgets) and self.effect != DENY
        self.sort_key = (-self.priority, EFFECT_RANK.get(self.effect, 3), self.policy_id, index)
        # What deciding means, worked out once: the decision and its reason's first words.
        self.decision = EFFECT_DECISION.get(self.effect, decision_pb2.DECISION_DENY)
        self.verdict = f"policy {self.label} {EFFECT_VERB.get(self.effect, 'decides')} "

    def selects(self, agent_id: str, labels: Mapping[str, str]) -> bool:
        if (self.agent_ids or self.agent_patterns) and not (
            agent_id in self.agent_ids or any(m(agent_id) for m in self.agent_patterns)
        ):
            return False
        return all(labels.get(k) == v for k, v in self.labels)

    def action_matches(self, action: str) -> bool:
        return not self.actions or any(m(action) for m in self.actions)

    def resource_matches(self, resource: str) -> bool:
        return not self.resources or any(m(resource) for m in self.resources)

    def trust_matches(self, low: float, high: float) -> bool | None:
        """True/False when every score in [low, high] is / is not at least min_trust_score;
        None when it depends on where in the range the score is."""
        if low >= self.min_trust:
            return True
        if high < self.min_trust:
            return False
        return None

    @property
    def label(self) -> str:
        if self.policy_id:
            return self.policy_id
        return f"candidate_policies[{self.index}]"


@dataclass(slots=True)
class Explanation:
    """Every criterion of one policy for one request (EvaluatePolicies shows each)."""

    policy: Rule
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
    """The rule's answer. ``decision`` is a decision_pb2.Decision, or UNDECIDABLE with the
    policy that could not be decided in ``undecided_by``."""

    decision: int
    deciding: Rule | None
    matched: list[Rule]  # deciding first, then in deciding order
    reasons: list[str]
    explanations: list[Explanation] | None = None
    undecided_by: Rule | None = None
    unknown: list[Rule] = field(default_factory=list)  # rules whose match is unknown


def _unknown_condition(rule: Rule) -> ConditionResult:
    return None, ""


def decide(
    rules: Iterable[Rule],
    *,
    agent_id: str,
    labels: Mapping[str, str],
    action: str,
    resource: str,
    trust_score: float,
    default_decision: int,
    condition: Callable[[Rule], ConditionResult] | None = None,
    trust_ceiling: float | None = None,
    explain: bool = False,
    prefiltered: bool = False,
) -> Outcome:
    """The decision for one request.

    ``condition(rule)`` evaluates the condition of a rule that has one: (matched, error), with
    matched None when it cannot be evaluated here (without the callable every condition is
    unknown). ``trust_score`` is the agent's score, or with ``trust_ceiling`` the lowest score
    of the range it is known to lie in. With ``prefiltered`` the rules are already known to be
    enabled, to select the agent and to match the action (a cached candidate list); otherwise
    every criterion is checked. ``explain`` fills Outcome.explanations (conditions must then be
    decidable). Reasons: the deciding sentence first, then one per condition error.
    """
    if condition is None:
        condition = _unknown_condition
    low = trust_score
    high = trust_score if trust_ceiling is None else trust_ceiling
    if explain:
        return _explain(
            rules, agent_id, labels, action, resource, low, high, default_decision, condition
        )
    if not prefiltered:
        rules = [
            r
            for r in rules
            if r.enabled and r.selects(agent_id, labels) and r.action_matches(action)
        ]
    return decide_candidates(rules, action, resource, low, high, default_decision, condition)


def decide_candidates(
    candidates: Iterable[Rule],
    action: str,
    resource: str,
    trust_low: float,
    trust_high: float,
    default_decision: int,
    condition: Callable[[Rule], ConditionResult] = _unknown_condition,
) -> Outcome:
    """``decide`` for rules already known to be enabled, to select the agent and to match the
    action (positional arguments: the hot path of every decision)."""
    decision, deciding, matched, reasons, undecided_by, unknown = decide_tuple(
        candidates, action, resource, trust_low, trust_high, default_decision, condition
    )
    return Outcome(decision, deciding, matched, reasons, None, undecided_by, unknown)


# decide_tuple's answer: (decision, deciding, matched, reasons, undecided_by, unknown), as in
# Outcome.
OutcomeTuple = tuple[int, "Rule | None", list[Rule], list[str], "Rule | None", list[Rule]]


def decide_tuple(
    candidates: Iterable[Rule],
    action: str,
    resource: str,
    trust_low: float,
    trust_high: float,
    default_decision: int,
    condition: Callable[[Rule], ConditionResult] = _unknown_condition,
) -> OutcomeTuple:
    """``decide_candidates`` as a tuple. SDK local decisions want a few microseconds, and on
    that scale building an Outcome object costs as much as deciding; hence also the inlined
    Rule methods below."""
    matched: list[Rule] = []
    unknown: list[Rule] = []
    reasons: list[str] = []
    for rule in candidates:
        if rule.resources:
            for match in rule.resources:
                if match(resource):
                    break
            else:
                continue
        minimum = rule.min_trust
        if trust_low >= minimum:
            trust_ok: bool | None = True
        elif trust_high < minimum:
            continue
        else:
            trust_ok = None
        if rule.has_condition:
            ok, error = condition(rule)
            if error:
                reasons.append(_condition_error_reason(rule, error))
        else:
            ok = True
        if trust_ok is None or ok is None:
            unknown.append(rule)
        elif ok:
            matched.append(rule)
    if len(matched) > 1:
        matched.sort(key=_sort_key)
    if matched and not unknown and not reasons:  # the common case, without _conclude's call
        deciding = matched[0]
        where = f"{action} on {resource}" if resource else action
        return deciding.decision, deciding, matched, [deciding.verdict + where], None, unknown
    return _conclude(matched, unknown, reasons, action, resource, default_decision)


def _explain(
    rules: Iterable[Rule],
    agent_id: str,
    labels: Mapping[str, str],
    action: str,
    resource: str,
    low: float,
    high: float,
    default_decision: int,
    condition: Callable[[Rule], ConditionResult],
) -> Outcome:
    """decide(explain=True): every criterion of every rule, for EvaluatePolicies."""
    matched: list[Rule] = []
    reasons: list[str] = []
    explanations: list[Explanation] = []
    for rule in rules:
        ok, error = condition(rule) if rule.has_condition else (True, "")
        explanation = Explanation(
            policy=rule,
            agent_matched=rule.selects(agent_id, labels),
            action_matched=rule.action_matches(action),
            resource_matched=rule.resource_matches(resource),
            trust_matched=bool(rule.trust_matches(low, high)),
            condition_matched=bool(ok),
            condition_error=error,
        )
        explanations.append(explanation)
        if explanation.matched:
            matched.append(rule)
            if error:
                reasons.append(_condition_error_reason(rule, error))
        elif error and rule.enabled:
            reasons.append(_condition_error_reason(rule, error))
    matched.sort(key=_sort_key)
    explanations.sort(key=lambda e: e.policy.sort_key)
    decision, deciding, matched, reasons, _, _ = _conclude(
        matched, [], reasons, action, resource, default_decision
    )
    return Outcome(decision, deciding, matched, reasons, explanations)


def _conclude(
    matched: list[Rule],
    unknown: list[Rule],
    reasons: list[str],
    action: str,
    resource: str,
    default_decision: int,
) -> OutcomeTuple:
    """The outcome from the matching rules (in deciding order) and those whose match is
    unknown."""
    where = f"{action} on {resource}" if resource else action
    if unknown:
        first_unknown = min(unknown, key=_sort_key)
        if not matched or first_unknown.sort_key < matched[0].sort_key:
            reasons.insert(
                0,
                f"policy {first_unknown.label} may decide {where}, "
                "but whether it matches cannot be known here",
            )
            return UNDECIDABLE, None, matched, reasons, first_unknown, unknown
    if not matched:
        decision = default_decision or decision_pb2.DECISION_DENY
        reasons.insert(
            0,
            f"no policy matches {where}; the project's default decision is "
            f"{DECISION_NAME[decision]}",
        )
        return decision, None, matched, reasons, None, unknown
    deciding = matched[0]
    reasons.insert(0, deciding.verdict + where)
    return deciding.decision, deciding, matched, reasons, None, unknown


def _sort_key(rule: Rule) -> tuple:
    return rule.sort_key


def _condition_error_reason(rule: Rule, error: str) -> str:
    consequence = "does not match" if rule.effect == ALLOW else "matches"
    return (
        f"policy {rule.label}: the condition could not be evaluated ({error}); "
        f"the policy (effect {EFFECT_NAME[rule.effect]}) therefore {consequence}"
    )


class RuleIndex:
    """The enabled rules of one snapshot, indexed to decide many requests quickly: rules whose
    actions are all plain strings are bucketed by action, and each bucket is merged, once, with
    the rules that have glob actions (or none) in deciding order. ``candidates(action)`` is then
    one dict lookup; the glob rules in it are still checked against the action, once per action
    (``selecting``)."""

    __slots__ = ("_by_action", "_globbed", "_selecting", "rules")
    MAX_ACTIONS = 4096  # remembered selections per snapshot (agents use a handful of actions)

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: list[Rule] = sorted((r for r in rules if r.enabled), key=_sort_key)
        # (rule, action already known to match) in deciding order.
        self._globbed: tuple[tuple[Rule, bool], ...] = tuple(
            (r, not r.actions) for r in self.rules if r.literal_actions is None
        )
        buckets: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for action in rule.literal_actions or ():
                bucket = buckets.setdefault(action, [])
                if not bucket or bucket[-1] is not rule:
                    bucket.append(rule)
        self._by_action: dict[str, tuple[tuple[Rule, bool], ...]] = {
            action: tuple(
                sorted(
                    [(r, True) for r in bucket] + list(self._globbed),
                    key=lambda pair: pair[0].sort_key,
                )
            )
            for action, bucket in buckets.items()
        }
        self._selecting: dict[str, tuple[Rule, ...]] = {}

    def candidates(self, action: str) -> Sequence[tuple[Rule, bool]]:
        """(rule, action known to match) for every rule that may match ``action``, in
        deciding order."""
        return self._by_action.get(action, self._globbed)

    def selecting(self, action: str) -> tuple[Rule, ...]:
        """The rules matching ``action``, in deciding order (for decide(prefiltered=True)).
        Worked out once per action and snapshot: only the action's globs decide it."""
        found = self._selecting.get(action)
        if found is None:
            found = tuple(
                r for r, known in self.candidates(action) if known or r.action_matches(action)
            )
            if len(self._selecting) >= self.MAX_ACTIONS:
                self._selecting.clear()
            self._selecting[action] = found
        return found
