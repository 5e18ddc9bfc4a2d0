"""AdminService servicer: translates between the contract and AdminLogic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentplane import _contract
from agentplane.admin.v1 import admin_service_pb2 as pb
from agentplane.admin.v1 import admin_service_pb2_grpc as rpc
from agentplane_server import __version__
from agentplane_server.admin.logic import AdminLogic
from agentplane_server.context import current_principal

if TYPE_CHECKING:
    from agentplane_server.runtime import Runtime


class AdminServicer(rpc.AdminServiceServicer):
    def __init__(self, state: Runtime, logic: AdminLogic) -> None:
        self.state = state
        self.logic = logic

    async def GetServerInfo(self, request, context):  # type: ignore[no-untyped-def]
        who = current_principal()
        settings = self.state.settings
        features = ["sqlite" if self.state.db.is_sqlite else "postgres"]
        features += [
            name
            for name, on in (
                ("tls", settings.tls_cert),
                ("mtls", settings.tls_client_ca),
                ("jwt", settings.jwt_jwks_url or settings.jwt_key_file),
            )
            if on
        ]
        response = pb.GetServerInfoResponse(
            server_version=__version__,
            contract_version=_contract.CONTRACT_VERSION,
            contract_digest=_contract.CONTRACT_DIGEST,
            services=self.state.services,
            features=features,
            principal=pb.Principal(
                project_id=who.project_id,
                credential_project_id=who.credential_project_id,
                role=int(who.role),
                agent_id=who.agent_id,
                key_id=who.key_id,
                subject=who.subject,
            ),
            instance_id=self.state.instance_id,
        )
        if who.expire_time_us is not None:
            response.principal.expire_time.FromMicroseconds(who.expire_time_us)
        response.start_time.FromMicroseconds(int(self.state.start_time * 1_000_000))
        return response

    async def CreateProject(self, request, context):  # type: ignore[no-untyped-def]
        project = await self.logic.create_project(current_principal(), request)
        return pb.CreateProjectResponse(project=project)

    async def GetProject(self, request, context):  # type: ignore[no-untyped-def]
        project = await self.logic.get_project(current_principal(), request.project_id)
        return pb.GetProjectResponse(project=project)

    async def ListProjects(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_projects(current_principal(), request)

    async def UpdateProject(self, request, context):  # type: ignore[no-untyped-def]
        project = await self.logic.update_project(current_principal(), request)
        return pb.UpdateProjectResponse(project=project)

    async def DeleteProject(self, request, context):  # type: ignore[no-untyped-def]
        await self.logic.delete_project(current_principal(), request)
        return pb.DeleteProjectResponse()

    async def CreateApiKey(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.create_key(current_principal(), request)

    async def GetApiKey(self, request, context):  # type: ignore[no-untyped-def]
        key = await self.logic.get_key(current_principal(), request.key_id)
        return pb.GetApiKeyResponse(api_key=key)

    async def ListApiKeys(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_keys(current_principal(), request)

    async def RevokeApiKey(self, request, context):  # type: ignore[no-untyped-def]
        key = await self.logic.revoke_key(current_principal(), request.key_id)
        return pb.RevokeApiKeyResponse(api_key=key)

    async def ListAuditEvents(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list_events(current_principal(), request)
