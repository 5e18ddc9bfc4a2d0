"""The inference service's health: SERVING while Triton answers, NOT_SERVING while it does not.

A background task asks Triton whether it is live every `interval` seconds (at once when a call
has just found it unreachable) and sets the service's status on the server's grpc.health.v1
servicer, so load balancers and `grpc_health_probe` see inference go away and come back by
itself, without a restart of Agentplane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health, health_pb2

from agentplane_server.inference.triton import TritonClient

log = logging.getLogger(__name__)

SERVICE = "agentplane.inference.v1.InferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MIN_GAP = 0.2  # seconds


class TritonHealth:
    def __init__(self, health_servicer: health.aio.HealthServicer, interval: float) -> None:
        self.health = health_servicer
        self.interval = interval
        self.serving: bool | None = None  # unknown until the first check
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, triton: TritonClient) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(triton))

    def check_now(self) -> None:
        self._wake.set()

    async def _run(self, triton: TritonClient) -> None:
        while True:
            self._wake.clear()
            live = await triton.live(probe_seconds=max(0.5, min(self.interval, 2.0)))
            if live != self.serving:
                if live:
                    log.info("triton is reachable: inference SERVING", extra={"url": triton.url})
                else:
                    log.warning(
                        "triton is unreachable: inference NOT_SERVING", extra={"url": triton.url}
                    )
                self.serving = live
            # Set every round, not only on change: the server sets every service's first
            # status after the servicers were built, which may land after this task's first.
            await self.health.set(SERVICE, SERVING if live else NOT_SERVING)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                continue
            # Woken by a failing call: failing calls may ask back to back, so pause a little.
            await asyncio.sleep(MIN_GAP)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
