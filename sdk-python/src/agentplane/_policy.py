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
The rule itself (selectors, globs, priority and effect order, ties, trust, default) is
``agentplane.decision``, the module the server decides with; this module keeps the stream's
state and indexes each snapshot once (``RuleIndex``) so that a decision does little work.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from agentplane.decision import (
    Outcome,
    OutcomeTuple,
    Rule,
    RuleIndex,
    decide_candidates,
    decide_tuple,
    glob_match,
)
from agentplane.governance.v1 import (
    decision_pb2,
    governance_service_pb2,
    trust_pb2,
)

__all__ = ["LocalDecision", "PolicyState", "glob_match", "trust_matches"]

ALLOW = decision_pb2.DECISION_ALLOW
DENY = decision_pb2.DECISION_DENY
REQUIRE_APPROVAL = decision_pb2.DECISION_REQUIRE_APPROVAL
_NO_LABELS: dict[str, str] = {}


class LocalDecision(NamedTuple):  # a tuple: built on every local decision, cheaply
    decision: int
    reasons: tuple[str, ...]
    deciding_policy_id: str
    matched_policy_ids: tuple[str, ...]


def trust_range(trust: trust_pb2.TrustScore | None) -> tuple[float, float]:
    """The range the agent's score lies in until the next update: it decays from the last
    score toward the baseline. Unknown (no score yet): anything from 0 up."""
    if trust is None:
        return 0.0, float("inf")
    low, high = sorted((trust.score, trust.baseline))
    return low, high


def trust_matches(minimum: float, trust: trust_pb2.TrustScore | None) -> bool | None:
    """True/False when the (decaying) score is surely above/below ``minimum``; None if unsure."""
    if minimum <= 0:
        return True
    low, high = trust_range(trust)
    if low >= minimum:
        return True
    if high < minimum:
        return False
    return None


@dataclass
class PolicyState:
    """One agent's policy state, kept from a WatchPolicies stream. Thread-safe."""

    policies: dict[str, Rule] = field(default_factory=dict)
    index: RuleIndex = field(default_factory=lambda: RuleIndex(()))
    default_decision: int = DENY
    trust: trust_pb2.TrustScore | None = None
    trust_score: float | None = None  # trust.score, read once per update
    trust_low: float = 0.0
    trust_high: float = float("inf")
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
                self.policies = {p.policy_id: Rule(p) for p in snapshot.policies}
                self.default_decision = snapshot.default_decision or DENY
                self._set_trust(snapshot.trust_score if snapshot.HasField("trust_score") else None)
                self.cache_ttl = snapshot.cache_ttl.ToTimedelta().total_seconds()
                self.have_snapshot = True
                self.connected = True
                self.lost_at = None
            elif kind == "upserted_policy":
                policy = message.upserted_policy
                if policy.HasField("enabled") and not policy.enabled:
                    self.policies.pop(policy.policy_id, None)
                else:
                    self.policies[policy.policy_id] = Rule(policy)
            elif kind == "deleted_policy_id":
                self.policies.pop(message.deleted_policy_id, None)
            elif kind == "trust_score":
                self._set_trust(message.trust_score)
            self.snapshot_version = max(self.snapshot_version, message.snapshot_version)
            if kind != "trust_score":
                self.index = RuleIndex(self.policies.values())

    def _set_trust(self, trust: trust_pb2.TrustScore | None) -> None:
        self.trust = trust
        self.trust_score = trust.score if trust is not None else None
        self.trust_low, self.trust_high = trust_range(trust)

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

    def outcome(self, action: str, resource: str) -> Outcome:
        """The shared rule's outcome from this state: every policy here selects the agent;
        conditions are unknown (UNDECIDABLE when one could decide), and so is a minimum trust
        inside the range the score may have decayed to."""
        return decide_candidates(
            self.index.selecting(action),
            action,
            resource,
            self.trust_low,
            self.trust_high,
            self.default_decision,
        )

    def local(self, action: str, resource: str) -> OutcomeTuple | None:
        """The outcome (as decide_tuple's) when it is ALLOW or DENY as CheckPermission would
        decide it, or None to ask the server: when the rule cannot decide here, when the
        outcome is REQUIRE_APPROVAL (the server opens the approval), and when a budget applies
        to an ALLOW (the server charges it)."""
        if not self.connected and not self.usable():
            return None
        outcome = decide_tuple(
            self.index.selecting(action),
            action,
            resource,
            self.trust_low,
            self.trust_high,
            self.default_decision,
        )
        decision = outcome[0]
        if decision == DENY:
            return outcome
        if decision != ALLOW:
            return None  # UNDECIDABLE or REQUIRE_APPROVAL
        for rule in outcome[2]:  # matched
            if rule.budgeted:
                return None  # budgets are charged by the server
        for rule in outcome[5]:  # unknown
            if rule.budgeted:
                return None
        return outcome

    def decide(self, action: str, resource: str) -> LocalDecision | None:
        """``local`` as a LocalDecision."""
        outcome = self.local(action, resource)
        if outcome is None:
            return None
        decision, deciding, matched, reasons, _, _ = outcome
        return LocalDecision(
            decision,
            tuple(reasons),
            deciding.policy_id if deciding is not None else "",
            tuple(r.policy_id for r in matched),
        )
