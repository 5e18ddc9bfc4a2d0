"""Deciding locally from the WatchPolicies stream, exactly as CheckPermission would, or not at all.

The stream gives one agent's effective state: the enabled policies that select it, the
project's default decision, its trust score and cache_ttl. ``PolicyState.decide`` answers ALLOW or
DENY only when the answer cannot differ from the server's; otherwise it returns None and the
caller asks CheckPermission. It returns None when
- a policy that could decide has a CEL ``condition`` (evaluated by the server only: the SDK
  carries no CEL engine, and a second engine could disagree with the server's),
- a policy's ``min_trust_score`` lies between the agent's last score and the baseline it decays
  toward (the decayed score could fall on either side),
- the outcome would be REQUIRE_APPROVAL, or an ALLOW that a matching policy's budget applies to
  (budgets are charged by the server),
- the stream is lost and cache_ttl has passed since (the contract's limit for local decisions).
Deciding (Policy message): among matching policies the highest priority wins; at equal
priority DENY beats REQUIRE_APPROVAL beats ALLOW; no match gives the default decision.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

from agentplane.governance.v1 import (
    decision_pb2,
    governance_service_pb2,
    policy_pb2,
    trust_pb2,
)

ALLOW = decision_pb2.DECISION_ALLOW
DENY = decision_pb2.DECISION_DENY
REQUIRE_APPROVAL = decision_pb2.DECISION_REQUIRE_APPROVAL

_EFFECT_DECISION = {
    policy_pb2.POLICY_EFFECT_ALLOW: ALLOW,
    policy_pb2.POLICY_EFFECT_DENY: DENY,
    policy_pb2.POLICY_EFFECT_REQUIRE_APPROVAL: REQUIRE_APPROVAL,
}
# At equal priority DENY beats REQUIRE_APPROVAL beats ALLOW.
_EFFECT_RANK = {
    policy_pb2.POLICY_EFFECT_ALLOW: 0,
    policy_pb2.POLICY_EFFECT_REQUIRE_APPROVAL: 1,
    policy_pb2.POLICY_EFFECT_DENY: 2,
}


@lru_cache(maxsize=4096)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """The contract's globs: ``*`` any run without "/", ``**`` any run, ``?`` one non-"/"."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_match(pattern: str, value: str) -> bool:
    return glob_regex(pattern).fullmatch(value) is not None


@dataclass(frozen=True)
class LocalDecision:
    decision: int
    reasons: tuple[str, ...]
    deciding_policy_id: str
    matched_policy_ids: tuple[str, ...]


@dataclass
class _Compiled:
    policy: policy_pb2.Policy
    key: tuple[int, int]  # (priority, effect rank): larger wins
    actions: tuple[re.Pattern[str], ...]
    resources: tuple[re.Pattern[str], ...]

    @classmethod
    def of(cls, policy: policy_pb2.Policy) -> _Compiled:
        return cls(
            policy,
            (policy.priority, _EFFECT_RANK.get(policy.effect, -1)),
            tuple(glob_regex(p) for p in policy.actions),
            tuple(glob_regex(p) for p in policy.resources),
        )

    def matches_target(self, action: str, resource: str) -> bool:
        if self.actions and not any(r.fullmatch(action) for r in self.actions):
            return False
        return not self.resources or any(r.fullmatch(resource) for r in self.resources)


def trust_matches(minimum: float, trust: trust_pb2.TrustScore | None) -> bool | None:
    """True/False when the (decaying) score is surely above/below ``minimum``; None if unsure."""
    if minimum <= 0:
        return True
    if trust is None:
        return None
    low, high = sorted((trust.score, trust.baseline))
    if low >= minimum:
        return True
    if high < minimum:
        return False
    return None


@dataclass
class PolicyState:
    """One agent's policy state, kept from a WatchPolicies stream. Thread-safe."""

    policies: dict[str, _Compiled] = field(default_factory=dict)
    ordered: list[_Compiled] = field(default_factory=list)
    default_decision: int = DENY
    trust: trust_pb2.TrustScore | None = None
    cache_ttl: float = 0.0
    snapshot_version: int = 0
    have_snapshot: bool = False
    connected: bool = False
    lost_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def apply(self, message: governance_service_pb2.WatchPoliciesResponse) -> None:
        with self._lock:
            kind = message.WhichOneof("change")
            if kind == "snapshot":
                snapshot = message.snapshot
                self.policies = {p.policy_id: _Compiled.of(p) for p in snapshot.policies}
                self.default_decision = snapshot.default_decision or DENY
                self.trust = snapshot.trust_score if snapshot.HasField("trust_score") else None
                self.cache_ttl = snapshot.cache_ttl.ToTimedelta().total_seconds()
                self.have_snapshot = True
                self.connected = True
                self.lost_at = None
            elif kind == "upserted_policy":
                policy = message.upserted_policy
                if policy.HasField("enabled") and not policy.enabled:
                    self.policies.pop(policy.policy_id, None)
                else:
                    self.policies[policy.policy_id] = _Compiled.of(policy)
            elif kind == "deleted_policy_id":
                self.policies.pop(message.deleted_policy_id, None)
            elif kind == "trust_score":
                self.trust = message.trust_score
            self.snapshot_version = max(self.snapshot_version, message.snapshot_version)
            self.ordered = sorted(self.policies.values(), key=lambda c: c.key, reverse=True)

    def lost(self) -> None:
        with self._lock:
            if self.connected:
                self.connected = False
                self.lost_at = time.monotonic()

    def usable(self, now: float | None = None) -> bool:
        if not self.have_snapshot:
            return False
        if self.connected:
            return True
        now = time.monotonic() if now is None else now
        return self.lost_at is not None and now - self.lost_at < self.cache_ttl

    def decide(self, action: str, resource: str) -> LocalDecision | None:
        """ALLOW or DENY as CheckPermission would decide it, or None to ask the server."""
        if not self.usable():
            return None
        ordered, trust, default = self.ordered, self.trust, self.default_decision
        winner: _Compiled | None = None
        matched: list[_Compiled] = []
        unsure: list[_Compiled] = []
        for compiled in ordered:  # highest (priority, rank) first
            if not compiled.matches_target(action, resource):
                continue
            policy = compiled.policy
            trust_ok = trust_matches(policy.min_trust_score, trust)
            if trust_ok is False:
                continue
            if trust_ok is None or policy.condition:
                unsure.append(compiled)
                continue
            matched.append(compiled)
            if winner is None:
                winner = compiled
        if winner is None:
            if unsure:
                return None
            if default not in (ALLOW, DENY):
                return None
            verb = "allows" if default == ALLOW else "denies"
            return LocalDecision(
                default, (f"no policy matches; the project's default decision {verb}",), "", ()
            )
        if any(u.key > winner.key for u in unsure):
            return None  # an unsure policy could win
        decision = _EFFECT_DECISION.get(winner.policy.effect)
        if decision not in (ALLOW, DENY):
            return None
        if decision == ALLOW and any(
            c.policy.budgets and c.policy.effect != policy_pb2.POLICY_EFFECT_DENY
            for c in (*matched, *unsure)
        ):
            return None  # budgets are charged by the server
        verb = "allows" if decision == ALLOW else "denies"
        policy_id = winner.policy.policy_id
        return LocalDecision(
            decision,
            (f"policy {policy_id} {verb} {action}" + (f" on {resource}" if resource else ""),),
            policy_id,
            tuple(c.policy.policy_id for c in matched),
        )
