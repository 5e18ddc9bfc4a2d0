"""Builds the registry and governance servicers for one server process and hooks their
background work into the server: housekeeping jobs (one process per deployment) and the
shutdown flush of the decision log and budget spend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentplane_server.governance.classifier import OutputClassifier
from agentplane_server.governance.decision_log import JOURNAL_DIR, DecisionLog
from agentplane_server.governance.logic import GovernanceLogic
from agentplane_server.governance.servicer import GovernanceServicer
from agentplane_server.governance.store import prune_spend
from agentplane_server.governance.trust import record_decay_events
from agentplane_server.registry.logic import RegistryLogic
from agentplane_server.registry.servicer import RegistryServicer
from agentplane_server.storage.db import Database, now_us

if TYPE_CHECKING:
    from agentplane_server.app import ServerState
    from agentplane_server.inference.servicer import InferenceServicer

MAX_BUDGET_WINDOW_US = 2_678_400 * 1_000_000


def registry_and_governance(
    state: ServerState, inference: InferenceServicer | None = None
) -> dict[str, Any]:
    """{service name: servicer} for RegistryService and GovernanceService. ValidateOutput's
    MODEL check uses `inference`'s Triton client and health monitor (no second channel)."""
    settings = state.settings
    registry = RegistryLogic(
        state.db,
        state.page_tokens,
        removal_grace=settings.registry_removal_grace,
        poll_interval=settings.watch_poll_interval,
        shutdown=state.shutdown,
    )
    governance = GovernanceLogic(
        state.db,
        state.page_tokens,
        poll_interval=settings.governance_poll_interval,
        watch_poll_interval=settings.watch_poll_interval,
        decision_log=DecisionLog(
            state.db,
            capacity=settings.decision_log_capacity,
            batch_size=settings.decision_log_batch,
            flush_interval=settings.decision_log_flush_interval,
            journal_dir=settings.data_dir / JOURNAL_DIR,
            sync_interval=settings.decision_journal_sync_interval,
        ),
        shutdown=state.shutdown,
        classifier=(
            OutputClassifier(inference.triton, inference.health) if inference is not None else None
        ),
    )
    # A registry change made here reaches this process's policy snapshots at once.
    registry.listeners.append(governance.snapshots.poke)
    governance.start()

    async def governance_housekeeping(db: Database) -> dict[str, int]:
        await governance.expire_approvals(db)
        await record_decay_events(db)
        async with db.write() as c:
            pruned = await prune_spend(c, now_us() - MAX_BUDGET_WINDOW_US)
        return {"governance_budget_spend": pruned}

    state.housekeeping.add(
        "registry.leases", settings.registry_housekeeping_interval, registry.expire_leases
    )
    state.housekeeping.add(
        "governance", settings.governance_housekeeping_interval, governance_housekeeping
    )

    async def flush() -> None:
        await governance.stop(settings.decision_log_shutdown_deadline)

    state.stop_hooks.append(flush)
    return {
        "agentplane.registry.v1.RegistryService": RegistryServicer(registry),
        "agentplane.governance.v1.GovernanceService": GovernanceServicer(governance),
    }
