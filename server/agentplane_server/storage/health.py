"""Health of the services that need the database: a cheap periodic probe that turns them
NOT_SERVING while the database is unreachable and SERVING again once it answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health, health_pb2

from agentplane_server.storage.db import Database
from agentplane_server.storage.errors import storage_unavailable

log = logging.getLogger(__name__)


class StorageHealth:
    def __init__(
        self,
        db: Database,
        health_servicer: health.aio.HealthServicer,
        services: list[str],
        interval: float,
    ) -> None:
        self.db = db
        self.health = health_servicer
        self.services = services
        self.interval = interval
        self.reachable = True
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """Probe once and publish the result; True when the database answered."""
        try:
            await self.db.probe()
            reachable, error = True, ""
        except Exception as exc:
            if storage_unavailable(exc) is None:
                log.error("database probe failed", exc_info=exc)
                return self.reachable
            reachable, error = False, type(exc).__name__
        if reachable != self.reachable:
            self.reachable = reachable
            if reachable:
                log.info("the database answers again; services are SERVING")
            else:
                log.warning(
                    "the database is unreachable; storage-backed services are NOT_SERVING",
                    extra={"error": error},
                )
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if reachable
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for service in self.services:
                await self.health.set(service, status)
        return reachable
