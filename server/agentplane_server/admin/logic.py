"""AdminService behaviour: who may manage projects and keys, and the audit trail of it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from google.protobuf import field_mask_pb2, json_format
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane.admin.v1 import admin_service_pb2 as pb
from agentplane.admin.v1 import api_key_pb2, project_pb2
from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.admin.bootstrap import DEFAULT_PROJECT
from agentplane_server.admin.store import AdminStore
from agentplane_server.auth.keys import create_key
from agentplane_server.context import Principal, Role, request_id_var
from agentplane_server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    etag_mismatch,
)
from agentplane_server.pagination import PageTokens
from agentplane_server.resources import parse_etag
from agentplane_server.storage.db import Database, now_us
from agentplane_server.storage.idempotency import run_idempotent

PAGE = (50, 500)


def not_found(resource_type: str, resource_id: str) -> NotFound:
    return NotFound(
        f"{resource_type} {resource_id!r} not found",
        metadata={"resource_type": resource_type, "resource_id": resource_id},
    )


def require_admin(who: Principal, action: str) -> None:
    if who.role is not Role.ADMIN:
        raise PermissionDenied(f"{action} needs an admin credential")


def require_project_admin(who: Principal, action: str) -> None:
    if who.role not in (Role.ADMIN, Role.PROJECT_ADMIN):
        raise PermissionDenied(f"{action} needs an admin or project_admin credential")


def _settings_json(project: project_pb2.Project) -> dict[str, Any]:
    return json_format.MessageToDict(project.settings)


def _settings_paths(descriptor: Any = project_pb2.ProjectSettings.DESCRIPTOR) -> list[str]:
    """Every update_mask path below `settings` (derived from the contract, so a setting added
    there is maskable without a change here)."""
    paths = []
    for field in descriptor.fields:
        paths.append(field.name)
        if field.message_type is not None and field.message_type.full_name.startswith(
            "agentplane."
        ):
            paths += [f"{field.name}.{sub}" for sub in _settings_paths(field.message_type)]
    return paths


PROJECT_MASK_PATHS = frozenset(
    ["display_name", "labels", "settings", *(f"settings.{p}" for p in _settings_paths())]
)
# Quotas limit what a project may use, so only an admin sets them ("settings" replaces them too).
QUOTA_PATHS = frozenset(p for p in PROJECT_MASK_PATHS if p == "settings" or ".quotas" in p)
# Roles from most to least powerful: a project_admin manages only keys of roles below its own.
_ROLE_RANK = {Role.ADMIN: 0, Role.PROJECT_ADMIN: 1, Role.AGENT: 2, Role.READER: 2}


def require_manages_role(who: Principal, role: int, action: str) -> None:
    """An admin manages keys of every role; a project_admin only agent and reader keys."""
    if who.role is Role.ADMIN:
        return
    if _ROLE_RANK[Role(role)] <= _ROLE_RANK[who.role]:
        raise PermissionDenied(
            f"{action}: a {who.role.name.lower()} credential manages only keys of roles below "
            f"its own (agent, reader), not {api_key_pb2.Role.Name(role)} keys",
            metadata={"role": api_key_pb2.Role.Name(role)},
        )


def _merged_settings(
    stored: project_pb2.Project, given: project_pb2.Project, paths: list[str]
) -> dict[str, Any]:
    """The stored settings with the masked settings paths taken from the request (an unset
    field in the request clears the setting, as a field mask update does)."""
    merged = project_pb2.Project()
    merged.settings.CopyFrom(stored.settings)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        given, merged, replace_message_field=True, replace_repeated_field=True
    )
    return json_format.MessageToDict(merged.settings)


class AdminLogic:
    def __init__(
        self, db: Database, page_tokens: PageTokens, on_credentials_changed: Callable[[], None]
    ) -> None:
        self.db = db
        self.store = AdminStore()
        self.page_tokens = page_tokens
        self.on_credentials_changed = on_credentials_changed

    async def audit(
        self,
        c: AsyncConnection,
        who: Principal,
        action: str,
        resource_type: str,
        resource_id: str,
        details: dict[str, Any] | None = None,
        project_id: str | None = None,
    ) -> None:
        await self.store.add_event(
            c,
            {
                "event_id": f"aud_{secrets.token_hex(10)}",
                "project_id": project_id or who.project_id,
                "actor_key_id": who.key_id,
                "actor_subject": who.subject,
                "actor_project_id": who.credential_project_id or who.project_id,
                "actor_role": int(who.role),
                "actor_agent_id": who.agent_id,
                "action": action,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "details": details,
                "request_id": request_id_var.get(),
                "create_time_us": now_us(),
            },
        )

    # -- projects -----------------------------------------------------------------------------

    async def create_project(
        self, who: Principal, request: pb.CreateProjectRequest
    ) -> project_pb2.Project:
        require_admin(who, "CreateProject")

        async def work(c: AsyncConnection) -> pb.CreateProjectResponse:
            now = now_us()
            project = project_pb2.Project(settings=request.settings)
            inserted = await self.store.insert_project(
                c,
                {
                    "project_id": request.project_id,
                    "display_name": request.display_name,
                    "settings": _settings_json(project),
                    "labels": dict(request.labels),
                    "version": 1,
                    "create_time_us": now,
                    "update_time_us": now,
                },
            )
            if not inserted:
                raise AlreadyExists(
                    f"project {request.project_id!r} already exists",
                    metadata={"resource_type": "project", "resource_id": request.project_id},
                )
            await self.audit(
                c,
                who,
                "project.create",
                "project",
                request.project_id,
                project_id=request.project_id,
            )
            return pb.CreateProjectResponse(
                project=await self.store.get_project(c, request.project_id)
            )

        response, _ = await run_idempotent(
            self.db,
            who.credential_project_id or who.project_id,
            "CreateProject",
            request.request_id,
            request,
            pb.CreateProjectResponse,
            work,
        )
        return response.project

    def _visible(self, who: Principal, project_id: str) -> bool:
        return who.role is Role.ADMIN or project_id == who.project_id

    async def get_project(self, who: Principal, project_id: str) -> project_pb2.Project:
        if not self._visible(who, project_id):
            raise not_found("project", project_id)
        async with self.db.read() as c:
            project = await self.store.get_project(c, project_id)
        if project is None:
            raise not_found("project", project_id)
        return project

    async def list_projects(
        self, who: Principal, request: pb.ListProjectsRequest
    ) -> pb.ListProjectsResponse:
        filters = {"caller": who.project_id if who.role is not Role.ADMIN else "*"}
        page = self.page_tokens.page("ListProjects", request, filters, PAGE)
        only = None if who.role is Role.ADMIN else who.project_id
        async with self.db.read() as c:
            rows = await self.store.list_projects(
                c, only, str(page.position[0]) if page.position else None, page.fetch
            )
        projects, token = page.finish(rows, lambda p: [p.project_id])
        return pb.ListProjectsResponse(projects=projects, next_page_token=token)

    async def update_project(
        self, who: Principal, request: pb.UpdateProjectRequest
    ) -> project_pb2.Project:
        require_project_admin(who, "UpdateProject")
        project = request.project
        if not self._visible(who, project.project_id):
            raise not_found("project", project.project_id)
        paths = list(dict.fromkeys(request.update_mask.paths))
        unknown = [p for p in paths if p not in PROJECT_MASK_PATHS]
        if unknown:
            raise InvalidArgument.field(
                "update_mask", f"unknown paths {unknown}; paths are {sorted(PROJECT_MASK_PATHS)}"
            )
        if who.role is not Role.ADMIN and any(p in QUOTA_PATHS for p in paths):
            raise PermissionDenied(
                "only an admin credential may change a project's quotas "
                f"(update_mask paths {sorted(QUOTA_PATHS)})",
                metadata={"paths": ",".join(p for p in paths if p in QUOTA_PATHS)},
            )
        values: dict[str, Any] = {}
        for path in paths:
            if path == "labels":
                values["labels"] = dict(project.labels)
            elif path == "display_name":
                values["display_name"] = project.display_name
        settings_paths = [p for p in paths if p.split(".", 1)[0] == "settings"]
        async with self.db.write() as c:
            if settings_paths:
                stored = await self.store.get_project(c, project.project_id)
                if stored is None:
                    raise not_found("project", project.project_id)
                values["settings"] = _merged_settings(stored, project, settings_paths)
            if not await self.store.update_project(
                c, project.project_id, values, parse_etag(project.etag, "project.etag")
            ):
                if await self.store.get_project(c, project.project_id) is None:
                    raise not_found("project", project.project_id)
                raise etag_mismatch("project", project.project_id)
            await self.audit(
                c,
                who,
                "project.update",
                "project",
                project.project_id,
                {"paths": list(request.update_mask.paths)},
                project_id=project.project_id,
            )
            updated = await self.store.get_project(c, project.project_id)
        self.on_credentials_changed()  # quotas may have changed
        assert updated is not None
        return updated

    async def delete_project(self, who: Principal, request: pb.DeleteProjectRequest) -> None:
        require_admin(who, "DeleteProject")
        if request.project_id == DEFAULT_PROJECT:
            raise FailedPrecondition(
                "the default project cannot be deleted",
                reason=ErrorReason.ERROR_REASON_PROTECTED_RESOURCE,
                metadata={"resource_type": "project", "resource_id": DEFAULT_PROJECT},
            )
        async with self.db.write() as c:
            if await self.store.get_project(c, request.project_id) is None:
                raise not_found("project", request.project_id)
            if not request.force and await self.store.project_holds_data(c, request.project_id):
                raise FailedPrecondition(
                    f"project {request.project_id!r} still holds data; delete with force",
                    reason=ErrorReason.ERROR_REASON_PROJECT_NOT_EMPTY,
                    metadata={"project_id": request.project_id},
                )
            if not await self.store.delete_project(c, request.project_id, parse_etag(request.etag)):
                raise etag_mismatch("project", request.project_id)
            await self.audit(
                c,
                who,
                "project.delete",
                "project",
                request.project_id,
                {"force": request.force},
                project_id=who.credential_project_id or who.project_id,
            )
        self.on_credentials_changed()

    # -- API keys -----------------------------------------------------------------------------

    async def create_key(
        self, who: Principal, request: pb.CreateApiKeyRequest
    ) -> pb.CreateApiKeyResponse:
        require_project_admin(who, "CreateApiKey")
        require_manages_role(who, request.role, "CreateApiKey")
        expire_time_us = None
        if request.HasField("expire_time"):
            expire_time_us = request.expire_time.ToMicroseconds()
        elif request.HasField("ttl"):
            expire_time_us = now_us() + request.ttl.ToMicroseconds()
        minted: dict[str, str] = {}

        async def work(c: AsyncConnection) -> pb.CreateApiKeyResponse:
            key = await create_key(
                c,
                who.project_id,
                Role(request.role),
                display_name=request.display_name,
                agent_id=request.agent_id,
                expire_time_us=expire_time_us,
                rate_limit_rps=float(request.requests_per_second) or None,
                creator_key_id=who.key_id,
            )
            minted["secret"] = key.secret
            await self.audit(
                c,
                who,
                "api_key.create",
                "api_key",
                key.key_id,
                {"role": api_key_pb2.Role.Name(request.role), "agent_id": request.agent_id},
            )
            stored = await self.store.get_key(c, who.project_id, key.key_id)
            # The stored result (for request_id retries) never holds the secret.
            return pb.CreateApiKeyResponse(api_key=stored)

        response, _ = await run_idempotent(
            self.db,
            who.project_id,
            "CreateApiKey",
            request.request_id,
            request,
            pb.CreateApiKeyResponse,
            work,
        )
        if "secret" in minted:
            response.key = minted["secret"]
        return response

    async def get_key(self, who: Principal, key_id: str) -> api_key_pb2.ApiKey:
        if who.key_id != key_id:
            require_project_admin(who, "GetApiKey")
        async with self.db.read() as c:
            key = await self.store.get_key(c, who.project_id, key_id)
        if key is None:
            raise not_found("api_key", key_id)
        return key

    async def list_keys(
        self, who: Principal, request: pb.ListApiKeysRequest
    ) -> pb.ListApiKeysResponse:
        require_project_admin(who, "ListApiKeys")
        filters = {
            "p": who.project_id,
            "s": request.state,
            "r": request.role,
            "a": request.agent_id,
        }
        page = self.page_tokens.page("ListApiKeys", request, filters, PAGE)
        after = (int(page.position[0]), str(page.position[1])) if page.position else None
        async with self.db.read() as c:
            rows = await self.store.list_keys(
                c,
                who.project_id,
                role=request.role,
                agent_id=request.agent_id,
                after=after,
                limit=page.fetch,
            )
        keys, token = page.finish(rows, lambda k: [k.create_time.ToMicroseconds(), k.key_id])
        response = pb.ListApiKeysResponse(next_page_token=token)
        for key in keys:
            if not request.state or key.state == request.state:
                response.api_keys.append(key)
        return response

    async def revoke_key(self, who: Principal, key_id: str) -> api_key_pb2.ApiKey:
        if who.key_id != key_id:  # a key may always revoke itself
            require_project_admin(who, "RevokeApiKey")
        async with self.db.write() as c:
            key = await self.store.get_key(c, who.project_id, key_id)
            if key is None:
                raise not_found("api_key", key_id)
            if who.key_id != key_id:
                require_manages_role(who, key.role, "RevokeApiKey")
            if key.state == api_key_pb2.API_KEY_STATE_ACTIVE:
                if (
                    key.role == api_key_pb2.ROLE_ADMIN
                    and await self.store.count_active_keys(c, None, api_key_pb2.ROLE_ADMIN) <= 1
                ):
                    raise FailedPrecondition(
                        "this is the last active admin key; create another before revoking it",
                        reason=ErrorReason.ERROR_REASON_PROTECTED_RESOURCE,
                        metadata={"resource_type": "api_key", "resource_id": key_id},
                    )
                await self.store.revoke_key(c, who.project_id, key_id)
                await self.audit(c, who, "api_key.revoke", "api_key", key_id)
            revoked = await self.store.get_key(c, who.project_id, key_id)
        self.on_credentials_changed()
        assert revoked is not None
        return revoked

    # -- audit ----------------------------------------------------------------------------------

    async def list_events(
        self, who: Principal, request: pb.ListAuditEventsRequest
    ) -> pb.ListAuditEventsResponse:
        require_project_admin(who, "ListAuditEvents")
        window = request.create_time
        after_us = window.start_time.ToMicroseconds() if window.HasField("start_time") else None
        before_us = window.end_time.ToMicroseconds() if window.HasField("end_time") else None
        filters = {
            "p": who.project_id,
            "a": sorted(request.actions),
            "actor": request.actor,
            "t": request.resource_type,
            "id": request.resource_id,
            "w": [after_us, before_us],
        }
        page = self.page_tokens.page("ListAuditEvents", request, filters, PAGE)
        position = page.position
        async with self.db.read() as c:
            rows = await self.store.list_events(
                c,
                who.project_id,
                actions=list(request.actions),
                actor=request.actor,
                resource_type=request.resource_type,
                resource_id=request.resource_id,
                after_us=after_us,
                before_us=before_us,
                position=(int(position[0]), str(position[1])) if position else None,
                limit=page.fetch,
            )
        events, token = page.finish(rows, lambda e: [e.create_time.ToMicroseconds(), e.event_id])
        return pb.ListAuditEventsResponse(audit_events=events, next_page_token=token)
