"""InferenceService servicer: translates between the contract and InferenceLogic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agentplane.inference.v1 import inference_service_pb2 as pb
from agentplane.inference.v1 import inference_service_pb2_grpc as rpc
from agentplane_server.context import current_principal
from agentplane_server.inference.health import TritonHealth
from agentplane_server.inference.logic import InferenceLogic
from agentplane_server.inference.triton import TritonClient


def _time_left(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline, passed on to Triton (None: the caller set none)."""
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e9 else None


class InferenceServicer(rpc.InferenceServiceServicer):
    def __init__(self, logic: InferenceLogic, triton: TritonClient, health: TritonHealth) -> None:
        self.logic = logic
        # Shared with GovernanceService's MODEL output check (one channel to Triton).
        self.triton = triton
        self.health = health

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
