"""RegistryService servicer: translates between the contract and RegistryLogic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agentplane.registry.v1 import registry_service_pb2 as pb
from agentplane.registry.v1 import registry_service_pb2_grpc as rpc
from agentplane_server.context import current_principal
from agentplane_server.registry.logic import RegistryLogic


class RegistryServicer(rpc.RegistryServiceServicer):
    def __init__(self, logic: RegistryLogic) -> None:
        self.logic = logic

    async def RegisterAgent(self, request, context):  # type: ignore[no-untyped-def]
        agent = await self.logic.register(current_principal(), request)
        return pb.RegisterAgentResponse(agent=agent)

    async def HeartbeatAgent(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.heartbeat(current_principal(), request)

    async def DeregisterAgent(self, request, context):  # type: ignore[no-untyped-def]
        await self.logic.deregister(current_principal(), request)
        return pb.DeregisterAgentResponse()

    async def GetAgent(self, request, context):  # type: ignore[no-untyped-def]
        agent = await self.logic.get(current_principal(), request.agent_id)
        return pb.GetAgentResponse(agent=agent)

    async def GetAgentCard(self, request, context):  # type: ignore[no-untyped-def]
        card = await self.logic.get_card(current_principal(), request.agent_id, request.a2a_version)
        return pb.GetAgentCardResponse(card=card)

    async def ListAgents(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list(current_principal(), request)

    async def UpdateAgent(self, request, context):  # type: ignore[no-untyped-def]
        agent = await self.logic.update(current_principal(), request)
        return pb.UpdateAgentResponse(agent=agent)

    async def WatchAgents(  # type: ignore[override]
        self, request: pb.WatchAgentsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchAgentsResponse]:
        async for event in self.logic.watch(current_principal(), request):
            yield event
