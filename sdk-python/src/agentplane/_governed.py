# ruff: noqa: ASYNC109 - `timeout` is a gRPC deadline or a bounded wait, part of the API.
"""Governance on the path of every agent action: ``Governor``, ``AsyncGovernor``, ``governed``.

A check is answered, fastest first, from
1. the decision cache: CheckPermission says for how long (``cache_ttl``) a decision may be reused
   for the same action, resource and context; the cache is emptied whenever the policy stream
   reports a change;
2. the local policy state, when ``watch=True`` keeps a WatchPolicies stream (see ``_policy``);
3. CheckPermission, with the governor's timeout as the deadline of all attempts together.
When Agentplane cannot be reached in time (UNAVAILABLE, DEADLINE_EXCEEDED) the check fails
closed with ``GovernanceUnavailable`` unless ``fail_open=True``. Other errors (bad input,
credentials, UNIMPLEMENTED) always raise: they are bugs to fix, not outages to ride out.

Execution reports (ReportExecution) leave the caller's path: they are queued and sent by one
background worker (a thread, or a task for AsyncGovernor), each with a request_id so retries
count once; ``flush()`` waits for the queue, and Agent shutdown flushes it.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from agentplane._config import ENV_AGENT_ID, ENV_URL
from agentplane._errors import (
    ActionDenied,
    ApprovalRequired,
    DeadlineExceededError,
    GovernanceUnavailable,
    OutputRejected,
    RpcError,
    UnavailableError,
)
from agentplane._policy import PolicyState
from agentplane._tracing import current_trace_id
from agentplane.common.v1 import usage_pb2
from agentplane.decision import OutcomeTuple
from agentplane.governance.v1 import (
    approval_pb2,
    decision_pb2,
    governance_service_pb2,
    trust_pb2,
)

if TYPE_CHECKING:
    from agentplane._client import AsyncClient, Client

log = logging.getLogger("agentplane")

F = TypeVar("F", bound=Callable[..., Any])
ALLOW = decision_pb2.DECISION_ALLOW
DENY = decision_pb2.DECISION_DENY
REQUIRE_APPROVAL = decision_pb2.DECISION_REQUIRE_APPROVAL
SUCCESS = trust_pb2.EXECUTION_OUTCOME_SUCCESS
FAILURE = trust_pb2.EXECUTION_OUTCOME_FAILURE
ERROR = trust_pb2.EXECUTION_OUTCOME_ERROR
VIOLATION = trust_pb2.EXECUTION_OUTCOME_VIOLATION
_UNREACHABLE = (UnavailableError, DeadlineExceededError)
_FINAL_APPROVAL_STATES = (
    approval_pb2.APPROVAL_STATE_APPROVED,
    approval_pb2.APPROVAL_STATE_REJECTED,
    approval_pb2.APPROVAL_STATE_EXPIRED,
)
DEFAULT_CHECK_TIMEOUT = 2.0
# GovernanceService: a policy change takes part in decisions on every replica within a second.
POLICY_PROPAGATION = 1.0
_monotonic = time.monotonic


@dataclass(frozen=True)
class Decision:
    """A permission decision and where it came from.

    ``source``: "server" (CheckPermission), "cache" (a server decision reused within its
    cache_ttl), "local" (decided from the WatchPolicies state), "fail_open" (server unreachable,
    allowed because fail_open=True) or "null" (null mode).
    """

    decision: int
    source: str
    reasons: tuple[str, ...] = ()
    decision_id: str = ""
    deciding_policy_id: str = ""
    matched_policy_ids: tuple[str, ...] = ()
    approval_id: str = ""
    cache_ttl: float = 0.0
    trust_score: float | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW

    @property
    def name(self) -> str:
        return decision_pb2.Decision.Name(self.decision)

    @classmethod
    def _local(cls, outcome: OutcomeTuple, trust_score: float | None) -> Decision:
        """A "local" Decision from the shared rule's outcome. Built without the generated
        __init__: a frozen dataclass sets each field through object.__setattr__, which costs
        more than the whole local decision; unset fields keep their class defaults."""
        decision = object.__new__(cls)
        code, deciding, matched, reasons, _, _ = outcome
        object.__setattr__(
            decision,
            "__dict__",
            {
                "decision": code,
                "source": "local",
                "reasons": tuple(reasons),
                "deciding_policy_id": deciding.policy_id if deciding is not None else "",
                "matched_policy_ids": (matched[0].policy_id,)
                if len(matched) == 1
                else tuple([r.policy_id for r in matched]),
                "trust_score": trust_score,
            },
        )
        return decision

    @classmethod
    def from_response(cls, response: governance_service_pb2.CheckPermissionResponse) -> Decision:
        return cls(
            decision=response.decision,
            source="server",
            reasons=tuple(response.reasons),
            decision_id=response.decision_id,
            deciding_policy_id=response.deciding_policy_id,
            matched_policy_ids=tuple(response.matched_policy_ids),
            approval_id=response.approval_id,
            cache_ttl=response.cache_ttl.ToTimedelta().total_seconds(),
            trust_score=response.trust_score,
        )


def _context_key(context: Mapping[str, Any] | None) -> str | None:
    if not context:
        return None
    return json.dumps(context, sort_keys=True, separators=(",", ":"), default=str)


class DecisionCache:
    """Server decisions by (action, resource, context), each until its cache_ttl runs out."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[Any, ...], tuple[float, Decision]] = {}

    def get(self, key: tuple[Any, ...]) -> Decision | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] > _monotonic():
            return entry[1]
        self._entries.pop(key, None)
        return None

    def put(self, key: tuple[Any, ...], decision: Decision, ttl: float) -> None:
        if ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            now = _monotonic()
            for stale in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                self._entries.pop(stale, None)
            while len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)), None)  # the oldest entry
        self._entries[key] = (_monotonic() + ttl, decision)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class _GovernorBase:
    """What the sync and async governors share: settings, cache, local state, requests."""

    def __init__(
        self,
        *,
        agent_id: str,
        timeout: float,
        fail_open: bool,
        cache: bool,
        report: bool,
        wait_for_approval: float | None,
        null: bool,
        idempotent_checks: bool = False,
    ) -> None:
        self.agent_id = agent_id
        # CheckPermission goes out without a request_id by default: the server decides it from
        # memory, but a request_id makes it record the call for idempotency (a database write,
        # about 2 ms per check in bench/bench_sdk.py). Without one a check is not safe to
        # repeat, so it is one attempt bounded by `timeout`. idempotent_checks=True sends a
        # request_id and retries UNAVAILABLE within the same timeout.
        self._check_retry: bool | None = None if idempotent_checks else False
        self.timeout = timeout
        self.fail_open = fail_open
        self.cache_enabled = cache
        self.report_enabled = report
        self.wait_for_approval = wait_for_approval
        self.is_null = null
        self.cache = DecisionCache()
        self.policy_state = PolicyState()
        self.reports_sent = 0
        self.reports_failed = 0
        self._null_logged: set[str] = set()
        self._settle_until = 0.0

    # -- the fast path: cache, local state -------------------------------------------------

    def _key(
        self, action: str, resource: str, context: Mapping[str, Any] | None
    ) -> tuple[Any, ...]:
        if context:
            return (action, resource, _context_key(context))
        return (action, resource)

    def _fast(
        self, key: tuple[Any, ...], action: str, resource: str, has_context: bool
    ) -> Decision | None:
        if self.is_null:
            return self._null_decision(action)
        if self.cache_enabled:  # a disabled cache holds nothing
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        if not has_context and self.policy_state.have_snapshot:
            # Local decisions need no context: a policy whose condition could read it makes
            # decide() return None, so context never changes a local answer; but we still send
            # checks with context to the server, which records them in the decision log.
            local = self.policy_state.local(action, resource)
            if local is not None:
                return Decision._local(local, self.policy_state.trust_score)
        return None

    def _null_decision(self, action: str) -> Decision:
        if action not in self._null_logged:
            self._null_logged.add(action)
            log.info("null mode: %r allowed without a permission check", action)
        return Decision(ALLOW, "null", ("null mode: no Agentplane server configured",))

    def _check_request(
        self,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None,
        usage_estimate: usage_pb2.Usage | Mapping[str, Any] | None,
        approval_id: str,
    ) -> governance_service_pb2.CheckPermissionRequest:
        request = governance_service_pb2.CheckPermissionRequest(
            agent_id=self.agent_id,
            action=action,
            resource=resource,
            approval_id=approval_id,
            trace_id=current_trace_id(),
        )
        if context:
            request.context.update(context)
        if usage_estimate:
            request.usage_estimate.MergeFrom(
                usage_estimate
                if isinstance(usage_estimate, usage_pb2.Usage)
                else usage_pb2.Usage(**usage_estimate)
            )
        return request

    def _remember(self, key: tuple[Any, ...], decision: Decision) -> Decision:
        if self.cache_enabled and decision.cache_ttl > 0 and _monotonic() >= self._settle_until:
            self.cache.put(key, dataclasses.replace(decision, source="cache"), decision.cache_ttl)
        return decision

    def _unreachable(self, action: str, error: RpcError) -> Decision:
        if self.fail_open:
            log.warning(
                "CheckPermission for %r failed (%s); allowing because fail_open=True",
                action,
                error.code.name,
            )
            return Decision(ALLOW, "fail_open", (f"Agentplane unreachable: {error.message}",))
        raise GovernanceUnavailable(
            f"could not check permission for {action!r}: Agentplane did not answer within "
            f"{self.timeout:g}s ({error.code.name}: {error.message}); failing closed "
            "(pass fail_open=True to allow actions while Agentplane is unreachable)",
            action=action,
        ) from error

    @staticmethod
    def _refuse(action: str, decision: Decision) -> None:
        reasons = "; ".join(decision.reasons) or "no reason given"
        if decision.decision == REQUIRE_APPROVAL:
            raise ApprovalRequired(
                f"{action!r} requires approval {decision.approval_id}: {reasons}",
                action=action,
                decision=decision,
            )
        raise ActionDenied(f"{action!r} denied: {reasons}", action=action, decision=decision)

    def _report_request(
        self,
        action: str,
        outcome: int,
        duration: float,
        decision_id: str,
        usage: usage_pb2.Usage | Mapping[str, Any] | None,
        message: str,
        trace_id: str | None,
    ) -> governance_service_pb2.ReportExecutionRequest:
        request = governance_service_pb2.ReportExecutionRequest(
            agent_id=self.agent_id,
            action=action,
            outcome=outcome,  # type: ignore[arg-type]
            decision_id=decision_id,
            message=message[:1024],
            trace_id=current_trace_id() if trace_id is None else trace_id,
        )
        request.duration.FromNanoseconds(max(0, int(duration * 1e9)))
        if usage:
            request.usage.MergeFrom(
                usage if isinstance(usage, usage_pb2.Usage) else usage_pb2.Usage(**usage)
            )
        return request

    def _on_policy_change(self, message: governance_service_pb2.WatchPoliciesResponse) -> None:
        self.policy_state.apply(message)
        self.cache.clear()  # a cached decision may no longer be what the server would say
        # The stream can report a change before every replica decides with it (the contract
        # allows up to a second): do not cache server decisions made in that window.
        self._settle_until = _monotonic() + POLICY_PROPAGATION


class Governor(_GovernorBase):
    """Permission checks, output validation and execution reports for one agent (sync).

    ``agent_id`` empty means the credential's own agent (agent API keys). ``timeout`` bounds
    each check, retries included. ``watch=True`` keeps a WatchPolicies stream in a thread to
    decide locally. ``wait_for_approval`` (seconds) waits for REQUIRE_APPROVAL decisions to be
    resolved instead of raising ApprovalRequired at once.
    """

    def __init__(
        self,
        client: Client,
        *,
        agent_id: str = "",
        timeout: float = DEFAULT_CHECK_TIMEOUT,
        fail_open: bool = False,
        cache: bool = True,
        watch: bool = False,
        report: bool = True,
        wait_for_approval: float | None = None,
        max_queued_reports: int = 10_000,
        idempotent_checks: bool = False,
    ) -> None:
        super().__init__(
            agent_id=agent_id,
            timeout=timeout,
            fail_open=fail_open,
            cache=cache,
            report=report,
            wait_for_approval=wait_for_approval,
            null=client.is_null,
            idempotent_checks=idempotent_checks,
        )
        self.client = client
        self.max_queued_reports = max_queued_reports
        self._reports: deque[governance_service_pb2.ReportExecutionRequest] = deque()
        self._reports_cv = threading.Condition()
        self._in_flight = 0
        self._reporter: threading.Thread | None = None
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None
        self._watch_stream: Any = None
        self._watch_ready = threading.Event()
        if watch and not self.is_null:
            self.start_watch()

    # -- checks ----------------------------------------------------------------------------

    def check(
        self,
        action: str,
        resource: str = "",
        context: Mapping[str, Any] | None = None,
        *,
        usage_estimate: usage_pb2.Usage | Mapping[str, Any] | None = None,
        approval_id: str = "",
    ) -> Decision:
        """The decision for ``action`` on ``resource``; raises GovernanceUnavailable when
        Agentplane cannot be reached and the governor fails closed."""
        key = (action, resource, _context_key(context)) if context else (action, resource)
        if not approval_id and not usage_estimate:
            fast = self._fast(key, action, resource, bool(context))
            if fast is not None:
                return fast
        elif self.is_null:
            return self._null_decision(action)
        request = self._check_request(action, resource, context, usage_estimate, approval_id)
        try:
            response = self.client.governance.check_permission(
                request, timeout=self.timeout, retry=self._check_retry
            )
        except _UNREACHABLE as error:
            return self._unreachable(action, error)
        return self._remember(key, Decision.from_response(response))

    def authorize(
        self,
        action: str,
        resource: str = "",
        context: Mapping[str, Any] | None = None,
        *,
        usage_estimate: usage_pb2.Usage | Mapping[str, Any] | None = None,
        wait_for_approval: float | None = None,
    ) -> Decision:
        """``check``, then raise ActionDenied or ApprovalRequired unless the answer is ALLOW."""
        decision = self.check(action, resource, context, usage_estimate=usage_estimate)
        if decision.decision == ALLOW:
            return decision
        wait = self.wait_for_approval if wait_for_approval is None else wait_for_approval
        if decision.decision == REQUIRE_APPROVAL and wait and decision.approval_id:
            state = self.await_approval(decision.approval_id, timeout=wait)
            if state == approval_pb2.APPROVAL_STATE_APPROVED:
                decision = self.check(
                    action,
                    resource,
                    context,
                    usage_estimate=usage_estimate,
                    approval_id=decision.approval_id,
                )
                if decision.decision == ALLOW:
                    return decision
        self._refuse(action, decision)
        raise AssertionError("unreachable")

    def await_approval(self, approval_id: str, *, timeout: float) -> int:
        """Watch an approval until it is resolved or ``timeout`` passes; its last state."""
        state = approval_pb2.APPROVAL_STATE_PENDING
        try:
            with self.client.governance.watch_approval(
                approval_id=approval_id, timeout=timeout
            ) as stream:
                for message in stream:
                    state = message.approval.state
                    if state in _FINAL_APPROVAL_STATES:
                        break
        except DeadlineExceededError:
            pass
        return state

    def validate_output(
        self,
        content: str,
        *,
        action: str = "",
        content_type: str = "",
        context: Mapping[str, Any] | None = None,
        checks: Sequence[int] = (),
    ) -> governance_service_pb2.ValidateOutputResponse:
        """ValidateOutput for this agent (no cache: every output is new)."""
        if self.is_null:
            return governance_service_pb2.ValidateOutputResponse(
                verdict=decision_pb2.VERDICT_ACCEPT, redacted_content=content
            )
        return self.client.governance.validate_output(
            agent_id=self.agent_id,
            action=action,
            content=content,
            content_type=content_type,
            context=context or None,
            checks=list(checks) or None,
            trace_id=current_trace_id() or None,
            timeout=self.timeout,
        )

    # -- reports ---------------------------------------------------------------------------

    def report(
        self,
        action: str,
        outcome: int,
        *,
        duration: float = 0.0,
        decision_id: str = "",
        usage: usage_pb2.Usage | Mapping[str, Any] | None = None,
        message: str = "",
        trace_id: str | None = None,
    ) -> None:
        """Queue a ReportExecution; the background worker sends it (see ``flush``)."""
        if self.is_null or not self.report_enabled:
            return
        request = self._report_request(
            action, outcome, duration, decision_id, usage, message, trace_id
        )
        with self._reports_cv:
            if len(self._reports) >= self.max_queued_reports:
                self.reports_failed += 1
                log.warning("report queue full, dropped the report for %r", action)
                return
            self._reports.append(request)
            self._reports_cv.notify_all()
            if self._reporter is None or not self._reporter.is_alive():
                self._reporter = threading.Thread(
                    target=self._report_loop, name="agentplane-reports", daemon=True
                )
                self._reporter.start()

    def _report_loop(self) -> None:
        while True:
            with self._reports_cv:
                while not self._reports:
                    if self._closed.is_set():
                        return
                    self._reports_cv.wait(1.0)
                request = self._reports.popleft()
                self._in_flight += 1
            try:
                self.client.governance.report_execution(request, timeout=max(self.timeout, 5.0))
                self.reports_sent += 1
            except Exception as error:  # a report must never kill the worker
                self.reports_failed += 1
                log.warning("ReportExecution for %r failed: %s", request.action, error)
            finally:
                with self._reports_cv:
                    self._in_flight -= 1
                    self._reports_cv.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued report is sent (or failed); False if ``timeout`` passed."""
        deadline = _monotonic() + timeout
        with self._reports_cv:
            while self._reports or self._in_flight:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    return False
                self._reports_cv.wait(remaining)
        return True

    # -- the policy stream -----------------------------------------------------------------

    def start_watch(self, wait: float | None = None) -> bool:
        """Keep a WatchPolicies stream in a thread; with ``wait``, block until the first
        snapshot arrives (True) or ``wait`` seconds pass (False)."""
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(
                target=self._watch_loop, name="agentplane-policies", daemon=True
            )
            self._watcher.start()
        return self._watch_ready.wait(wait) if wait else self._watch_ready.is_set()

    def _watch_loop(self) -> None:
        backoff = 0.2
        while not self._closed.is_set():
            try:
                stream = self.client.governance.watch_policies(agent_id=self.agent_id)
                self._watch_stream = stream
                for message in stream:
                    self._on_policy_change(message)
                    self._watch_ready.set()
                    backoff = 0.2
            except RpcError as error:
                if not self._closed.is_set():
                    log.info("policy stream lost (%s); deciding remotely", error)
            finally:
                self.policy_state.lost()
            if self._closed.wait(backoff):
                return
            backoff = min(backoff * 2, 5.0)

    def close(self, timeout: float = 10.0) -> None:
        """Send the queued reports (up to ``timeout``), stop the stream and the worker."""
        self.flush(timeout)
        self._closed.set()
        if self._watch_stream is not None:
            self._watch_stream.cancel()
        with self._reports_cv:
            self._reports_cv.notify_all()

    def governed(self, action: str, **options: Any) -> governed:
        """``governed(action, ...)`` bound to this governor."""
        return governed(action, governor=self, **options)

    # -- from async code -------------------------------------------------------------------

    async def authorize_async(
        self,
        action: str,
        resource: str = "",
        context: Mapping[str, Any] | None = None,
        *,
        usage_estimate: usage_pb2.Usage | Mapping[str, Any] | None = None,
        wait_for_approval: float | None = None,
    ) -> Decision:
        """``authorize`` for async code: the fast path inline, a server call in a thread."""
        if not usage_estimate:
            key = self._key(action, resource, context)
            fast = self._fast(key, action, resource, bool(context))
            if fast is not None and fast.decision == ALLOW:
                return fast
        return await asyncio.to_thread(
            self.authorize,
            action,
            resource,
            context,
            usage_estimate=usage_estimate,
            wait_for_approval=wait_for_approval,
        )


class AsyncGovernor(_GovernorBase):
    """``Governor`` for asyncio code on an ``AsyncClient``; the same options."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        agent_id: str = "",
        timeout: float = DEFAULT_CHECK_TIMEOUT,
        fail_open: bool = False,
        cache: bool = True,
        report: bool = True,
        wait_for_approval: float | None = None,
        max_queued_reports: int = 10_000,
        idempotent_checks: bool = False,
    ) -> None:
        super().__init__(
            agent_id=agent_id,
            timeout=timeout,
            fail_open=fail_open,
            cache=cache,
            report=report,
            wait_for_approval=wait_for_approval,
            null=client.is_null,
            idempotent_checks=idempotent_checks,
        )
        self.client = client
        self.max_queued_reports = max_queued_reports
        self._reports: deque[governance_service_pb2.ReportExecutionRequest] = deque()
        self._in_flight = 0
        self._reporter: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._watch_ready: asyncio.Event | None = None
        self._closed = False

    async def check(
        self,
        action: str,
        resource: str = "",
        context: Mapping[str, Any] | None = None,
        *,
        usage_estimate: usage_pb2.Usage | Mapping[str, Any] | None = None,
        approval_id: str = "",
    ) -> Decision:
        key = (action, resource, _context_key(context)) if context else (action, resource)
        if not approval_id and not usage_estimate:
            fast = self._fast(key, action, resource, bool(context))
            if fast is not None:
                return fast
        elif self.is_null:
            return self._null_decision(action)
        request = self._check_request(action, resource, context, usage_estimate, approval_id)
        try:
            response = await self.client.governance.check_permission(
                request, timeout=self.timeout, retry=self._check_retry
            )
        except _UNREACHABLE as error:
            return self._unreachable(action, error)
        return self._remember(key, Decision.from_response(response))

    async def authorize(
        self,
        action: str,
        resource: str = "",
        context: Mapping[str, Any] | None = None,
        *,
        usage_estimate: usage_pb2.Usage | Mapping[str, Any] | None = None,
        wait_for_approval: float | None = None,
    ) -> Decision:
        decision = await self.check(action, resource, context, usage_estimate=usage_estimate)
        if decision.decision == ALLOW:
            return decision
        wait = self.wait_for_approval if wait_for_approval is None else wait_for_approval
        if decision.decision == REQUIRE_APPROVAL and wait and decision.approval_id:
            state = await self.await_approval(decision.approval_id, timeout=wait)
            if state == approval_pb2.APPROVAL_STATE_APPROVED:
                decision = await self.check(
                    action,
                    resource,
                    context,
                    usage_estimate=usage_estimate,
                    approval_id=decision.approval_id,
                )
                if decision.decision == ALLOW:
                    return decision
        self._refuse(action, decision)
        raise AssertionError("unreachable")

    async def await_approval(self, approval_id: str, *, timeout: float) -> int:
        state = approval_pb2.APPROVAL_STATE_PENDING
        try:
            async with self.client.governance.watch_approval(
                approval_id=approval_id, timeout=timeout
            ) as stream:
                async for message in stream:
                    state = message.approval.state
                    if state in _FINAL_APPROVAL_STATES:
                        break
        except DeadlineExceededError:
            pass
        return state

    async def validate_output(
        self,
        content: str,
        *,
        action: str = "",
        content_type: str = "",
        context: Mapping[str, Any] | None = None,
        checks: Sequence[int] = (),
    ) -> governance_service_pb2.ValidateOutputResponse:
        if self.is_null:
            return governance_service_pb2.ValidateOutputResponse(
                verdict=decision_pb2.VERDICT_ACCEPT, redacted_content=content
            )
        return await self.client.governance.validate_output(
            agent_id=self.agent_id,
            action=action,
            content=content,
            content_type=content_type,
            context=context or None,
            checks=list(checks) or None,
            trace_id=current_trace_id() or None,
            timeout=self.timeout,
        )

    def report(
        self,
        action: str,
        outcome: int,
        *,
        duration: float = 0.0,
        decision_id: str = "",
        usage: usage_pb2.Usage | Mapping[str, Any] | None = None,
        message: str = "",
        trace_id: str | None = None,
    ) -> None:
        """Queue a ReportExecution (call from the event loop); a task sends it."""
        if self.is_null or not self.report_enabled:
            return
        if len(self._reports) >= self.max_queued_reports:
            self.reports_failed += 1
            log.warning("report queue full, dropped the report for %r", action)
            return
        self._reports.append(
            self._report_request(action, outcome, duration, decision_id, usage, message, trace_id)
        )
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.get_running_loop().create_task(self._report_loop())

    async def _report_loop(self) -> None:
        while self._reports:
            request = self._reports.popleft()
            self._in_flight += 1
            try:
                await self.client.governance.report_execution(
                    request, timeout=max(self.timeout, 5.0)
                )
                self.reports_sent += 1
            except Exception as error:  # a report must never kill the worker
                self.reports_failed += 1
                log.warning("ReportExecution for %r failed: %s", request.action, error)
            finally:
                self._in_flight -= 1

    async def flush(self, timeout: float = 10.0) -> bool:
        reporter = self._reporter
        if reporter is None or reporter.done():
            return not self._reports
        try:
            await asyncio.wait_for(asyncio.shield(reporter), timeout)
        except TimeoutError:
            return False
        return not self._reports and not self._in_flight

    async def start_watch(self, wait: float | None = None) -> bool:
        if self.is_null:
            return False
        if self._watch_ready is None:
            self._watch_ready = asyncio.Event()
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_loop())
        if wait:
            try:
                await asyncio.wait_for(self._watch_ready.wait(), wait)
            except TimeoutError:
                return False
        return self._watch_ready.is_set()

    async def _watch_loop(self) -> None:
        assert self._watch_ready is not None
        backoff = 0.2
        while not self._closed:
            try:
                async for message in self.client.governance.watch_policies(agent_id=self.agent_id):
                    self._on_policy_change(message)
                    self._watch_ready.set()
                    backoff = 0.2
            except RpcError as error:
                if not self._closed:
                    log.info("policy stream lost (%s); deciding remotely", error)
            finally:
                self.policy_state.lost()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def close(self, timeout: float = 10.0) -> None:
        await self.flush(timeout)
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except (asyncio.CancelledError, Exception):
                pass

    def governed(self, action: str, **options: Any) -> governed:
        return governed(action, governor=self, **options)


# --- the process-wide default governor ------------------------------------------------------

_defaults: dict[str, Governor | AsyncGovernor] = {}
_defaults_lock = threading.Lock()


def set_default_governor(governor: Governor | AsyncGovernor | None) -> None:
    """The governor ``governed`` uses when it is given none (Agent.start sets its own)."""
    with _defaults_lock:
        kind = "async" if isinstance(governor, AsyncGovernor) else "sync"
        if governor is None:
            _defaults.clear()
        else:
            _defaults[kind] = governor


def _sync_default() -> Governor:
    governor = _defaults.get("sync")
    if governor is not None:
        return cast(Governor, governor)
    if "async" in _defaults:
        raise TypeError(
            "governed() on a sync function needs a sync Governor, but only an AsyncGovernor is "
            "set; pass governor=... or start a sync Agent"
        )
    with _defaults_lock:
        if "sync" not in _defaults:
            from agentplane._client import Client

            # From the environment: null mode without AGENTPLANE_URL, else the agent named by
            # AGENTPLANE_AGENT_ID (or the credential's own agent).
            _defaults["sync"] = Governor(
                Client.connect(), agent_id=os.environ.get(ENV_AGENT_ID, "")
            )
        return cast(Governor, _defaults["sync"])


async def _async_default() -> Governor | AsyncGovernor:
    governor = _defaults.get("async") or _defaults.get("sync")
    if governor is not None:
        return governor
    if not os.environ.get(ENV_URL):
        return _sync_default()  # null mode: nothing blocks
    from agentplane._client import AsyncClient

    created = AsyncGovernor(await AsyncClient.connect(), agent_id=os.environ.get(ENV_AGENT_ID, ""))
    with _defaults_lock:
        return _defaults.setdefault("async", created)


# --- governed --------------------------------------------------------------------------------


class GovernedCall:
    """One governed execution, as ``with governed(...) as call`` hands it out.

    Set ``usage`` (and ``message``) before the block ends to report them; call ``validate``
    (or ``validate_async``) on the output to run ValidateOutput; ``outcome`` overrides the
    reported outcome (default SUCCESS, or ERROR when the block raises).
    """

    def __init__(self, spec: governed, governor: Governor | AsyncGovernor, decision: Decision):
        self.spec = spec
        self.governor = governor
        self.decision = decision
        self.started = time.perf_counter()
        self.usage: usage_pb2.Usage | Mapping[str, Any] | None = None
        self.message = ""
        self.outcome: int | None = None
        self.validation: governance_service_pb2.ValidateOutputResponse | None = None

    def validate(self, content: str) -> str:
        """ValidateOutput on ``content``; raises OutputRejected; the content to use."""
        governor = self.governor
        if isinstance(governor, AsyncGovernor):
            raise TypeError("use `await call.validate_async(...)` with an AsyncGovernor")
        response = governor.validate_output(content, **self.spec._validate_kwargs())
        return self._verdict(response, content)

    async def validate_async(self, content: str) -> str:
        governor = self.governor
        if isinstance(governor, AsyncGovernor):
            response = await governor.validate_output(content, **self.spec._validate_kwargs())
        else:
            response = await asyncio.to_thread(
                governor.validate_output, content, **self.spec._validate_kwargs()
            )
        return self._verdict(response, content)

    def _verdict(
        self, response: governance_service_pb2.ValidateOutputResponse, content: str
    ) -> str:
        self.validation = response
        verdict = response.verdict
        rejected = verdict == decision_pb2.VERDICT_REJECT or (
            verdict == decision_pb2.VERDICT_FLAG_FOR_REVIEW and not self.spec.allow_flagged
        )
        if rejected:
            self.outcome = FAILURE
            findings = ", ".join(
                f"{decision_pb2.Detector.Name(f.detector)}:{f.detector_name or f.message}"
                for f in response.findings
            )
            self.message = f"output {decision_pb2.Verdict.Name(verdict)}: {findings}"
            raise OutputRejected(
                f"output of {self.spec.action!r} was {decision_pb2.Verdict.Name(verdict)}"
                f" ({findings or 'no findings'})",
                action=self.spec.action,
                validation=response,
            )
        return response.redacted_content if self.spec.redact else content

    def _finish(self, error: BaseException | None) -> None:
        outcome = self.outcome
        if outcome is None:
            outcome = SUCCESS if error is None else ERROR
        message = self.message
        if error is not None and not message:
            message = f"{type(error).__name__}: {error}"
        self.governor.report(
            self.spec.action,
            outcome,
            duration=time.perf_counter() - self.started,
            decision_id=self.decision.decision_id,
            usage=self.usage,
            message=message,
        )


class governed:
    """Govern an action: a decorator for sync and async functions, and a context manager.

        @governed(action="tool:db.query", resource=lambda table, **_: f"db://{table}")
        def query(table: str) -> str: ...

        async with governed(action="tool:search") as call:
            hits = await search(q)
            call.usage = {"input_tokens": 12}

    Before: CheckPermission (cached / local / server); DENY raises ActionDenied and
    REQUIRE_APPROVAL raises ApprovalRequired (or waits ``wait_for_approval`` seconds for a
    reviewer). After: with ``validate_output``, ValidateOutput on the result (``output`` turns
    the result into text; REJECT, and FLAG_FOR_REVIEW unless ``allow_flagged``, raise
    OutputRejected; ``redact=True`` returns the redacted text), then ReportExecution with the
    outcome (SUCCESS, ERROR when it raised, FAILURE when its output was rejected) and duration.

    ``resource`` and ``context`` may be callables that receive the function's arguments.
    ``governor`` defaults to the running Agent's (or one from the environment; null mode
    without AGENTPLANE_URL). ``fail_open`` overrides the governor's setting.
    """

    def __init__(
        self,
        action: str,
        *,
        resource: str | Callable[..., str] = "",
        context: Mapping[str, Any] | Callable[..., Mapping[str, Any] | None] | None = None,
        usage_estimate: usage_pb2.Usage | Mapping[str, Any] | None = None,
        validate_output: bool | Sequence[int] = False,
        output: Callable[[Any], str] | None = None,
        content_type: str = "",
        allow_flagged: bool = False,
        redact: bool = False,
        report: bool = True,
        wait_for_approval: float | None = None,
        fail_open: bool | None = None,
        governor: Governor | AsyncGovernor | None = None,
    ) -> None:
        if not action:
            raise ValueError("governed() needs an action, e.g. governed(action='tool:search')")
        self.action = action
        self.resource = resource
        self.context = context
        self.usage_estimate = usage_estimate
        self.validate_output = validate_output
        self.output = output
        self.content_type = content_type
        self.allow_flagged = allow_flagged
        self.redact = redact
        self.report = report
        self.wait_for_approval = wait_for_approval
        self.fail_open = fail_open
        self.governor = governor
        self._calls: contextvars.ContextVar[tuple[GovernedCall, ...]] = contextvars.ContextVar(
            f"governed:{action}", default=()
        )

    # -- pieces ------------------------------------------------------------------------------

    def _validate_kwargs(self) -> dict[str, Any]:
        checks = () if isinstance(self.validate_output, bool) else tuple(self.validate_output)
        return {"action": self.action, "content_type": self.content_type, "checks": checks}

    def _target(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
        resource = self.resource(*args, **kwargs) if callable(self.resource) else self.resource
        context = self.context(*args, **kwargs) if callable(self.context) else self.context
        return resource, context

    def _with_fail_open(self, governor: Any) -> Any:
        if self.fail_open is None or self.fail_open == governor.fail_open:
            return governor
        return _FailOpenView(governor, self.fail_open)

    def _text(self, result: Any) -> str | None:
        if self.output is not None:
            return self.output(result)
        return result if isinstance(result, str) else None

    def _sync_call(self, resource: str, context: Any) -> GovernedCall:
        governor = self._with_fail_open(self.governor or _sync_default())
        if isinstance(governor, AsyncGovernor):
            raise TypeError("a sync governed() needs a Governor, not an AsyncGovernor")
        decision = governor.authorize(
            self.action,
            resource,
            context,
            usage_estimate=self.usage_estimate,
            wait_for_approval=self.wait_for_approval,
        )
        return GovernedCall(self, governor if self.report else _NoReport(governor), decision)

    async def _async_call(self, resource: str, context: Any) -> GovernedCall:
        governor = self._with_fail_open(self.governor or await _async_default())
        kwargs = {
            "usage_estimate": self.usage_estimate,
            "wait_for_approval": self.wait_for_approval,
        }
        if isinstance(governor, Governor) or isinstance(
            getattr(governor, "_inner", None), Governor
        ):
            decision = await governor.authorize_async(self.action, resource, context, **kwargs)
        else:
            decision = await governor.authorize(self.action, resource, context, **kwargs)
        return GovernedCall(self, governor if self.report else _NoReport(governor), decision)

    def _finish_sync(self, call: GovernedCall, result: Any) -> Any:
        if self.validate_output:
            text = self._text(result)
            if text is not None:
                checked = call.validate(text)
                if self.redact and isinstance(result, str):
                    result = checked
        call._finish(None)
        return result

    async def _finish_async(self, call: GovernedCall, result: Any) -> Any:
        if self.validate_output:
            text = self._text(result)
            if text is not None:
                checked = await call.validate_async(text)
                if self.redact and isinstance(result, str):
                    result = checked
        call._finish(None)
        return result

    # -- decorator -----------------------------------------------------------------------------

    def __call__(self, function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                call = await self._async_call(*self._target(args, kwargs))
                try:
                    result = await function(*args, **kwargs)
                except Exception as error:
                    call._finish(error)
                    raise
                try:
                    return await self._finish_async(call, result)
                except OutputRejected as error:
                    call._finish(error)
                    raise

            return cast(F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            call = self._sync_call(*self._target(args, kwargs))
            try:
                result = function(*args, **kwargs)
            except Exception as error:
                call._finish(error)
                raise
            try:
                return self._finish_sync(call, result)
            except OutputRejected as error:
                call._finish(error)
                raise

        return cast(F, run)

    # -- context manager -------------------------------------------------------------------------

    def __enter__(self) -> GovernedCall:
        resource, context = self._target((), {})
        call = self._sync_call(resource, context)
        self._calls.set((*self._calls.get(), call))
        return call

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        stack = self._calls.get()
        call, self_stack = stack[-1], stack[:-1]
        self._calls.set(self_stack)
        if error is None or isinstance(error, Exception):
            call._finish(error)

    async def __aenter__(self) -> GovernedCall:
        resource, context = self._target((), {})
        call = await self._async_call(resource, context)
        self._calls.set((*self._calls.get(), call))
        return call

    async def __aexit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, error, tb)


class _FailOpenView:
    """A governor seen with another fail_open setting (per governed() override)."""

    def __init__(self, inner: Any, fail_open: bool) -> None:
        self._inner = inner
        self.fail_open = fail_open

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _unreachable(self, action: str, error: RpcError) -> Decision:
        return _GovernorBase._unreachable(cast(_GovernorBase, self), action, error)

    def check(self, *args: Any, **kwargs: Any) -> Any:
        return self._rebind("check")(*args, **kwargs)

    def authorize(self, *args: Any, **kwargs: Any) -> Any:
        return self._rebind("authorize")(*args, **kwargs)

    def authorize_async(self, *args: Any, **kwargs: Any) -> Awaitable[Decision]:
        return self._rebind("authorize_async")(*args, **kwargs)

    def _rebind(self, name: str) -> Callable[..., Any]:
        function = getattr(type(self._inner), name)
        return functools.partial(function, self)


class _NoReport:
    """A governor whose reports are dropped (``governed(report=False)``)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def report(self, *args: Any, **kwargs: Any) -> None:
        pass
