"""FeedbackService servicer: translates between the contract and FeedbackLogic."""

from __future__ import annotations

from agentplane.feedback.v1 import feedback_service_pb2 as pb
from agentplane.feedback.v1 import feedback_service_pb2_grpc as rpc
from agentplane_server.context import current_principal
from agentplane_server.feedback.logic import FeedbackLogic


class FeedbackServicer(rpc.FeedbackServiceServicer):
    def __init__(self, logic: FeedbackLogic) -> None:
        self.logic = logic

    async def CreateFeedback(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.create(current_principal(), request)

    async def GetFeedback(self, request, context):  # type: ignore[no-untyped-def]
        feedback = await self.logic.get(current_principal(), request.feedback_id)
        return pb.GetFeedbackResponse(feedback=feedback)

    async def UpdateFeedback(self, request, context):  # type: ignore[no-untyped-def]
        feedback = await self.logic.update(current_principal(), request)
        return pb.UpdateFeedbackResponse(feedback=feedback)

    async def DeleteFeedback(self, request, context):  # type: ignore[no-untyped-def]
        await self.logic.delete(current_principal(), request.feedback_id)
        return pb.DeleteFeedbackResponse()

    async def ListFeedback(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list(current_principal(), request)

    async def SummarizeFeedback(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.summarize(current_principal(), request)

    async def CreateFeedbackToken(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.create_token(current_principal(), request)

    async def SubmitFeedback(self, request, context):  # type: ignore[no-untyped-def]
        # No principal: the auth interceptor lets this method through without an API key
        # (the request's feedback token is the credential, verified by the logic).
        return await self.logic.submit(request)
