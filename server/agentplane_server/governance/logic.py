"""GovernanceService behaviour.

CheckPermission decides from the in-memory ProjectSnapshot (snapshot.py) and does not wait on
the database, except to open or use an approval and, when the caller sends a request_id, to
remember the answer for retries. Budgets are charged in memory and written behind
(budgets.py); every decision is queued for the decision log, which is written behind in
batches (decision_log.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane.governance.v1 import (
    approval_pb2,
    decision_pb2,
    governance_settings_pb2,
    policy_pb2,
    trust_pb2,
)
from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane_server.admin.logic import require_project_admin
from agentplane_server.authz import acting_agent
from agentplane_server.context import Principal, Role
from agentplane_server.errors import (
    AlreadyExists,
    ApiError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    etag_mismatch,
    request_id_conflict,
)
from agentplane_server.governance import detectors, store
from agentplane_server.governance.budgets import BudgetLedger, budget_key, usage_amount
from agentplane_server.governance.classifier import OutputClassifier
from agentplane_server.governance.conditions import ConditionError
from agentplane_server.governance.decision_log import DecisionLog
from agentplane_server.governance.detector_pool import DetectorPool
from agentplane_server.governance.evaluate import (
    ALLOW,
    DENY,
    EFFECT_VERB,
    CompiledPolicy,
    Explanation,
    Outcome,
    Subject,
    decide,
    trust_tier,
)
from agentplane_server.governance.snapshot import ProjectSnapshot, Snapshots, policy_from_row
from agentplane_server.governance.trust import (
    OUTCOME_CAUSE,
    record_event,
    score_message,
    state_from_row,
)
from agentplane_server.pagination import PageTokens, clamp_page_size
from agentplane_server.registry.logic import Waiters
from agentplane_server.resources import new_id, parse_etag
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)

D = decision_pb2
A = approval_pb2
MAX_CONTEXT_BYTES = 64 * 1024
SUMMARY_CONTEXT_BYTES = 4 * 1024
POLICY_PAGE = (50, 500)
TRUST_PAGE = (50, 500)
TRUST_EVENT_PAGE = (50, 1000)
APPROVAL_PAGE = (50, 500)
DECISION_PAGE = (50, 1000)
RECENT_CHARGES = 100_000
DETECTOR_PROCESS_BYTES = 16 * 1024  # larger content is scanned in the detector process
DEFAULT_CHECKS = [
    D.DETECTOR_EMAIL,
    D.DETECTOR_PHONE,
    D.DETECTOR_CARD_NUMBER,
    D.DETECTOR_SECRET,
    D.DETECTOR_POLICY,
]
POLICY_PATHS = {
    "name",
    "description",
    "effect",
    "priority",
    "agents",
    "actions",
    "resources",
    "condition",
    "min_trust_score",
    "budgets",
    "enabled",
}
_DURATION_DEFAULTS = {
    "trust_decay_half_life": store.DEFAULT_SETTINGS.trust_half_life_us,
    "approval_expiry": store.DEFAULT_SETTINGS.approval_expiry_us,
    "decision_cache_ttl": store.DEFAULT_SETTINGS.decision_cache_ttl_us,
}
_DURATION_COLUMNS = {
    "trust_decay_half_life": "trust_half_life_us",
    "approval_expiry": "approval_expiry_us",
    "decision_cache_ttl": "decision_cache_ttl_us",
}


def _duration(us: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMicroseconds(us)
    return d


def _check_context(field_name: str, context: struct_pb2.Struct) -> None:
    if context.ByteSize() > MAX_CONTEXT_BYTES:
        raise InvalidArgument.field(field_name, f"must be at most {MAX_CONTEXT_BYTES} bytes")


def _policy_invalid(field_name: str, error: ConditionError) -> InvalidArgument:
    return InvalidArgument(
        f"invalid {field_name}: {error.description}",
        reason=ErrorReason.ERROR_REASON_POLICY_INVALID,
        field_violations=[FieldViolation(field_name, error.description)],
    )


def _time_range(message: Any) -> tuple[int | None, int | None]:
    start = message.start_time.ToMicroseconds() if message.HasField("start_time") else None
    end = message.end_time.ToMicroseconds() if message.HasField("end_time") else None
    return start, end


def _request_hash(request: Any) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def _context_hash(agent_id: str, action: str, resource: str, context: struct_pb2.Struct) -> str:
    digest = hashlib.sha256()
    for part in (agent_id, action, resource):
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(context.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _principal_name(who: Principal) -> str:
    return who.subject or who.key_id or "unknown"


@dataclass(slots=True)
class Decided:
    """A CheckPermission outcome with what it charged, before it is logged."""

    response: pb.CheckPermissionResponse
    outcome: Outcome
    charges: list = field(default_factory=list)


class GovernanceLogic:
    def __init__(
        self,
        db: Database,
        page_tokens: PageTokens,
        *,
        poll_interval: float,
        watch_poll_interval: float,
        decision_log: DecisionLog,
        shutdown: asyncio.Event,
        classifier: OutputClassifier | None = None,
    ) -> None:
        self.db = db
        self.classifier = classifier
        self.page_tokens = page_tokens
        self.snapshots = Snapshots(db, poll_interval)
        self.ledger = BudgetLedger(db, poll_interval)
        self.decision_log = decision_log
        self.watch_poll_interval = watch_poll_interval
        self.shutdown = shutdown
        self.approval_waiters = Waiters()
        self.detector_pool = DetectorPool()
        # decision_id -> (project_id, charges) of recent budget-charging decisions, so that
        # ReportExecution can replace an estimate before the decision log is written.
        # decision_id -> (project_id, agent_id, charges).
        self._charges: OrderedDict[str, tuple[str, str, list]] = OrderedDict()

    def start(self) -> None:
        self.decision_log.start()
        self.ledger.start()

    async def stop(self, deadline_seconds: float = 30.0) -> None:
        await self.snapshots.stop()
        await self.ledger.stop()
        await self.decision_log.close(deadline_seconds)
        await self.detector_pool.close()

    # -- who may call ---------------------------------------------------------------------------

    @staticmethod
    def _agent_for(who: Principal, requested: str, field_name: str = "agent_id") -> str:
        if who.role is Role.AGENT:
            return acting_agent(who, requested, field_name)
        if not requested:
            raise InvalidArgument.field(
                field_name, "is required for credentials that are not agent credentials"
            )
        return requested

    @staticmethod
    def _not_agent(who: Principal, method: str) -> None:
        if who.role is Role.AGENT:
            raise PermissionDenied(
                f"{method} needs a project credential that is not an agent credential",
                reason=ErrorReason.ERROR_REASON_PERMISSION_DENIED,
            )

    def _admin(self, who: Principal, method: str) -> None:
        self._not_agent(who, method)
        require_project_admin(who, method)

    # -- CheckPermission ------------------------------------------------------------------------

    async def check(
        self, who: Principal, request: pb.CheckPermissionRequest
    ) -> pb.CheckPermissionResponse:
        started = time.perf_counter()
        agent_id = self._agent_for(who, request.agent_id)
        if request.HasField("context"):
            _check_context("context", request.context)
        self.decision_log.reserve()  # backpressure before anything is decided or charged
        if request.request_id:
            return await self._check_once(who, agent_id, request, started)
        decided = await self._check(who.project_id, agent_id, request)
        self._log_check(who.project_id, agent_id, request, decided, started)
        return decided.response

    async def _check_once(
        self, who: Principal, agent_id: str, request: pb.CheckPermissionRequest, started: float
    ) -> pb.CheckPermissionResponse:
        keyed = pb.CheckPermissionRequest()
        keyed.CopyFrom(request)
        keyed.agent_id = agent_id  # the same id reused by another agent is another request
        request_hash = _request_hash(keyed)
        method = "CheckPermission"
        async with self.db.read() as c:
            prior = await store.prior_response(c, who.project_id, method, request.request_id)
        if prior is not None:
            if prior.request_hash != request_hash:
                raise request_id_conflict(request.request_id)
            return pb.CheckPermissionResponse.FromString(bytes(prior.response))
        decided = await self._check(who.project_id, agent_id, request)
        async with self.db.write() as c:
            first = await store.remember_response(
                c,
                who.project_id,
                method,
                request.request_id,
                request_hash,
                decided.response.SerializeToString(),
                now_us(),
            )
            if not first:
                prior = await store.prior_response(c, who.project_id, method, request.request_id)
        if not first:
            # A concurrent retry answered first: undo this one's charges, answer as it did.
            for project_key, bucket, amount in decided.charges:
                self.ledger.add(project_key, bucket, -amount)
            if prior.request_hash != request_hash:
                raise request_id_conflict(request.request_id)
            return pb.CheckPermissionResponse.FromString(bytes(prior.response))
        self._log_check(who.project_id, agent_id, request, decided, started)
        return decided.response

    async def _check(
        self, project_id: str, agent_id: str, request: pb.CheckPermissionRequest
    ) -> Decided:
        snapshot = await self.snapshots.get(project_id)
        now = now_us()
        subject = self._subject(snapshot, agent_id, request, now)
        outcome = decide(
            snapshot.candidates(subject.agent, request.action),
            subject,
            snapshot.settings.default_decision,
            prefiltered=True,
        )
        response = pb.CheckPermissionResponse(
            decision_id=new_id("dec"),
            trust_score=subject.trust_score,
            trust_tier=trust_tier(subject.trust_score),
        )
        approval = None
        if request.approval_id:
            approval = await self._presented_approval(project_id, agent_id, request, now)
        decided = Decided(response, outcome)
        if approval is not None:
            response.approval_id = approval.approval_id
            if approval.state == A.APPROVAL_STATE_APPROVED:
                outcome.decision = D.DECISION_ALLOW
                outcome.reasons.insert(
                    0,
                    f"approval {approval.approval_id} was approved by {approval.reviewer}; "
                    "it allows this request once",
                )
            elif approval.state == A.APPROVAL_STATE_PENDING:
                outcome.decision = D.DECISION_REQUIRE_APPROVAL
                outcome.reasons.insert(0, f"approval {approval.approval_id} is still pending")
            else:
                outcome.decision = D.DECISION_DENY
                outcome.reasons.insert(
                    0, f"approval {approval.approval_id} was rejected by {approval.reviewer}"
                )
        budgeted = [p for p in outcome.matched if p.budgets and p.effect != DENY]
        statuses: list[pb.BudgetStatus] = []
        exceeded = False
        if budgeted:
            statuses, exceeded = self._budget_statuses(project_id, budgeted, subject, now)
            response.budgets.extend(statuses)
        if outcome.decision == D.DECISION_ALLOW and exceeded:
            outcome.decision = D.DECISION_DENY
            outcome.reasons.extend(_budget_reason(s) for s in statuses if s.exceeded)
        elif outcome.decision == D.DECISION_ALLOW:
            if (
                approval is not None
                and approval.state == A.APPROVAL_STATE_APPROVED
                and not await self._use_approval(approval.approval_id, now)
            ):
                # Used up by a concurrent check: decide as if it had not been sent.
                return await self._check(project_id, agent_id, _without_approval(request))
            if budgeted:
                decided.charges = self._charge(project_id, budgeted, subject, response.budgets, now)
        if outcome.decision == D.DECISION_REQUIRE_APPROVAL and not response.approval_id:
            response.approval_id = await self._open_approval(
                project_id, agent_id, request, outcome, response.decision_id, now, snapshot
            )
        response.decision = outcome.decision
        response.reasons.extend(outcome.reasons)
        if outcome.deciding is not None:
            response.deciding_policy_id = outcome.deciding.policy_id
        response.matched_policy_ids.extend(p.policy_id for p in outcome.matched)
        cacheable = (
            outcome.decision != D.DECISION_REQUIRE_APPROVAL
            and not decided.charges
            and approval is None
        )
        ttl = snapshot.settings.decision_cache_ttl_us if cacheable else 0
        response.cache_ttl.FromMicroseconds(ttl)
        return decided

    def _subject(self, snapshot: ProjectSnapshot, agent_id: str, request: Any, now: int) -> Subject:
        usage = request.usage_estimate
        return Subject(
            agent=snapshot.agent(agent_id),
            action=request.action,
            resource=request.resource,
            context=request.context if request.HasField("context") else None,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_micros=usage.cost_micros,
            trust_score=snapshot.trust_score(agent_id, now),
            now_us=now,
        )

    # -- budgets --------------------------------------------------------------------------------

    def _budget_statuses(
        self, project_id: str, policies: list[CompiledPolicy], subject: Subject, now: int
    ) -> tuple[list[pb.BudgetStatus], bool]:
        statuses: list[pb.BudgetStatus] = []
        exceeded_any = False
        for policy in policies:
            for budget in policy.budgets:
                key = (project_id, budget_key(policy.policy_id, budget, subject.agent.agent_id))
                window = budget.window.ToMicroseconds()
                spent = self.ledger.spent(key, window, now)
                amount = usage_amount(
                    budget.metric, subject.input_tokens, subject.output_tokens, subject.cost_micros
                )
                exceeded = spent + amount > budget.limit
                exceeded_any |= exceeded
                statuses.append(
                    pb.BudgetStatus(
                        policy_id=policy.policy_id, budget=budget, spent=spent, exceeded=exceeded
                    )
                )
        return statuses, exceeded_any

    def _charge(
        self,
        project_id: str,
        policies: list[CompiledPolicy],
        subject: Subject,
        statuses: list[pb.BudgetStatus],
        now: int,
    ) -> list:
        charges = []
        index = 0
        for policy in policies:
            for budget in policy.budgets:
                key = (project_id, budget_key(policy.policy_id, budget, subject.agent.agent_id))
                amount = usage_amount(
                    budget.metric, subject.input_tokens, subject.output_tokens, subject.cost_micros
                )
                bucket = self.ledger.charge(key, budget.window.ToMicroseconds(), amount, now)
                statuses[index].spent += amount
                charges.append((key, bucket, amount))
                index += 1
        return charges

    # -- approvals in checks --------------------------------------------------------------------

    async def _presented_approval(
        self, project_id: str, agent_id: str, request: Any, now: int
    ) -> approval_pb2.Approval | None:
        """The approval presented with a check, or None when it is expired or used up (the
        request is then decided as if none was sent)."""
        async with self.db.read() as c:
            row = await store.get_approval_row(c, project_id, request.approval_id)
        if row is None:
            raise NotFound(
                f"approval {request.approval_id!r} not found",
                metadata={"resource_type": "approval", "resource_id": request.approval_id},
            )
        context = request.context if request.HasField("context") else struct_pb2.Struct()
        if row.request_hash != _context_hash(agent_id, request.action, request.resource, context):
            raise InvalidArgument.field(
                "approval_id",
                "was opened for another agent, action, resource or context than this check",
            )
        approval = _approval_from_row(row, now)
        if approval.state == A.APPROVAL_STATE_EXPIRED or row.use_time_us is not None:
            return None
        return approval

    async def _use_approval(self, approval_id: str, now: int) -> bool:
        async with self.db.write() as c:
            used = await store.update_approval(
                c,
                approval_id,
                {"use_time_us": now, "update_time_us": now},
                use_time_us=None,
                state=A.APPROVAL_STATE_APPROVED,
            )
        if used:
            self.approval_waiters.notify(approval_id)
        return used

    async def _open_approval(
        self,
        project_id: str,
        agent_id: str,
        request: pb.CheckPermissionRequest,
        outcome: Outcome,
        decision_id: str,
        now: int,
        snapshot: ProjectSnapshot,
    ) -> str:
        context = request.context if request.HasField("context") else struct_pb2.Struct()
        request_hash = _context_hash(agent_id, request.action, request.resource, context)
        pending_key = f"{project_id}:{request_hash}"
        for _attempt in range(3):
            async with self.db.write() as c:
                existing = await store.pending_approval(c, pending_key)
                if existing is not None:
                    if existing.expire_time_us > now:
                        return existing.approval_id
                    # Expired but not yet marked: mark it and open a new one.
                    await store.update_approval(
                        c,
                        existing.approval_id,
                        {
                            "state": A.APPROVAL_STATE_EXPIRED,
                            "pending_key": None,
                            "update_time_us": now,
                        },
                        state=A.APPROVAL_STATE_PENDING,
                    )
                approval_id = new_id("apr")
                inserted = await store.insert_approval(
                    c,
                    {
                        "approval_id": approval_id,
                        "project_id": project_id,
                        "agent_id": agent_id,
                        "action": request.action,
                        "resource": request.resource,
                        "context": (
                            json_format.MessageToDict(request.context)
                            if request.HasField("context")
                            else None
                        ),
                        "request_hash": request_hash,
                        "pending_key": pending_key,
                        "decision_id": decision_id,
                        "policy_id": outcome.deciding.policy_id if outcome.deciding else "",
                        "reasons": list(outcome.reasons),
                        "state": A.APPROVAL_STATE_PENDING,
                        "reviewer": "",
                        "comment": "",
                        "create_time_us": now,
                        "expire_time_us": now + snapshot.settings.approval_expiry_us,
                        "resolve_time_us": None,
                        "use_time_us": None,
                        "update_time_us": now,
                    },
                )
                if inserted:
                    return approval_id
        raise AlreadyExists("could not open an approval; retry")  # pragma: no cover

    # -- the decision log -----------------------------------------------------------------------

    def _log_check(
        self,
        project_id: str,
        agent_id: str,
        request: pb.CheckPermissionRequest,
        decided: Decided,
        started: float,
    ) -> None:
        response = decided.response
        record = D.DecisionRecord(
            decision_id=response.decision_id,
            project_id=project_id,
            kind=D.DECISION_KIND_CHECK_PERMISSION,
            agent_id=agent_id,
            action=request.action,
            resource=request.resource,
            decision=response.decision,
            deciding_policy_id=response.deciding_policy_id,
            policy_ids=response.matched_policy_ids,
            reasons=response.reasons,
            trust_score=response.trust_score,
            approval_id=response.approval_id,
            request_id=request.request_id,
            trace_id=request.trace_id,
        )
        summary = record.request_summary
        if request.HasField("context"):
            if request.context.ByteSize() <= SUMMARY_CONTEXT_BYTES:
                summary.fields["context"].struct_value.CopyFrom(request.context)
            else:
                summary.fields["context_truncated"].bool_value = True
                summary.fields["context_bytes"].number_value = request.context.ByteSize()
        if request.HasField("usage_estimate"):
            usage = summary.fields["usage_estimate"].struct_value
            usage.fields["input_tokens"].number_value = request.usage_estimate.input_tokens
            usage.fields["output_tokens"].number_value = request.usage_estimate.output_tokens
            usage.fields["cost_micros"].number_value = request.usage_estimate.cost_micros
        charges = None
        if decided.charges:
            charges = [[k[1], bucket, amount] for k, bucket, amount in decided.charges]
            self._charges[response.decision_id] = (project_id, agent_id, charges)
            if len(self._charges) > RECENT_CHARGES:
                self._charges.popitem(last=False)
        self._append_record(record, started, charges)

    def _append_record(self, record: D.DecisionRecord, started: float, charges: Any) -> None:
        record.latency.FromNanoseconds(int((time.perf_counter() - started) * 1e9))
        record.create_time.FromMicroseconds(now_us())
        self.decision_log.append(record, charges)

    # -- ValidateOutput -------------------------------------------------------------------------

    async def validate(
        self, who: Principal, request: pb.ValidateOutputRequest
    ) -> pb.ValidateOutputResponse:
        started = time.perf_counter()
        agent_id = self._agent_for(who, request.agent_id)
        if request.HasField("context"):
            _check_context("context", request.context)
        if D.DETECTOR_MODEL in request.checks and self.classifier is None:
            raise FailedPrecondition(
                "no classifier model is deployed for output validation yet",
                reason=ErrorReason.ERROR_REASON_MODEL_NOT_READY,
                metadata={"detector": "DETECTOR_MODEL"},
            )
        self.decision_log.reserve()
        keyed = None
        if request.request_id:
            keyed = pb.ValidateOutputRequest()
            keyed.CopyFrom(request)
            keyed.agent_id = agent_id
            async with self.db.read() as c:
                prior = await store.prior_response(
                    c, who.project_id, "ValidateOutput", request.request_id
                )
            if prior is not None:
                if prior.request_hash != _request_hash(keyed):
                    raise request_id_conflict(request.request_id)
                return pb.ValidateOutputResponse.FromString(bytes(prior.response))
        checks = list(request.checks) or list(DEFAULT_CHECKS)
        content = request.content
        model_findings, skipped = await self._model_check(content, checks, not request.checks)
        if len(content) > DETECTOR_PROCESS_BYTES:
            scan = await self.detector_pool.run(content, checks)
        else:
            scan = detectors.run(content, checks)
        hits = scan.hits
        offsets = detectors.byte_offsets(content, [h.start for h in hits] + [h.end for h in hits])
        findings = []
        policy_ids: list[str] = []
        if D.DETECTOR_POLICY in checks:
            snapshot = await self.snapshots.get(who.project_id)
            now = now_us()
            subject = Subject(
                agent=snapshot.agent(agent_id),
                action=request.action or "output",
                context=request.context if request.HasField("context") else None,
                content=content,
                content_type=request.content_type or "text/plain",
                trust_score=snapshot.trust_score(agent_id, now),
                now_us=now,
            )
            outcome = decide(
                snapshot.candidates(subject.agent, subject.action),
                subject,
                snapshot.settings.default_decision,
                prefiltered=True,
            )
            for policy in outcome.matched:
                if policy.effect == ALLOW:
                    continue
                severity = D.SEVERITY_CRITICAL if policy.effect == DENY else D.SEVERITY_HIGH
                findings.append(
                    D.Finding(
                        detector=D.DETECTOR_POLICY,
                        detector_name=policy.policy_id,
                        severity=severity,
                        message=f"policy {policy.policy_id} {EFFECT_VERB[policy.effect]} "
                        f"this output",
                        policy_id=policy.policy_id,
                    )
                )
                policy_ids.append(policy.policy_id)
        findings.extend(model_findings)
        for hit in hits:
            findings.append(
                D.Finding(
                    detector=hit.detector,
                    detector_name=hit.name,
                    severity=hit.severity,
                    start_offset=offsets[hit.start],
                    end_offset=offsets[hit.end],
                    redacted_snippet=detectors.mask(content[hit.start : hit.end]),
                    message=f"found {hit.message}",
                )
            )
        severities = {f.severity for f in findings}
        if D.SEVERITY_CRITICAL in severities:
            verdict = D.VERDICT_REJECT
        elif D.SEVERITY_HIGH in severities:
            verdict = D.VERDICT_FLAG_FOR_REVIEW
        else:
            verdict = D.VERDICT_ACCEPT
        response = pb.ValidateOutputResponse(
            verdict=verdict,
            findings=findings,
            decision_id=new_id("dec"),
            redacted_content=detectors.redact(
                content,
                [(h.start, h.end) for h in hits],
                masked_from=scan.unreported_from if scan.truncated else None,
            ),
            findings_truncated=scan.truncated,
        )
        if keyed is not None:
            async with self.db.write() as c:
                first = await store.remember_response(
                    c,
                    who.project_id,
                    "ValidateOutput",
                    request.request_id,
                    _request_hash(keyed),
                    response.SerializeToString(),
                    now_us(),
                )
                prior = None
                if not first:
                    prior = await store.prior_response(
                        c, who.project_id, "ValidateOutput", request.request_id
                    )
            if prior is not None:
                if prior.request_hash != _request_hash(keyed):
                    raise request_id_conflict(request.request_id)
                return pb.ValidateOutputResponse.FromString(bytes(prior.response))
        trust = None
        if verdict == D.VERDICT_REJECT:
            async with self.db.write() as c:
                trust, _ = await record_event(
                    c,
                    who.project_id,
                    agent_id,
                    trust_pb2.TRUST_EVENT_CAUSE_OUTPUT_REJECTED,
                    action=request.action or "output",
                    decision_id=response.decision_id,
                    request_id=request.request_id,
                )
            self.snapshots.poke(who.project_id)
        record = D.DecisionRecord(
            decision_id=response.decision_id,
            project_id=who.project_id,
            kind=D.DECISION_KIND_VALIDATE_OUTPUT,
            agent_id=agent_id,
            action=request.action or "output",
            verdict=verdict,
            policy_ids=policy_ids,
            reasons=[_verdict_reason(verdict, findings)],
            findings=findings,
            trust_score=trust.score if trust is not None else 0.0,
            request_id=request.request_id,
            trace_id=request.trace_id,
        )
        if trust is None:
            snapshot = await self.snapshots.get(who.project_id)
            record.trust_score = snapshot.trust_score(agent_id, now_us())
        summary = record.request_summary
        summary.fields["content_type"].string_value = request.content_type or "text/plain"
        summary.fields["content_length"].number_value = len(content.encode("utf-8"))
        summary.fields["checks"].list_value.extend([D.Detector.Name(c) for c in checks])
        if scan.truncated:
            summary.fields["findings_truncated"].bool_value = True
        if skipped:
            summary.fields["skipped_checks"].list_value.extend([D.Detector.Name(D.DETECTOR_MODEL)])
            summary.fields["skipped_reason"].string_value = skipped
        self._append_record(record, started, None)
        return response

    async def _model_check(
        self, content: str, checks: list[int], by_default: bool
    ) -> tuple[list[D.Finding], str]:
        """(MODEL findings, why MODEL was skipped or ""). Asked for explicitly, the model must
        answer (its errors are the caller's); run by default, it runs only when the classifier
        is ready and is skipped, and `checks` left without it, when it is not."""
        classifier = self.classifier
        if by_default:
            if classifier is None:
                return [], "no classifier model is configured"
            if not classifier.ready():
                return [], "the inference backend or the classifier model is not ready"
            try:
                result = await classifier.classify(content)
            except ApiError as error:
                return [], f"the classifier failed: {error}"
            checks.append(D.DETECTOR_MODEL)
        elif D.DETECTOR_MODEL in checks and classifier is not None:
            result = await classifier.classify(content)
        else:
            return [], ""
        if not result.flagged:
            return [], ""
        model = classifier.model
        return [
            D.Finding(
                detector=D.DETECTOR_MODEL,
                detector_name=f"{model}:{result.category}",
                # The guard model is a cheap first filter (triton-models/README.md), so a hit
                # asks for human review rather than rejecting the output outright.
                severity=D.SEVERITY_HIGH,
                message=f"model {model} classified this output as {result.category} "
                f"(score {result.score:.2f})",
            )
        ], ""

    # -- policies -------------------------------------------------------------------------------

    @staticmethod
    def _compile(policy: policy_pb2.Policy, field_prefix: str) -> CompiledPolicy:
        try:
            return CompiledPolicy(policy)
        except ConditionError as error:
            raise _policy_invalid(f"{field_prefix}.condition", error) from error

    async def create_policy(
        self, who: Principal, request: pb.CreatePolicyRequest
    ) -> policy_pb2.Policy:
        self._admin(who, "CreatePolicy")
        body = _policy_body(request.policy)
        self._compile(body, "policy")
        # policy.policy_id counts too (the validator refuses the two set differently).
        policy_id = request.policy_id or request.policy.policy_id or new_id("pol")
        project_id = who.project_id

        async def work(c) -> pb.CreatePolicyResponse:  # type: ignore[no-untyped-def]
            now = now_us()
            inserted = await store.insert_policy(
                c,
                {
                    "project_id": project_id,
                    "policy_id": policy_id,
                    "effect": body.effect,
                    "priority": body.priority,
                    "enabled": body.enabled,
                    "body": body.SerializeToString(),
                    "version": 1,
                    "create_time_us": now,
                    "update_time_us": now,
                },
            )
            if not inserted:
                raise AlreadyExists(
                    f"policy {policy_id!r} already exists",
                    metadata={"resource_type": "policy", "resource_id": policy_id},
                )
            await store.bump_revision(c, project_id, "policy_revision")
            row = await store.get_policy_row(c, project_id, policy_id)
            return pb.CreatePolicyResponse(policy=policy_from_row(row))

        from agentplane_server.storage.idempotency import run_idempotent

        response, _ = await run_idempotent(
            self.db,
            project_id,
            "CreatePolicy",
            request.request_id,
            request,
            pb.CreatePolicyResponse,
            work,
        )
        await self._refresh(project_id)
        return response.policy

    async def _refresh(self, project_id: str) -> None:
        try:
            await self.snapshots.refresh(project_id)
        except Exception:
            log.warning("snapshot refresh failed", exc_info=True)

    async def get_policy(self, who: Principal, policy_id: str) -> policy_pb2.Policy:
        self._not_agent(who, "GetPolicy")
        async with self.db.read() as c:
            row = await store.get_policy_row(c, who.project_id, policy_id)
        if row is None:
            raise _policy_not_found(policy_id)
        return policy_from_row(row)

    async def list_policies(
        self, who: Principal, request: pb.ListPoliciesRequest
    ) -> pb.ListPoliciesResponse:
        self._not_agent(who, "ListPolicies")
        enabled = request.enabled if request.HasField("enabled") else None
        filters = {
            "project": who.project_id,
            "effect": request.effect,
            "enabled": enabled,
            "agent": request.agent_id,
            "action": request.action,
        }
        position = self.page_tokens.decode(request.page_token, "ListPolicies", filters)
        after = (int(position[0]), str(position[1])) if position else None
        limit = clamp_page_size(request.page_size, *POLICY_PAGE)
        agent = None
        if request.agent_id:
            snapshot = await self.snapshots.get(who.project_id)
            agent = snapshot.agent(request.agent_id)
        found: list[policy_pb2.Policy] = []
        more = False
        async with self.db.read() as c:
            while True:
                rows = await store.list_policies(
                    c, who.project_id, request.effect, enabled, after, limit + 1
                )
                for row in rows:
                    after = (row.priority, row.policy_id)
                    policy = policy_from_row(row)
                    compiled = _selector_only(policy)
                    if agent is not None and not compiled.selects(agent.agent_id, agent.labels):
                        continue
                    if request.action and not compiled.action_matches(request.action):
                        continue
                    if len(found) == limit:
                        more = True
                        break
                    found.append(policy)
                if more or len(rows) <= limit:
                    break
        response = pb.ListPoliciesResponse(policies=found)
        if more:
            last = found[-1]
            response.next_page_token = self.page_tokens.encode(
                "ListPolicies", filters, [last.priority, last.policy_id]
            )
        return response

    async def update_policy(
        self, who: Principal, request: pb.UpdatePolicyRequest
    ) -> policy_pb2.Policy:
        self._admin(who, "UpdatePolicy")
        given = request.policy
        paths = list(request.update_mask.paths)
        bad = [p for p in paths if p not in POLICY_PATHS]
        if not paths or bad:
            raise InvalidArgument.field(
                "update_mask", f"paths must be among {sorted(POLICY_PATHS)}; got {bad or 'none'}"
            )
        expected = parse_etag(given.etag, "policy.etag")
        project_id, policy_id = who.project_id, given.policy_id
        async with self.db.write() as c:
            row = await store.get_policy_row(c, project_id, policy_id, lock=True)
            if row is None:
                raise _policy_not_found(policy_id)
            if expected is not None and row.version != expected:
                raise etag_mismatch("policy", policy_id)
            body = policy_pb2.Policy.FromString(row.body)
            body.effect, body.priority, body.enabled = row.effect, row.priority, row.enabled
            for path in paths:
                if path == "enabled":
                    body.enabled = given.enabled if given.HasField("enabled") else True
                elif path in ("agents",):
                    body.ClearField("agents")
                    if given.HasField("agents"):
                        body.agents.CopyFrom(given.agents)
                elif path in ("actions", "resources", "budgets"):
                    body.ClearField(path)
                    getattr(body, path).extend(getattr(given, path))
                else:
                    setattr(body, path, getattr(given, path))
            if body.effect == DENY and body.budgets:
                raise InvalidArgument.field("policy.budgets", "a DENY policy cannot have budgets")
            self._compile(body, "policy")
            now = now_us()
            await store.update_policy(
                c,
                project_id,
                policy_id,
                {
                    "effect": body.effect,
                    "priority": body.priority,
                    "enabled": body.enabled,
                    "body": body.SerializeToString(),
                    "version": row.version + 1,
                    "update_time_us": now,
                },
            )
            await store.bump_revision(c, project_id, "policy_revision")
            updated = policy_from_row(await store.get_policy_row(c, project_id, policy_id))
        await self._refresh(project_id)
        return updated

    async def delete_policy(self, who: Principal, request: pb.DeletePolicyRequest) -> None:
        self._admin(who, "DeletePolicy")
        expected = parse_etag(request.etag, "etag")
        project_id = who.project_id
        async with self.db.write() as c:
            row = await store.get_policy_row(c, project_id, request.policy_id, lock=True)
            if row is None:
                raise _policy_not_found(request.policy_id)
            if expected is not None and row.version != expected:
                raise etag_mismatch("policy", request.policy_id)
            await store.delete_policy(c, project_id, request.policy_id)
            await store.bump_revision(c, project_id, "policy_revision")
        await self._refresh(project_id)

    async def evaluate(
        self, who: Principal, request: pb.EvaluatePoliciesRequest
    ) -> pb.EvaluatePoliciesResponse:
        self._not_agent(who, "EvaluatePolicies")
        agent_id = self._agent_for(who, request.agent_id)
        if request.HasField("context"):
            _check_context("context", request.context)
        candidates: list[CompiledPolicy] = []
        for index, candidate in enumerate(request.candidate_policies):
            body = _policy_body(candidate)
            body.policy_id = candidate.policy_id
            try:
                candidates.append(CompiledPolicy(body, index))
            except ConditionError as error:
                raise _policy_invalid(f"candidate_policies[{index}].condition", error) from error
        snapshot = await self.snapshots.get(who.project_id)
        now = now_us()
        subject = self._subject(snapshot, agent_id, request, now)
        if request.HasField("trust_score"):
            subject.trust_score = request.trust_score
        replaced = {c.policy_id for c in candidates if c.policy_id}
        stored = (
            []
            if request.only_candidates
            else [p for p in snapshot.ordered if p.policy_id not in replaced]
        )
        outcome = decide(
            [*stored, *candidates],
            subject,
            snapshot.settings.default_decision,
            explain=True,
        )
        response = pb.EvaluatePoliciesResponse(
            trust_score=subject.trust_score, trust_tier=trust_tier(subject.trust_score)
        )
        budgeted = [p for p in outcome.matched if p.budgets and p.effect != DENY]
        exceeded_by: set[int] = set()
        if budgeted:
            statuses, exceeded = self._budget_statuses(who.project_id, budgeted, subject, now)
            response.budgets.extend(statuses)
            index = 0
            for policy in budgeted:
                for _budget in policy.budgets:
                    if statuses[index].exceeded:
                        exceeded_by.add(id(policy))
                    index += 1
            if outcome.decision == D.DECISION_ALLOW and exceeded:
                outcome.decision = D.DECISION_DENY
                outcome.reasons.extend(_budget_reason(s) for s in statuses if s.exceeded)
        response.decision = outcome.decision
        response.reasons.extend(outcome.reasons)
        if outcome.deciding is not None:
            response.deciding_policy_id = outcome.deciding.policy_id
        response.matched_policy_ids.extend(p.policy_id for p in outcome.matched)
        for explanation in outcome.explanations or []:
            response.explanations.append(
                _explain(explanation, outcome.deciding, id(explanation.policy) in exceeded_by)
            )
        return response

    # -- WatchPolicies --------------------------------------------------------------------------

    async def watch_policies(
        self, who: Principal, request: pb.WatchPoliciesRequest
    ) -> AsyncIterator[pb.WatchPoliciesResponse]:
        agent_id = self._agent_for(who, request.agent_id)
        snapshot = await self.snapshots.get(who.project_id)
        sent: dict[str, int] = {}
        settings_version = -1
        agent_view = None
        trust_state: Any = object()
        shutdown = asyncio.ensure_future(self.shutdown.wait())
        try:
            while not self.shutdown.is_set():
                wake = snapshot.waiter()
                now = now_us()
                agent = snapshot.agent(agent_id)
                selecting = snapshot.selecting(agent)
                version = snapshot.policy_revision
                state = snapshot.trust.get(agent_id)
                if snapshot.settings.version != settings_version or agent != agent_view:
                    settings_version, agent_view = snapshot.settings.version, agent
                    sent = {p.policy_id: p.version for p in selecting}
                    trust_state = state
                    yield pb.WatchPoliciesResponse(
                        snapshot_version=version,
                        snapshot=self._policy_snapshot(snapshot, agent, selecting, now),
                    )
                else:
                    current = {p.policy_id: p for p in selecting}
                    for policy_id in [p for p in sent if p not in current]:
                        del sent[policy_id]
                        yield pb.WatchPoliciesResponse(
                            snapshot_version=version, deleted_policy_id=policy_id
                        )
                    for policy in selecting:
                        if sent.get(policy.policy_id) != policy.version:
                            sent[policy.policy_id] = policy.version
                            yield pb.WatchPoliciesResponse(
                                snapshot_version=version, upserted_policy=policy.policy
                            )
                    if state is not trust_state:
                        trust_state = state
                        yield pb.WatchPoliciesResponse(
                            snapshot_version=version,
                            trust_score=self._trust_message(snapshot, agent_id, now),
                        )
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait({waiter, shutdown}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            shutdown.cancel()

    def _trust_message(
        self, snapshot: ProjectSnapshot, agent_id: str, now: int
    ) -> trust_pb2.TrustScore:
        s = snapshot.settings
        return score_message(
            snapshot.project_id,
            agent_id,
            snapshot.trust.get(agent_id),
            now,
            s.trust_baseline,
            s.trust_half_life_us,
        )

    def _policy_snapshot(
        self,
        snapshot: ProjectSnapshot,
        agent: Any,
        selecting: list[CompiledPolicy],
        now: int,
    ) -> pb.PolicySnapshot:
        message = pb.PolicySnapshot(
            policies=[p.policy for p in selecting],
            default_decision=snapshot.settings.default_decision,
            trust_score=self._trust_message(snapshot, agent.agent_id, now),
            cache_ttl=_duration(snapshot.settings.decision_cache_ttl_us),
        )
        message.agent.update(agent.as_json(now))
        return message

    # -- settings -------------------------------------------------------------------------------

    async def get_settings(self, who: Principal) -> governance_settings_pb2.GovernanceSettings:
        self._not_agent(who, "GetGovernanceSettings")
        async with self.db.read() as c:
            row = await store.get_project_row(c, who.project_id)
        return _settings_message(who.project_id, store.settings_from_row(row))

    async def update_settings(
        self, who: Principal, request: pb.UpdateGovernanceSettingsRequest
    ) -> governance_settings_pb2.GovernanceSettings:
        self._admin(who, "UpdateGovernanceSettings")
        given = request.settings
        expected = parse_etag(given.etag, "settings.etag")
        values: dict[str, Any] = {}
        for path in request.update_mask.paths:  # checked by the contract's rules
            if path == "default_decision":
                values["default_decision"] = given.default_decision or D.DECISION_DENY
            elif path == "trust_baseline":
                values["trust_baseline"] = given.trust_baseline
            else:
                values[_DURATION_COLUMNS[path]] = (
                    getattr(given, path).ToMicroseconds()
                    if given.HasField(path)
                    else _DURATION_DEFAULTS[path]
                )
        project_id = who.project_id
        async with self.db.write() as c:
            await store.ensure_project_row(c, project_id)
            row = await store.get_project_row(c, project_id, lock=True)
            if expected is not None and row.settings_version != expected:
                raise etag_mismatch("governance settings", project_id)
            values.update(
                settings_version=row.settings_version + 1, settings_update_time_us=now_us()
            )
            await store.bump_revision(c, project_id, "policy_revision", values)
            row = await store.get_project_row(c, project_id)
        await self._refresh(project_id)
        return _settings_message(project_id, store.settings_from_row(row))

    # -- trust ----------------------------------------------------------------------------------

    async def get_trust(self, who: Principal, request: pb.GetTrustScoreRequest) -> Any:
        agent_id = self._agent_for(who, request.agent_id)
        async with self.db.read() as c:
            settings = store.settings_from_row(await store.get_project_row(c, who.project_id))
            row = await store.get_trust_row(c, who.project_id, agent_id)
        return score_message(
            who.project_id,
            agent_id,
            state_from_row(row) if row is not None else None,
            now_us(),
            settings.trust_baseline,
            settings.trust_half_life_us,
        )

    async def list_trust(
        self, who: Principal, request: pb.ListTrustScoresRequest
    ) -> pb.ListTrustScoresResponse:
        self._not_agent(who, "ListTrustScores")
        filters = {
            "project": who.project_id,
            "agents": sorted(request.agent_ids),
            "tier": request.tier,
        }
        position = self.page_tokens.decode(request.page_token, "ListTrustScores", filters)
        after = str(position[0]) if position else None
        limit = clamp_page_size(request.page_size, *TRUST_PAGE)
        now = now_us()
        found: list[trust_pb2.TrustScore] = []
        more = False
        async with self.db.read() as c:
            settings = store.settings_from_row(await store.get_project_row(c, who.project_id))
            while True:
                rows = await store.list_trust_rows(
                    c, who.project_id, list(request.agent_ids), after, limit + 1
                )
                for row in rows:
                    after = row.agent_id
                    score = score_message(
                        who.project_id,
                        row.agent_id,
                        state_from_row(row),
                        now,
                        settings.trust_baseline,
                        settings.trust_half_life_us,
                    )
                    if request.tier and score.tier != request.tier:
                        continue
                    if len(found) == limit:
                        more = True
                        break
                    found.append(score)
                if more or len(rows) <= limit:
                    break
        response = pb.ListTrustScoresResponse(trust_scores=found)
        if more:
            response.next_page_token = self.page_tokens.encode(
                "ListTrustScores", filters, [found[-1].agent_id]
            )
        return response

    async def report_execution(
        self, who: Principal, request: pb.ReportExecutionRequest
    ) -> pb.ReportExecutionResponse:
        agent_id = self._agent_for(who, request.agent_id)
        keyed = pb.ReportExecutionRequest()
        keyed.CopyFrom(request)
        keyed.agent_id = agent_id
        project_id = who.project_id
        corrections: list = []

        async def work(c) -> pb.ReportExecutionResponse:  # type: ignore[no-untyped-def]
            corrections.clear()
            if request.decision_id:
                await self._check_decision_agent(c, who, project_id, agent_id, request.decision_id)
            if request.decision_id and request.HasField("usage"):
                corrections.extend(await self._usage_corrections(c, project_id, request))
            score, event = await record_event(
                c,
                project_id,
                agent_id,
                OUTCOME_CAUSE[request.outcome],
                action=request.action,
                decision_id=request.decision_id,
                request_id=request.request_id,
            )
            return pb.ReportExecutionResponse(trust_score=score, trust_event=event)

        from agentplane_server.storage.idempotency import run_idempotent

        response, ran = await run_idempotent(
            self.db,
            project_id,
            "ReportExecution",
            request.request_id,
            keyed,
            pb.ReportExecutionResponse,
            work,
        )
        if ran:
            for key, bucket, delta in corrections:
                self.ledger.add(key, bucket, delta)
            await self._refresh(project_id)
        return response

    async def _check_decision_agent(
        self, c: Any, who: Principal, project_id: str, agent_id: str, decision_id: str
    ) -> None:
        """A report on a decision is about the agent the decision was made for: only that
        agent (or an operator naming it) reports on it, so no agent can refund another's
        budget or file outcomes against another's decisions."""
        local = self._charges.get(decision_id)
        if local is not None and local[0] == project_id:
            decided_for = local[1]
        else:
            row = await store.get_decision_row(c, project_id, decision_id)
            decided_for = row.agent_id if row is not None else None
        if decided_for is None or decided_for == agent_id:
            return
        message = f"decision {decision_id!r} was made for another agent, not {agent_id!r}"
        if who.role is Role.AGENT:
            raise PermissionDenied(
                f"{message}; an agent credential reports only on its own decisions",
                reason=ErrorReason.ERROR_REASON_AGENT_IDENTITY_MISMATCH,
                metadata={"agent_id": agent_id, "field": "decision_id"},
            )
        raise InvalidArgument.field("decision_id", f"{message}: name the agent it was made for")

    async def _usage_corrections(
        self, c: Any, project_id: str, request: pb.ReportExecutionRequest
    ) -> list:
        """(ledger key, bucket, delta) replacing the decision's charged estimate with the
        reported usage; the decision's stored charges are updated so a second report replaces
        again rather than adding."""
        local = self._charges.get(request.decision_id)
        charges = None
        if local is not None and local[0] == project_id:
            charges = local[2]
        else:
            # Made by another replica (or before a restart): its charges are in the decision
            # log. A decision made elsewhere within the last flush interval may not be there
            # yet; its estimate then stays charged (documented consistency limit).
            row = await store.get_decision_row(c, project_id, request.decision_id)
            if row is not None and row.charges:
                charges = row.charges
        if not charges:
            return []
        usage = request.usage
        corrections, updated = [], []
        for budget_key_text, bucket, amount in charges:
            metric = int(budget_key_text.split("|")[1])
            actual = usage_amount(
                metric, usage.input_tokens, usage.output_tokens, usage.cost_micros
            )
            if actual != amount:
                corrections.append(((project_id, budget_key_text), bucket, actual - amount))
            updated.append([budget_key_text, bucket, actual])
        if local is not None:
            self._charges[request.decision_id] = (project_id, local[1], updated)
        await store.set_decision_charges(c, project_id, request.decision_id, updated)
        return corrections

    async def adjust_trust(
        self, who: Principal, request: pb.AdjustTrustScoreRequest
    ) -> pb.AdjustTrustScoreResponse:
        self._admin(who, "AdjustTrustScore")
        project_id = who.project_id

        async def work(c) -> pb.AdjustTrustScoreResponse:  # type: ignore[no-untyped-def]
            kind = request.WhichOneof("adjustment")
            score, event = await record_event(
                c,
                project_id,
                request.agent_id,
                trust_pb2.TRUST_EVENT_CAUSE_MANUAL,
                request_id=request.request_id,
                actor=_principal_name(who),
                comment=request.comment,
                set_score=request.score if kind == "score" else None,
                add=request.delta if kind == "delta" else None,
            )
            return pb.AdjustTrustScoreResponse(trust_score=score, trust_event=event)

        from agentplane_server.storage.idempotency import run_idempotent

        response, ran = await run_idempotent(
            self.db,
            project_id,
            "AdjustTrustScore",
            request.request_id,
            request,
            pb.AdjustTrustScoreResponse,
            work,
        )
        if ran:
            await self._refresh(project_id)
        return response

    async def list_trust_events(
        self, who: Principal, request: pb.ListTrustEventsRequest
    ) -> pb.ListTrustEventsResponse:
        self._not_agent(who, "ListTrustEvents")
        start, end = _time_range(request.create_time)
        filters = {
            "project": who.project_id,
            "agent": request.agent_id,
            "cause": request.cause,
            "start": start,
            "end": end,
        }
        position = self.page_tokens.decode(request.page_token, "ListTrustEvents", filters)
        after = (int(position[0]), str(position[1])) if position else None
        limit = clamp_page_size(request.page_size, *TRUST_EVENT_PAGE)
        async with self.db.read() as c:
            rows = await store.list_trust_events(
                c, who.project_id, request.agent_id, request.cause, start, end, after, limit + 1
            )
        from agentplane_server.governance.trust import event_from_row

        response = pb.ListTrustEventsResponse(
            trust_events=[event_from_row(r) for r in rows[:limit]]
        )
        if len(rows) > limit:
            last = rows[limit - 1]
            response.next_page_token = self.page_tokens.encode(
                "ListTrustEvents", filters, [last.create_time_us, last.event_id]
            )
        return response

    # -- approvals ------------------------------------------------------------------------------

    async def _approval(self, who: Principal, approval_id: str) -> approval_pb2.Approval:
        async with self.db.read() as c:
            row = await store.get_approval_row(c, who.project_id, approval_id)
        if row is None:
            raise _approval_not_found(approval_id)
        if who.role is Role.AGENT and row.agent_id != who.agent_id:
            acting_agent(who, row.agent_id, "approval_id")
        return _approval_from_row(row, now_us())

    async def get_approval(self, who: Principal, approval_id: str) -> approval_pb2.Approval:
        return await self._approval(who, approval_id)

    async def list_approvals(
        self, who: Principal, request: pb.ListApprovalsRequest
    ) -> pb.ListApprovalsResponse:
        self._not_agent(who, "ListApprovals")
        start, end = _time_range(request.create_time)
        filters = {
            "project": who.project_id,
            "state": request.state,
            "agent": request.agent_id,
            "policy": request.policy_id,
            "start": start,
            "end": end,
        }
        position = self.page_tokens.decode(request.page_token, "ListApprovals", filters)
        after = (int(position[0]), str(position[1])) if position else None
        limit = clamp_page_size(request.page_size, *APPROVAL_PAGE)
        now = now_us()
        async with self.db.read() as c:
            rows = await store.list_approvals(
                c,
                who.project_id,
                request.state,
                request.agent_id,
                request.policy_id,
                start,
                end,
                after,
                limit + 1,
                now,
            )
        response = pb.ListApprovalsResponse(
            approvals=[_approval_from_row(r, now) for r in rows[:limit]]
        )
        if len(rows) > limit:
            last = rows[limit - 1]
            response.next_page_token = self.page_tokens.encode(
                "ListApprovals", filters, [last.create_time_us, last.approval_id]
            )
        return response

    async def resolve_approval(
        self, who: Principal, request: pb.ResolveApprovalRequest
    ) -> approval_pb2.Approval:
        self._admin(who, "ResolveApproval")
        async with self.db.write() as c:
            now = now_us()
            row = await store.get_approval_row(c, who.project_id, request.approval_id, lock=True)
            if row is None:
                raise _approval_not_found(request.approval_id)
            current = _approval_from_row(row, now)
            if current.state == request.state:
                return current  # a retry: unchanged
            if current.state == A.APPROVAL_STATE_EXPIRED:
                if row.state == A.APPROVAL_STATE_PENDING:
                    await store.update_approval(
                        c,
                        row.approval_id,
                        {
                            "state": A.APPROVAL_STATE_EXPIRED,
                            "pending_key": None,
                            "update_time_us": now,
                        },
                    )
                expired = FailedPrecondition(
                    f"approval {request.approval_id!r} expired before it was resolved",
                    reason=ErrorReason.ERROR_REASON_APPROVAL_EXPIRED,
                    metadata={"approval_id": request.approval_id},
                )
            elif current.state != A.APPROVAL_STATE_PENDING:
                raise FailedPrecondition(
                    f"approval {request.approval_id!r} was already resolved as "
                    f"{A.ApprovalState.Name(current.state)}",
                    reason=ErrorReason.ERROR_REASON_APPROVAL_ALREADY_RESOLVED,
                    metadata={
                        "approval_id": request.approval_id,
                        "state": A.ApprovalState.Name(current.state),
                    },
                )
            else:
                expired = None
                await store.update_approval(
                    c,
                    row.approval_id,
                    {
                        "state": request.state,
                        "reviewer": _principal_name(who),
                        "comment": request.comment,
                        "resolve_time_us": now,
                        "pending_key": None,
                        "update_time_us": now,
                    },
                    state=A.APPROVAL_STATE_PENDING,
                )
                row = await store.get_approval_row(c, who.project_id, request.approval_id)
        if expired is not None:
            self.approval_waiters.notify(request.approval_id)
            raise expired
        self.approval_waiters.notify(request.approval_id)
        return _approval_from_row(row, now_us())

    async def watch_approval(
        self, who: Principal, approval_id: str
    ) -> AsyncIterator[approval_pb2.Approval]:
        last: approval_pb2.Approval | None = None
        shutdown = asyncio.ensure_future(self.shutdown.wait())
        try:
            while not self.shutdown.is_set():
                wake = self.approval_waiters.waiter(approval_id)
                approval = await self._approval(who, approval_id)
                if last is None or approval != last:
                    last = approval
                    yield approval
                if approval.state != A.APPROVAL_STATE_PENDING:
                    return
                # Poll (other replicas' resolutions), and wake at the expiry time.
                timeout = self.watch_poll_interval
                remaining = (approval.expire_time.ToMicroseconds() - now_us()) / 1e6
                timeout = max(0.0, min(timeout, remaining + 0.001))
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait(
                    {waiter, shutdown}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
        finally:
            shutdown.cancel()

    async def expire_approvals(self, db: Database) -> dict[str, int]:
        """Housekeeping: record PENDING approvals past expire_time as EXPIRED."""
        async with db.write() as c:
            rows = await store.expire_approvals(c, now_us(), 1000)
        for row in rows:
            self.approval_waiters.notify(row.approval_id)
        return {}

    # -- decisions ------------------------------------------------------------------------------

    async def get_decision(self, who: Principal, decision_id: str) -> D.DecisionRecord:
        self._not_agent(who, "GetDecision")
        async with self.db.read() as c:
            row = await store.get_decision_row(c, who.project_id, decision_id)
        if row is None:
            raise NotFound(
                f"decision {decision_id!r} not found (a decision can take a few seconds to "
                "become readable)",
                metadata={"resource_type": "decision", "resource_id": decision_id},
            )
        return D.DecisionRecord.FromString(row.record)

    async def list_decisions(
        self, who: Principal, request: pb.ListDecisionsRequest
    ) -> pb.ListDecisionsResponse:
        self._not_agent(who, "ListDecisions")
        start, end = _time_range(request.create_time)
        filters = {
            "project": who.project_id,
            "agent": request.agent_id,
            "kind": request.kind,
            "decision": request.decision,
            "verdict": request.verdict,
            "action": request.action,
            "policy": request.policy_id,
            "start": start,
            "end": end,
        }
        position = self.page_tokens.decode(request.page_token, "ListDecisions", filters)
        after = (int(position[0]), str(position[1])) if position else None
        limit = clamp_page_size(request.page_size, *DECISION_PAGE)
        async with self.db.read() as c:
            rows = await store.list_decisions(
                c,
                who.project_id,
                agent_id=request.agent_id,
                kind=request.kind,
                decision=request.decision,
                verdict=request.verdict,
                action=request.action,
                policy_id=request.policy_id,
                start_us=start,
                end_us=end,
                after=after,
                limit=limit + 1,
            )
        response = pb.ListDecisionsResponse(
            decision_records=[D.DecisionRecord.FromString(r.record) for r in rows[:limit]]
        )
        if len(rows) > limit:
            last = rows[limit - 1]
            response.next_page_token = self.page_tokens.encode(
                "ListDecisions", filters, [last.create_time_us, last.decision_id]
            )
        return response


# -- helpers -------------------------------------------------------------------------------------


def _without_approval(request: pb.CheckPermissionRequest) -> pb.CheckPermissionRequest:
    copy = pb.CheckPermissionRequest()
    copy.CopyFrom(request)
    copy.approval_id = ""
    return copy


def _policy_body(given: policy_pb2.Policy) -> policy_pb2.Policy:
    """The stored part of a policy: what the caller chose, without output-only fields."""
    body = policy_pb2.Policy()
    body.CopyFrom(given)
    for name in ("policy_id", "project_id", "version", "etag", "create_time", "update_time"):
        body.ClearField(name)
    body.enabled = given.enabled if given.HasField("enabled") else True
    return body


def _selector_only(policy: policy_pb2.Policy) -> CompiledPolicy:
    light = policy_pb2.Policy()
    light.CopyFrom(policy)
    light.condition = ""  # ListPolicies filters by selector and actions only
    return CompiledPolicy(light)


def _policy_not_found(policy_id: str) -> NotFound:
    return NotFound(
        f"policy {policy_id!r} not found",
        metadata={"resource_type": "policy", "resource_id": policy_id},
    )


def _approval_not_found(approval_id: str) -> NotFound:
    return NotFound(
        f"approval {approval_id!r} not found",
        metadata={"resource_type": "approval", "resource_id": approval_id},
    )


def _approval_from_row(row: Any, now: int) -> approval_pb2.Approval:
    state = row.state
    if state == A.APPROVAL_STATE_PENDING and row.expire_time_us <= now:
        state = A.APPROVAL_STATE_EXPIRED
    approval = approval_pb2.Approval(
        approval_id=row.approval_id,
        project_id=row.project_id,
        agent_id=row.agent_id,
        action=row.action,
        resource=row.resource,
        decision_id=row.decision_id,
        policy_id=row.policy_id,
        reasons=row.reasons or [],
        state=state,
        reviewer=row.reviewer,
        comment=row.comment,
    )
    if row.context is not None:
        approval.context.update(row.context)
    approval.create_time.FromMicroseconds(row.create_time_us)
    approval.expire_time.FromMicroseconds(row.expire_time_us)
    if row.resolve_time_us is not None:
        approval.resolve_time.FromMicroseconds(row.resolve_time_us)
    if row.use_time_us is not None:
        approval.use_time.FromMicroseconds(row.use_time_us)
    update = row.update_time_us
    if state == A.APPROVAL_STATE_EXPIRED and row.state == A.APPROVAL_STATE_PENDING:
        update = row.expire_time_us
    approval.update_time.FromMicroseconds(update)
    return approval


def _settings_message(
    project_id: str, s: store.SettingsRow
) -> governance_settings_pb2.GovernanceSettings:
    message = governance_settings_pb2.GovernanceSettings(
        project_id=project_id,
        default_decision=s.default_decision,
        trust_baseline=s.trust_baseline,
        trust_decay_half_life=_duration(s.trust_half_life_us),
        approval_expiry=_duration(s.approval_expiry_us),
        decision_cache_ttl=_duration(s.decision_cache_ttl_us),
        etag=str(s.version),
    )
    if s.update_time_us is not None:
        message.update_time.FromMicroseconds(s.update_time_us)
    return message


_METRIC = {
    policy_pb2.BUDGET_METRIC_CALLS: "calls",
    policy_pb2.BUDGET_METRIC_TOKENS: "tokens",
    policy_pb2.BUDGET_METRIC_COST_MICROS: "cost micros",
}


def _budget_reason(status: pb.BudgetStatus) -> str:
    budget = status.budget
    window = budget.window.ToTimedelta().total_seconds()
    return (
        f"policy {status.policy_id} budget of {budget.limit} {_METRIC[budget.metric]} per "
        f"{window:g}s would be exceeded (spent {status.spent})"
    )


def _verdict_reason(verdict: int, findings: list) -> str:
    if verdict == D.VERDICT_REJECT:
        return "rejected: a CRITICAL finding"
    if verdict == D.VERDICT_FLAG_FOR_REVIEW:
        return "flagged for review: a HIGH finding"
    return f"accepted with {len(findings)} finding(s) of low or medium severity"


def _explain(
    e: Explanation, deciding: CompiledPolicy | None, budget_exceeded: bool
) -> pb.PolicyExplanation:
    policy = e.policy
    message = pb.PolicyExplanation(
        policy_id=policy.policy_id,
        effect=policy.effect,
        priority=policy.priority,
        matched=e.matched,
        decided=deciding is policy,
        enabled=policy.enabled,
        agent_matched=e.agent_matched,
        action_matched=e.action_matched,
        resource_matched=e.resource_matched,
        trust_matched=e.trust_matched,
        condition_matched=e.condition_matched,
        condition_error=e.condition_error,
        budget_exceeded=budget_exceeded,
    )
    if policy.index >= 0:
        message.candidate_index = policy.index
    if not policy.enabled:
        message.explanation = f"{policy.label} is disabled, so it never matches"
    elif e.matched:
        message.explanation = (
            f"{policy.label} matches: agent, action, resource, trust and condition all match"
            + ("; it decides" if deciding is policy else "")
        )
    else:
        failed = [
            name
            for name, ok in (
                ("agent selector", e.agent_matched),
                ("action", e.action_matched),
                ("resource", e.resource_matched),
                (f"trust (needs {policy.min_trust:g})", e.trust_matched),
                ("condition", e.condition_matched),
            )
            if not ok
        ]
        message.explanation = f"{policy.label} does not match: {', '.join(failed)}"
    return message
