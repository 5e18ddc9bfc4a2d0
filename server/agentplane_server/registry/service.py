"""Builds RegistryService; registers the lease expiry job."""

from __future__ import annotations

from typing import Any

from agentplane.registry.v1 import registry_service_pb2
from agentplane_server.registry.logic import RegistryLogic
from agentplane_server.registry.servicer import RegistryServicer
from agentplane_server.runtime import Runtime

SERVICE = registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name


def build(runtime: Runtime) -> dict[str, Any]:
    settings = runtime.settings
    registry = RegistryLogic(
        runtime.db,
        runtime.page_tokens,
        removal_grace=settings.registry_removal_grace,
        poll_interval=settings.watch_poll_interval,
        shutdown=runtime.shutdown,
    )
    runtime.add_job(
        "registry.leases", settings.registry_housekeeping_interval, registry.expire_leases
    )
    return {SERVICE: RegistryServicer(registry)}
