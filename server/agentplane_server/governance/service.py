"""Builds GovernanceService and hooks its background work into the server: housekeeping jobs
(one process per deployment), decision retention, and the shutdown flush of the decision log and
budget spend. Built after RegistryService and InferenceService, whose servicers it uses."""

from __future__ import annotations

from typing import Any

from agentplane.governance.v1 import governance_service_pb2
from agentplane_server.governance.classifier import OutputClassifier
from agentplane_server.governance.decision_log import JOURNAL_DIR, DecisionLog
from agentplane_server.governance.logic import GovernanceLogic
from agentplane_server.governance.retention import expire_decisions
from agentplane_server.governance.servicer import GovernanceServicer
from agentplane_server.governance.store import prune_spend
from agentplane_server.governance.trust import record_decay_events
from agentplane_server.inference.service import SERVICE as INFERENCE_SERVICE
from agentplane_server.registry.service import SERVICE as REGISTRY_SERVICE
from agentplane_server.runtime import Runtime
from agentplane_server.storage.db import Database, now_us

SERVICE = governance_service_pb2.DESCRIPTOR.services_by_name["GovernanceService"].full_name
MAX_BUDGET_WINDOW_US = 2_678_400 * 1_000_000


def build(runtime: Runtime) -> dict[str, Any]:
    """ValidateOutput's MODEL check uses the inference servicer's Triton client and health
    monitor (no second channel); a registry change reaches the policy snapshots at once."""
    settings = runtime.settings
    inference = runtime.servicers.get(INFERENCE_SERVICE)
    governance = GovernanceLogic(
        runtime.db,
        runtime.page_tokens,
        poll_interval=settings.governance_poll_interval,
        watch_poll_interval=settings.watch_poll_interval,
        decision_log=DecisionLog(
            runtime.db,
            capacity=settings.decision_log_capacity,
            batch_size=settings.decision_log_batch,
            flush_interval=settings.decision_log_flush_interval,
            journal_dir=settings.data_dir / JOURNAL_DIR,
            sync_interval=settings.decision_journal_sync_interval,
        ),
        shutdown=runtime.shutdown,
        classifier=(
            OutputClassifier(inference.triton, inference.health) if inference is not None else None
        ),
    )
    registry = runtime.servicers.get(REGISTRY_SERVICE)
    if registry is not None:
        # A registry change made here reaches this process's policy snapshots at once.
        registry.logic.listeners.append(governance.snapshots.poke)
    governance.start()

    async def governance_housekeeping(db: Database) -> dict[str, int]:
        await governance.expire_approvals(db)
        await record_decay_events(db)
        async with db.write() as c:
            pruned = await prune_spend(c, now_us() - MAX_BUDGET_WINDOW_US)
        return {"governance_budget_spend": pruned}

    runtime.add_job(
        "governance", settings.governance_housekeeping_interval, governance_housekeeping
    )
    runtime.add_retention("decisions", expire_decisions)

    async def flush() -> None:
        await governance.stop(settings.decision_log_shutdown_deadline)

    runtime.on_stop(flush)
    return {SERVICE: GovernanceServicer(governance)}
