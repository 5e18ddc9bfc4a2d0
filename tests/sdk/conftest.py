"""Fixtures for the Python SDK tests: a real server, an SDK client on it (sync and async).

The SDK is storage-agnostic, so these tests run on SQLite only; the server's own tests run every
storage path on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import agentplane


@pytest.fixture(scope="session")
def backend() -> str:
    return "sqlite"


@pytest.fixture(autouse=True)
def _no_agentplane_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests configure the SDK explicitly; a developer's AGENTPLANE_* must not leak in."""
    for name in (
        "AGENTPLANE_URL",
        "AGENTPLANE_API_KEY",
        "AGENTPLANE_PROJECT",
        "AGENTPLANE_AGENT_ID",
        "AGENTPLANE_CA_CERT",
        "AGENTPLANE_CLIENT_CERT",
        "AGENTPLANE_CLIENT_KEY",
        "AGENTPLANE_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    yield
    agentplane.set_default_governor(None)


@pytest.fixture(scope="module")
def client(server) -> Iterator[agentplane.Client]:  # type: ignore[no-untyped-def]
    with agentplane.Client.connect(server.address, api_key=server.admin_key) as sdk_client:
        yield sdk_client


@pytest.fixture
async def aclient(server) -> AsyncIterator[agentplane.AsyncClient]:  # type: ignore[no-untyped-def]
    async with await agentplane.AsyncClient.connect(
        server.address, api_key=server.admin_key
    ) as sdk_client:
        yield sdk_client
