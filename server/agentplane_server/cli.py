"""The `agentplane` command: serve, migrate (and later keys, models, contract)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
import tempfile
from typing import Any

import uvloop

from agentplane_server.config import Settings
from agentplane_server.logs import configure_logging

log = logging.getLogger("agentplane")


# The settings `keys` and `migrate` use; `serve` takes every field.
STORAGE_SETTINGS = ("data_dir", "database_url", "log_level")


def _settings_flags(
    parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None, default: Any = None
) -> None:
    """One flag per Settings field (or per field in `only`); unset flags fall back to
    AGENTPLANE_* and the defaults. default=argparse.SUPPRESS lets a sub-subcommand repeat a
    flag of its parent without overwriting the parent's value when it is not given."""
    for name, info in Settings.model_fields.items():
        if only is not None and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        if info.annotation is bool:
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=info.description,
            )
        else:
            parser.add_argument(flag, dest=name, default=default, help=info.description)


def _settings(args: argparse.Namespace) -> Settings:
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given)


def run_server(settings: Settings) -> None:
    """Serve on uvloop: grpc.aio supports it, and it takes about a quarter off the server's CPU
    per call (measured with bench/bench_sessions.py)."""
    from agentplane_server.app import serve_forever

    uvloop.run(serve_forever(settings))


def _worker_main(settings_json: str) -> None:
    """Entry point of one worker process (spawned; shares the port through SO_REUSEPORT)."""
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into SIGTERM
    run_server(settings)


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


def check_settings(settings: Settings) -> None:
    """Fail once, with a clear message, before any worker starts (and before a database or a
    key is created)."""
    from agentplane_server.admin.bootstrap import read_given_key
    from agentplane_server.app import _server_credentials
    from agentplane_server.auth.jwt import JwtVerifier
    from agentplane_server.auth.mtls import ClientCertificates
    from agentplane_server.signing import configured_keys
    from agentplane_server.transports.console import console_directory

    try:
        if settings.bootstrap_admin_key:
            read_given_key(settings.bootstrap_admin_key)
        _server_credentials(settings)
        JwtVerifier.from_settings(settings)
        ClientCertificates.from_settings(settings)
        configured_keys(settings)
        console_directory(settings)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"agentplane serve: {exc}") from None
    for flag, address in (
        ("--listen", settings.listen),
        ("--metrics-listen", settings.metrics_listen),
        ("--http-listen", settings.http_listen),
    ):
        _check_port_free(flag, address)


def _check_port_free(flag: str, address: str) -> None:
    """Bind the address once, without SO_REUSEPORT: that fails while any server (also one of
    several workers sharing a port) listens there, where the server's own bind may not."""
    host, _, port = address.rpartition(":")
    if not address or not port.isdigit() or int(port) == 0:
        return
    host = host.strip("[]") or "0.0.0.0"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT only
            probe.bind(sockaddr)
    except OSError as exc:
        reason = (
            "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        )
        raise SystemExit(
            f"agentplane serve: {address} {reason}; is another server running? "
            f"Choose another address with {flag}"
        ) from None


def serve(settings: Settings) -> int:
    from agentplane_server.app import prepare

    check_settings(settings)
    asyncio.run(prepare(settings))
    if settings.workers == 1:
        _start_metrics(settings, None)
        run_server(settings)
        return 0

    # Several processes: each worker is a full server on the same port; prometheus-client's
    # multiprocess mode lets this parent serve the metrics of all of them.
    multiprocess_dir = tempfile.mkdtemp(prefix="agentplane-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
    if settings.listen.endswith(":0") or settings.http_listen.endswith(":0"):
        # Workers share fixed ports through SO_REUSEPORT.
        raise SystemExit("--workers > 1 needs fixed ports in --listen and --http-listen")
    from agentplane_server.workers import WorkerSupervisor

    supervisor = WorkerSupervisor(settings, multiprocess_dir, _worker_main)
    supervisor.start()
    _start_metrics(settings, multiprocess_dir)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    return supervisor.run()


ROLES = {"admin": 1, "project_admin": 2, "agent": 3, "reader": 4}


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    """Operator key management straight on the database (no server needed); audited as the
    operator `cli`."""
    from google.protobuf import duration_pb2

    from agentplane.admin.v1 import admin_service_pb2 as pb
    from agentplane.admin.v1 import api_key_pb2
    from agentplane_server.admin.logic import AdminLogic
    from agentplane_server.context import Principal, Role
    from agentplane_server.datadir import make_private
    from agentplane_server.errors import ApiError
    from agentplane_server.pagination import PageTokens
    from agentplane_server.storage.db import Database, migrate

    await _require_existing_database(settings)
    make_private(settings)
    migrate(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    operator = Principal(
        project_id=args.project,
        role=Role.ADMIN,
        subject="cli:operator",
        credential_project_id=args.project,
    )
    logic = AdminLogic(db, PageTokens(b"cli"), lambda: None)
    try:
        await logic.get_project(operator, args.project)  # NOT_FOUND: keys of no project
        if args.keys_command == "create":
            request = pb.CreateApiKeyRequest(
                display_name=args.name,
                role=ROLES[args.role],
                agent_id=args.agent_id or "",
                requests_per_second=args.rate_limit,
            )
            if args.ttl:
                request.ttl.CopyFrom(duration_pb2.Duration(seconds=args.ttl))
            created = await logic.create_key(operator, request)
            # The secret goes to stdout only, once; logs name the key id.
            print(created.key)
            log.info("created API key", extra={"key_id": created.api_key.key_id})
        elif args.keys_command == "list":
            listed = await logic.list_keys(operator, pb.ListApiKeysRequest(page_size=500))
            for key in listed.api_keys:
                print(
                    f"{key.key_id}\t{api_key_pb2.Role.Name(key.role)}\t{key.agent_id or '-'}"
                    f"\t{api_key_pb2.ApiKeyState.Name(key.state)}\t{key.prefix}...\t"
                    f"{key.display_name}"
                )
        elif args.keys_command == "revoke":
            revoked = await logic.revoke_key(operator, args.key_id)
            print(f"{revoked.key_id}\t{api_key_pb2.ApiKeyState.Name(revoked.state)}")
    except ApiError as exc:
        print(f"agentplane keys {args.keys_command}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await db.dispose()
    return 0


async def _require_existing_database(settings: Settings) -> None:
    """`keys` works on the database of a server that has started at least once: run elsewhere,
    it must not create a second, empty one whose keys that server does not know."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    if not settings.database_url:
        if not (settings.data_dir / "agentplane.db").is_file():
            raise SystemExit(
                f"agentplane keys: no Agentplane database in {settings.data_dir.resolve()} "
                "(start the server once, or give its --data-dir or --database-url)"
            )
        return
    url = sa.make_url(settings.database_url)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            found = await connection.run_sync(lambda c: sa.inspect(c).has_table("projects"))
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise SystemExit(f"agentplane keys: cannot reach the database: {message}") from None
    finally:
        await engine.dispose()
    if not found:
        raise SystemExit(
            f"agentplane keys: the database {url.render_as_string(hide_password=True)} has no "
            "Agentplane schema (start the server once, or run `agentplane migrate`)"
        )


def _keys_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    _settings_flags(parser, STORAGE_SETTINGS, default=default)
    parser.add_argument(
        "--project",
        default="default" if default is None else default,
        help="project of the keys (default: default)",
    )


def _models_parser(commands: Any) -> None:
    """`agentplane models validate|deploy|status` (inference/repository.py does the work)."""
    # No settings flags here: --triton would be an ambiguous prefix of --triton-url; the default
    # Triton address comes from AGENTPLANE_TRITON_URL.
    models = commands.add_parser("models", help="validate, deploy and inspect Triton models")
    sub = models.add_subparsers(dest="models_command", required=True)
    validate = sub.add_parser("validate", help="check every config.pbtxt and version folder")
    validate.add_argument("repository", help="model repository folder, e.g. triton-models")
    validate.add_argument("--model", action="append", help="only this model (repeatable)")
    deploy = sub.add_parser("deploy", help="load models into Triton over its API")
    deploy.add_argument("repository", help="model repository folder, e.g. triton-models")
    deploy.add_argument(
        "--triton", help="Triton gRPC host:port (default: $AGENTPLANE_TRITON_URL or 127.0.0.1:8001)"
    )
    deploy.add_argument("--model", action="append", help="only this model (repeatable)")
    deploy.add_argument(
        "--config-name",
        help="send configs/NAME.pbtxt instead of config.pbtxt where a model has one (e.g. gpu)",
    )
    status = sub.add_parser("status", help="models in Triton with their versions and states")
    status.add_argument(
        "--triton", help="Triton gRPC host:port (default: $AGENTPLANE_TRITON_URL or 127.0.0.1:8001)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentplane", description="Agentplane control plane")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the gRPC server")
    _settings_flags(serve_parser)
    migrate_parser = commands.add_parser("migrate", help="apply database migrations and exit")
    _settings_flags(migrate_parser, STORAGE_SETTINGS)
    keys_parser = commands.add_parser("keys", help="create, list and revoke API keys")
    _keys_flags(keys_parser, default=None)
    key_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="mint a key and print it once")
    create.add_argument("--role", choices=sorted(ROLES), required=True)
    create.add_argument("--agent-id", help="the agent a role=agent key acts as")
    create.add_argument("--name", default="", help="display name")
    create.add_argument("--ttl", type=int, default=0, help="seconds until it expires")
    create.add_argument("--rate-limit", type=int, default=0, help="requests per second")
    listing = key_commands.add_parser("list", help="list keys (never their secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    for sub in (
        create,
        listing,
        revoke,
    ):  # `keys create --project p` as well as `keys --project p create`
        _keys_flags(sub, default=argparse.SUPPRESS)
    _models_parser(commands)
    args = parser.parse_args(argv)
    settings = _settings(args)
    configure_logging(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    if args.command == "models":
        from agentplane_server.inference import repository

        return repository.main(args, settings.triton_url)
    if args.command == "keys":
        return asyncio.run(_keys(args, settings))
    if args.command == "migrate":
        from agentplane_server.datadir import make_private
        from agentplane_server.storage.db import migrate

        make_private(settings)
        migrate(settings.resolved_database_url)
        log.info("database is at the latest schema")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
