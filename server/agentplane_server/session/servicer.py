"""SessionService servicer: translates between the contract and SessionLogic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc
from agentplane_server.context import current_principal
from agentplane_server.session.logic import SessionLogic


class SessionServicer(rpc.SessionServiceServicer):
    def __init__(self, logic: SessionLogic) -> None:
        self.logic = logic

    async def CreateSession(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        session = await self.logic.create(current_principal(), request)
        return pb.CreateSessionResponse(session=session)

    async def GetSession(self, request, context):  # type: ignore[no-untyped-def]
        session = await self.logic.get(current_principal(), request.session_id)
        return pb.GetSessionResponse(session=session)

    async def ListSessions(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list(current_principal(), request)

    async def UpdateSession(self, request, context):  # type: ignore[no-untyped-def]
        session = await self.logic.update(current_principal(), request)
        return pb.UpdateSessionResponse(session=session)

    async def DeleteSession(self, request, context):  # type: ignore[no-untyped-def]
        await self.logic.delete(current_principal(), request)
        return pb.DeleteSessionResponse()

    async def AppendMessages(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.append(current_principal(), request)

    async def ListMessages(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_messages(current_principal(), request)

    async def ForkSession(self, request, context):  # type: ignore[no-untyped-def]
        session = await self.logic.fork(current_principal(), request)
        return pb.ForkSessionResponse(session=session)

    async def GetSessionUsage(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.usage(current_principal(), request.session_id)

    async def WatchSession(  # type: ignore[override]
        self, request: pb.WatchSessionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchSessionResponse]:
        async for message in self.logic.watch(current_principal(), request):
            yield pb.WatchSessionResponse(message=message)
