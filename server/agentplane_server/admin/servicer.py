"""AdminService servicer. Server info lands with the foundation; projects, keys and audit with
access control."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentplane import _contract
from agentplane.admin.v1 import admin_service_pb2 as pb
from agentplane.admin.v1 import admin_service_pb2_grpc as rpc
from agentplane_server import __version__
from agentplane_server.context import current_principal

if TYPE_CHECKING:
    from agentplane_server.app import ServerState


class AdminServicer(rpc.AdminServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def GetServerInfo(self, request, context):  # type: ignore[no-untyped-def]
        who = current_principal()
        features = ["postgres" if not self.state.db.is_sqlite else "sqlite"]
        if self.state.settings.tls_cert:
            features.append("tls")
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
