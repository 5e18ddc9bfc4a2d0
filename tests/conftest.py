"""Shared fixtures: real databases, real server processes, generated stubs.

`backend` runs a test once on SQLite and once on PostgreSQL. `server` is a real server on that
backend, shared by the tests of a module (tests use their own ids, so they do not collide).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serverproc import Postgres, ServerProcess

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres.find()
    yield pg
    pg.close()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def database_url_for(backend: str, postgres: Postgres) -> str | None:
    return postgres.create_database() if backend == "postgres" else None


@pytest.fixture(scope="module")
def server(backend: str, postgres: Postgres) -> Iterator[ServerProcess]:
    process = ServerProcess(database_url_for(backend, postgres))
    yield process
    process.stop()


@pytest.fixture
def make_server(backend: str, postgres: Postgres):  # type: ignore[no-untyped-def]
    """Start extra servers (stopped at the end of the test): make_server(**kwargs)."""
    started: list[ServerProcess] = []

    def make(database_url: str | None = "", **kwargs) -> ServerProcess:  # type: ignore[no-untyped-def]
        url = database_url_for(backend, postgres) if database_url == "" else database_url
        process = ServerProcess(url, **kwargs)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect, on PostgreSQL, the parameters a module lists in SQLITE_ONLY_PARAMS
    ({"fixture": (values...)}): matrices whose other axes run in full on SQLite."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        sqlite_only = getattr(getattr(item, "module", None), "SQLITE_ONLY_PARAMS", {})
        if params.get("backend") == "postgres" and any(
            params.get(name) in values for name, values in sqlite_only.items()
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
