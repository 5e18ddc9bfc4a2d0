"""`serve --workers N`: the parent process that keeps N worker processes running."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from agentplane_server.config import Settings

log = logging.getLogger("agentplane")


class WorkerSupervisor:
    """Keeps `settings.workers` worker processes running: a worker that dies is logged and
    replaced after a backoff (1 s doubling to 30 s, reset once a worker has run a minute); if
    workers keep dying (RESTART_LIMIT deaths within RESTART_WINDOW seconds) the rest are
    stopped and `serve` exits 1. On SIGTERM every worker is stopped; the exit status is 0 only
    if all of them stopped cleanly."""

    RESTART_LIMIT = 5
    RESTART_WINDOW = 60.0
    STABLE_AFTER = 60.0

    def __init__(
        self, settings: Settings, multiprocess_dir: str, target: Callable[[str], None]
    ) -> None:
        self.settings = settings
        self.multiprocess_dir = multiprocess_dir
        self.target = target  # the worker's entry point, given the settings as JSON
        self.context = multiprocessing.get_context("spawn")
        self.slots: list[Any] = [None] * settings.workers
        self.started_at = [0.0] * settings.workers
        self.restart_at: dict[int, float] = {}  # slot -> when its replacement starts
        self.backoff = 1.0
        self.deaths: list[float] = []
        self.stopping = False
        self.failed = False

    def start(self) -> None:
        for slot in range(len(self.slots)):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        worker = self.context.Process(
            target=self.target, args=(self.settings.model_dump_json(),), daemon=False
        )
        worker.start()
        self.slots[slot] = worker
        self.started_at[slot] = time.monotonic()

    def request_stop(self, signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        self.stopping = True
        for worker in self.slots:
            if worker is not None and worker.is_alive() and worker.pid:
                os.kill(worker.pid, signal.SIGTERM)

    def run(self) -> int:
        from multiprocessing.connection import wait

        final_codes: list[int] = []  # exit statuses of the workers stopped at shutdown
        while any(w is not None for w in self.slots) or self.restart_at:
            live = {w.sentinel: slot for slot, w in enumerate(self.slots) if w is not None}
            for sentinel in wait(list(live), timeout=0.5) if live else ():
                slot = live[sentinel]  # type: ignore[index]
                worker = self.slots[slot]
                worker.join()
                self.slots[slot] = None
                if self.stopping:
                    final_codes.append(worker.exitcode)
                self._died(slot, worker)
            if not live:
                time.sleep(0.2)
            now = time.monotonic()
            for slot, when in list(self.restart_at.items()):
                if self.stopping:
                    del self.restart_at[slot]
                elif now >= when:
                    del self.restart_at[slot]
                    self._spawn(slot)
                    log.info("restarted worker", extra={"slot": slot, "pid": self.slots[slot].pid})
        if self.failed:
            return 1
        # A worker still starting when SIGTERM came has no handler yet and ends by the signal.
        stopped_as_asked = (0, -signal.SIGTERM)
        return 0 if all(code in stopped_as_asked for code in final_codes) else 1

    def _died(self, slot: int, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, self.multiprocess_dir)
        if self.stopping:
            return
        code = worker.exitcode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        now = time.monotonic()
        if now - self.started_at[slot] >= self.STABLE_AFTER:
            self.backoff = 1.0
        self.deaths = [t for t in self.deaths if now - t < self.RESTART_WINDOW] + [now]
        if len(self.deaths) >= self.RESTART_LIMIT:
            log.error(
                "workers keep dying; stopping the server",
                extra={"pid": worker.pid, "how": how, "deaths": len(self.deaths)},
            )
            self.failed = True
            self.request_stop()
            return
        log.error(
            "worker died; restarting it",
            extra={"pid": worker.pid, "how": how, "restart_in_s": self.backoff},
        )
        self.restart_at[slot] = now + self.backoff
        self.backoff = min(30.0, self.backoff * 2)
