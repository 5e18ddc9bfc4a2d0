"""The `agentplane` command: serve, migrate (and later keys, models, contract)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
from typing import Any

from agentplane_server.config import Settings
from agentplane_server.logs import configure_logging

log = logging.getLogger("agentplane")


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; unset flags fall back to AGENTPLANE_* and the defaults."""
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if info.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=info.description)  # fmt: skip
        else:
            parser.add_argument(flag, dest=name, default=None, help=info.description)


def _settings(args: argparse.Namespace) -> Settings:
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given)


def _worker_main(settings_json: str) -> None:
    """Entry point of one worker process (spawned; shares the port through SO_REUSEPORT)."""
    from agentplane_server.app import serve_forever

    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into SIGTERM
    asyncio.run(serve_forever(settings))


def _start_metrics(settings: Settings, multiprocess_dir: str | None) -> None:
    if not settings.metrics_listen:
        return
    from prometheus_client import CollectorRegistry, start_http_server

    host, _, port = settings.metrics_listen.rpartition(":")
    registry: Any = None
    if multiprocess_dir:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    kwargs = {"registry": registry} if registry is not None else {}
    start_http_server(int(port), addr=host or "127.0.0.1", **kwargs)
    log.info("metrics", extra={"listen": settings.metrics_listen})


def serve(settings: Settings) -> int:
    from agentplane_server.app import prepare, serve_forever

    asyncio.run(prepare(settings))
    if settings.workers == 1:
        _start_metrics(settings, None)
        asyncio.run(serve_forever(settings))
        return 0

    # Several processes: each worker is a full server on the same port; prometheus-client's
    # multiprocess mode lets this parent serve the metrics of all of them.
    multiprocess_dir = tempfile.mkdtemp(prefix="agentplane-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
    if settings.listen.endswith(":0"):
        raise SystemExit("--workers > 1 needs a fixed port in --listen")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_main, args=(settings.model_dump_json(),), daemon=False)
        for _ in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    _start_metrics(settings, multiprocess_dir)

    def forward(signum: int, _frame: Any) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    return max((w.exitcode or 0) for w in workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentplane", description="Agentplane control plane")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the gRPC server")
    _settings_flags(serve_parser)
    migrate_parser = commands.add_parser("migrate", help="apply database migrations and exit")
    _settings_flags(migrate_parser)
    args = parser.parse_args(argv)
    settings = _settings(args)
    configure_logging(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    if args.command == "migrate":
        from agentplane_server.storage.db import migrate

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate(settings.resolved_database_url)
        log.info("database is at the latest schema")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
