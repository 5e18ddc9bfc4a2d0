"""client.admin (AdminService) through the SDK, sync and async, against a real server."""

from __future__ import annotations

import datetime

import pytest

import agentplane
from agentplane import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from agentplane.admin.v1 import api_key_pb2
from sdk.sdkutil import uid


def test_projects(client) -> None:  # type: ignore[no-untyped-def]
    admin = client.admin
    ids = sorted(uid("proj") for _ in range(3))
    for project_id in ids:
        created = admin.create_project(
            project_id=project_id, display_name=f"Team {project_id}", labels={"env": "test"}
        ).project
        assert created.project_id == project_id and created.etag
    with pytest.raises(AlreadyExistsError) as caught:
        admin.create_project(project_id=ids[0])
    assert caught.value.reason == "ERROR_REASON_RESOURCE_ALREADY_EXISTS"
    listed = [p.project_id for p in admin.list_projects(page_size=1)]
    assert set(ids) <= set(listed) and "default" in listed and listed == sorted(listed)

    project = admin.get_project(project_id=ids[0]).project
    updated = admin.update_project(
        project={"project_id": ids[0], "display_name": "Renamed", "etag": project.etag},
        update_mask=["display_name"],
    ).project
    assert updated.display_name == "Renamed"
    with pytest.raises(AbortedError):
        admin.update_project(
            project={"project_id": ids[0], "display_name": "x", "etag": project.etag},
            update_mask=["display_name"],
        )
    with pytest.raises(FailedPreconditionError) as caught:
        admin.delete_project(project_id="default")
    assert caught.value.reason == "ERROR_REASON_PROTECTED_RESOURCE"
    admin.delete_project(project_id=ids[0])
    with pytest.raises(NotFoundError) as caught:
        admin.get_project(project_id=ids[0])
    assert caught.value.metadata.get("resource_type") == "project"


def test_api_keys_and_audit(client, server) -> None:  # type: ignore[no-untyped-def]
    admin = client.admin
    created = admin.create_api_key(
        display_name="reader", role=api_key_pb2.ROLE_READER, ttl=datetime.timedelta(hours=1)
    )
    assert created.key.startswith(created.api_key.prefix)
    key_id = created.api_key.key_id
    assert admin.get_api_key(key_id=key_id).api_key.display_name == "reader"
    assert key_id in [k.key_id for k in admin.list_api_keys(page_size=1)]

    reader = agentplane.Client.connect(server.address, api_key=created.key)
    assert reader.server_info().principal.role == api_key_pb2.ROLE_READER
    with pytest.raises(PermissionDeniedError):
        reader.sessions.create_session(title="readers cannot write")
    revoked = admin.revoke_api_key(key_id=key_id).api_key
    assert revoked.state == api_key_pb2.API_KEY_STATE_REVOKED
    assert admin.revoke_api_key(key_id=key_id).api_key.state == api_key_pb2.API_KEY_STATE_REVOKED
    with pytest.raises(UnauthenticatedError):
        reader.server_info()
    reader.close()

    events = list(admin.list_audit_events(resource_id=key_id))
    assert {"api_key.create", "api_key.revoke"} <= {e.action for e in events}


async def test_admin_async(aclient) -> None:  # type: ignore[no-untyped-def]
    admin = aclient.admin
    info = await admin.get_server_info()
    assert info.contract_version == agentplane.CONTRACT_VERSION
    assert await aclient.check_contract()
    project_id = uid("aproj")
    await admin.create_project(project_id=project_id)
    assert project_id in [p.project_id async for p in admin.list_projects(page_size=2)]
    other = aclient.with_options(project=project_id)
    key = await other.admin.create_api_key(role="ROLE_AGENT", agent_id="bot-1")
    assert key.api_key.project_id == project_id and key.api_key.agent_id == "bot-1"
    keys = [k.key_id async for k in other.admin.list_api_keys()]
    assert keys == [key.api_key.key_id]
    events = [e async for e in other.admin.list_audit_events(actions=["api_key.create"])]
    assert [e.resource_id for e in events] == [key.api_key.key_id]
    await admin.delete_project(project_id=project_id, force=True)
    with pytest.raises(NotFoundError):
        await admin.get_project(project_id=project_id)
