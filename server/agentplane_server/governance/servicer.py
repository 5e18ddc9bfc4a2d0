"""GovernanceService servicer: translates between the contract and GovernanceLogic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane.governance.v1 import governance_service_pb2_grpc as rpc
from agentplane_server.context import current_principal
from agentplane_server.governance.logic import GovernanceLogic


class GovernanceServicer(rpc.GovernanceServiceServicer):
    def __init__(self, logic: GovernanceLogic) -> None:
        self.logic = logic

    async def CheckPermission(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.check(current_principal(), request)

    async def ValidateOutput(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.validate(current_principal(), request)

    async def CreatePolicy(self, request, context):  # type: ignore[no-untyped-def]
        policy = await self.logic.create_policy(current_principal(), request)
        return pb.CreatePolicyResponse(policy=policy)

    async def GetPolicy(self, request, context):  # type: ignore[no-untyped-def]
        policy = await self.logic.get_policy(current_principal(), request.policy_id)
        return pb.GetPolicyResponse(policy=policy)

    async def ListPolicies(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_policies(current_principal(), request)

    async def UpdatePolicy(self, request, context):  # type: ignore[no-untyped-def]
        policy = await self.logic.update_policy(current_principal(), request)
        return pb.UpdatePolicyResponse(policy=policy)

    async def DeletePolicy(self, request, context):  # type: ignore[no-untyped-def]
        await self.logic.delete_policy(current_principal(), request)
        return pb.DeletePolicyResponse()

    async def EvaluatePolicies(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.evaluate(current_principal(), request)

    async def WatchPolicies(  # type: ignore[override]
        self, request: pb.WatchPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchPoliciesResponse]:
        async for message in self.logic.watch_policies(current_principal(), request):
            yield message

    async def GetGovernanceSettings(self, request, context):  # type: ignore[no-untyped-def]
        settings = await self.logic.get_settings(current_principal())
        return pb.GetGovernanceSettingsResponse(settings=settings)

    async def UpdateGovernanceSettings(self, request, context):  # type: ignore[no-untyped-def]
        settings = await self.logic.update_settings(current_principal(), request)
        return pb.UpdateGovernanceSettingsResponse(settings=settings)

    async def GetTrustScore(self, request, context):  # type: ignore[no-untyped-def]
        score = await self.logic.get_trust(current_principal(), request)
        return pb.GetTrustScoreResponse(trust_score=score)

    async def ListTrustScores(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_trust(current_principal(), request)

    async def ReportExecution(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.report_execution(current_principal(), request)

    async def AdjustTrustScore(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.adjust_trust(current_principal(), request)

    async def ListTrustEvents(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_trust_events(current_principal(), request)

    async def ListApprovals(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_approvals(current_principal(), request)

    async def GetApproval(self, request, context):  # type: ignore[no-untyped-def]
        approval = await self.logic.get_approval(current_principal(), request.approval_id)
        return pb.GetApprovalResponse(approval=approval)

    async def ResolveApproval(self, request, context):  # type: ignore[no-untyped-def]
        approval = await self.logic.resolve_approval(current_principal(), request)
        return pb.ResolveApprovalResponse(approval=approval)

    async def WatchApproval(  # type: ignore[override]
        self, request: pb.WatchApprovalRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchApprovalResponse]:
        async for approval in self.logic.watch_approval(current_principal(), request.approval_id):
            yield pb.WatchApprovalResponse(approval=approval)

    async def GetDecision(self, request, context):  # type: ignore[no-untyped-def]
        record = await self.logic.get_decision(current_principal(), request.decision_id)
        return pb.GetDecisionResponse(decision_record=record)

    async def ListDecisions(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_decisions(current_principal(), request)
