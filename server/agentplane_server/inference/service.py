"""Builds InferenceService: the Triton client, its health monitor (the service's health status
follows Triton's reachability) and the usage writer, flushed at shutdown."""

from __future__ import annotations

from typing import Any

from agentplane.inference.v1 import inference_service_pb2
from agentplane_server.inference.health import TritonHealth
from agentplane_server.inference.logic import InferenceLogic
from agentplane_server.inference.meter import UsageMeter
from agentplane_server.inference.servicer import InferenceServicer
from agentplane_server.inference.triton import TritonClient
from agentplane_server.runtime import Runtime

SERVICE = inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
HOUSEKEEPING_SECONDS = 3600.0


def build(runtime: Runtime) -> dict[str, Any]:
    settings = runtime.settings
    health = TritonHealth(runtime.health, settings.triton_health_interval)
    triton = TritonClient(
        settings.triton_url, settings.triton_timeout, on_unreachable=health.check_now
    )
    meter = UsageMeter(runtime.db)
    logic = InferenceLogic(triton, meter, runtime.page_tokens, runtime.shutdown)
    health.start(triton)
    # NOT_SERVING until the monitor has reached Triton; the monitor then keeps it live.
    runtime.self_reported_health.add(SERVICE)

    async def close() -> None:
        await health.stop()
        await meter.close()
        await triton.close()

    runtime.on_stop(close)
    retention = settings.inference_usage_retention_days
    if retention > 0:
        runtime.add_job(
            "inference_usage", HOUSEKEEPING_SECONDS, lambda db: meter.housekeeping(db, retention)
        )
    return {SERVICE: InferenceServicer(logic, triton, health)}
