"""Large ValidateOutput scans run in a process of their own.

Python's `re` engine holds the GIL for a whole search, and one search of 1 MiB of hostile
content takes up to a few hundred milliseconds: in a thread it would stall this process's event
loop, and with it every other project's calls. One spawned worker process per server process
scans large content; calls queue for it, which also bounds the CPU a flood of large calls can
take. Small content is scanned in place, where a process round trip would cost more than the
scan.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from agentplane_server.governance import detectors

log = logging.getLogger(__name__)


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; the server stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class DetectorPool:
    def __init__(self, workers: int = 1) -> None:
        self._workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:  # started on first use: most servers never need it
            self._executor = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_interrupts,
            )
        return self._executor

    async def run(self, text: str, checks: list[int]) -> detectors.Scan:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool(), detectors.run, text, checks)
        except BrokenProcessPool:
            log.warning("the detector process stopped; starting another")
            self._executor = None
            return await asyncio.to_thread(detectors.run, text, checks)

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
