"""InferenceService servicer: translates between the contract and InferenceLogic, and owns the
service's lifetime pieces (the Triton client, the health monitor and the usage writer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health

from agentplane.inference.v1 import inference_service_pb2 as pb
from agentplane.inference.v1 import inference_service_pb2_grpc as rpc
from agentplane_server.context import current_principal
from agentplane_server.inference.health import TritonHealth
from agentplane_server.inference.logic import InferenceLogic
from agentplane_server.inference.meter import UsageMeter
from agentplane_server.inference.triton import TritonClient

if TYPE_CHECKING:
    from agentplane_server.app import ServerState

HOUSEKEEPING_SECONDS = 3600.0


def _time_left(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline, passed on to Triton (None: the caller set none)."""
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e9 else None


class InferenceServicer(rpc.InferenceServiceServicer):
    def __init__(self, state: ServerState, health_servicer: health.aio.HealthServicer) -> None:
        settings = state.settings
        self.health = TritonHealth(health_servicer, settings.triton_health_interval)
        self.triton = TritonClient(
            settings.triton_url, settings.triton_timeout, on_unreachable=self.health.check_now
        )
        self.meter = UsageMeter(state.db)
        self.logic = InferenceLogic(self.triton, self.meter, state.page_tokens, state.shutdown)
        self.health.start(self.triton)
        state.stop_hooks.append(self.close)
        retention = settings.inference_usage_retention_days
        if retention > 0:
            state.housekeeping.add(
                "inference_usage",
                HOUSEKEEPING_SECONDS,
                lambda db: self.meter.housekeeping(db, retention),
            )

    async def close(self) -> None:
        await self.health.stop()
        await self.meter.close()
        await self.triton.close()

    async def Embed(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.embed(current_principal(), request, _time_left(context))

    async def Generate(  # type: ignore[override]
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        async for response in self.logic.generate(
            current_principal(), request, _time_left(context)
        ):
            yield response

    async def ListModels(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_models(current_principal(), request)

    async def GetModel(self, request, context):  # type: ignore[no-untyped-def]
        model = await self.logic.get_model(current_principal(), request.model)
        return pb.GetModelResponse(model=model)
