"""The HTTP listener: the gRPC listener's methods over the Connect protocol and gRPC-Web.

connectrpc (the official Connect runtime for Python) reads and writes the wire: routing,
Connect unary and streaming framing, JSON and binary codecs, compression, timeouts, GET for
read-only methods, gRPC-Web, and error bodies with google.rpc details. uvicorn serves it, with
Starlette's CORS middleware in front. Each call runs the very handler the gRPC listener runs
(the servicer wrapped by the CallInterceptor pipeline, so request ids, authentication, roles,
validation, rate limits, error mapping, metrics and the access log are the same code), with an
HttpServicerContext standing in for grpc.aio's ServicerContext. This module translates only.

Served: every unary and server-streaming method registered on the gRPC server. Not served:
grpc.reflection (a bidirectional stream, which HTTP/1.1 cannot carry; grpcurl uses the gRPC
listener) and native gRPC framing (HTTP/2 trailers: the gRPC listener's job).
Requests the runtime rejects before a handler runs (unknown path: 404, unsupported content
type: 415, malformed body: invalid_argument, body over --max-message-bytes: resource_exhausted)
never reach the pipeline, as on the gRPC listener, where grpcio rejects them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple

import grpc
import uvicorn
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.compat._codec import ProtoJSONCodec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2
from protobuf.wkt import Any as WireAny
from starlette.middleware.cors import CORSMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from agentplane_server.config import Settings

# Headers a browser may send (CORS preflight): Connect's, gRPC-Web's, and Agentplane's.
CORS_ALLOW_HEADERS = [
    "authorization",
    "content-type",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-accept-encoding",
    "connect-content-encoding",
    "accept-encoding",
    "content-encoding",
    "grpc-timeout",
    "grpc-accept-encoding",
    "x-grpc-web",
    "x-user-agent",
    "x-request-id",
    "x-agentplane-project",
]
# Response headers a browser script may read: gRPC-Web's status, Connect's unary trailers.
CORS_EXPOSE_HEADERS = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
    "content-encoding",
    "connect-content-encoding",
    "x-request-id",
    "trailer-x-request-id",
]

log = logging.getLogger(__name__)
_scope_var: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("http_scope")

# grpc.StatusCode -> Connect code (the same canonical codes; gRPC spells one CANCELLED).
_CODES = {
    status: Code.CANCELED if status is grpc.StatusCode.CANCELLED else Code[status.name]
    for status in grpc.StatusCode
    if status is not grpc.StatusCode.OK
}
_STATUS_DETAILS = "grpc-status-details-bin"


class _Metadatum(NamedTuple):
    key: str
    value: str


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple


# --- what the gRPC server serves -----------------------------------------------------------------


class RegisteredMethods:
    """Stands in for the grpc.aio server while services are added: passes every registration on
    and remembers the handlers, so the HTTP listener serves exactly what the gRPC server does."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self._handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        handlers = tuple(handlers)
        self._handlers.extend(handlers)
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self._server.add_registered_method_handlers(service, handlers)

    def handler(self, path: str) -> grpc.RpcMethodHandler | None:
        details = _CallDetails(path, ())
        for generic in self._handlers:
            found = generic.service(details)  # type: ignore[arg-type]
            if found is not None:
                return found
        return None


async def http_endpoints(
    methods: RegisteredMethods,
    services: Iterable[str],
    interceptor: grpc.aio.ServerInterceptor,
) -> dict[str, Any]:
    """Connect endpoints (by URL path) for every unary and server-streaming method of
    `services`, each running the handler `interceptor` gives the gRPC listener for it."""
    pool = descriptor_pool.Default()
    endpoints: dict[str, Any] = {}
    for name in services:
        for method in pool.FindServiceByName(name).methods:
            if method.client_streaming:
                continue  # not in HTTP/1.1's reach (only reflection has one)
            path = f"/{name}/{method.name}"
            raw = methods.handler(path)
            if raw is None:
                continue

            async def continuation(_details: Any, raw: grpc.RpcMethodHandler = raw) -> Any:
                return raw

            handler = await interceptor.intercept_service(continuation, _CallDetails(path, ()))
            endpoints[path] = _endpoint(method, handler)
    return endpoints


def _endpoint(method: MethodDescriptor, handler: grpc.RpcMethodHandler) -> Any:
    read_only = (
        method.GetOptions().idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    )
    info = MethodInfo(
        name=method.name,
        service_name=method.containing_service.full_name,
        input=message_factory.GetMessageClass(method.input_type),
        output=message_factory.GetMessageClass(method.output_type),
        # NO_SIDE_EFFECTS lets Connect clients (and curl) use GET.
        idempotency_level=IdempotencyLevel.NO_SIDE_EFFECTS
        if read_only
        else IdempotencyLevel.UNKNOWN,
        stream_type=StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY,
    )
    # A handler without a deserializer takes the request's bytes (OTLP Export does).
    as_bytes = handler.request_deserializer is None

    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request: Message, ctx: RequestContext) -> Any:
            context = HttpServicerContext(ctx)
            try:
                response = await behavior(
                    request.SerializeToString() if as_bytes else request, context
                )
            except (ConnectError, asyncio.CancelledError):
                raise
            except Exception as exc:  # a handler outside the pipeline (health): as grpcio does
                raise context.unhandled(exc) from None
            if response is None:
                raise context.unhandled(None)
            return response

        return Endpoint.unary(info, unary)

    behavior = handler.unary_stream

    async def server_stream(request: Message, ctx: RequestContext) -> AsyncIterator[Any]:
        context = HttpServicerContext(ctx)
        responses = behavior(request.SerializeToString() if as_bytes else request, context)
        if inspect.isawaitable(responses):  # written with context.write (grpc_health's Watch)
            responses = context.written(responses)
        try:
            async for response in responses:
                yield response
        except (ConnectError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise context.unhandled(exc) from None

    return Endpoint.server_stream(info, server_stream)


# --- the servicer context of an HTTP call --------------------------------------------------------

_END = object()


class HttpServicerContext:
    """What the pipeline and the servicers use of grpc.aio.ServicerContext, for an HTTP call."""

    __slots__ = ("_code", "_ctx", "_details", "_queue", "_scope")

    def __init__(self, ctx: RequestContext) -> None:
        self._ctx = ctx
        self._scope = _scope_var.get({})
        self._queue: asyncio.Queue | None = None
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def unhandled(self, exc: BaseException | None) -> ConnectError:
        """What grpcio answers for a handler that raised (or returned nothing) outside the
        pipeline: the code it set, else UNKNOWN. Pipeline handlers never get here: their
        errors are mapped in interceptors/pipeline.py and arrive as ConnectErrors."""
        if exc is not None and self._code is None:
            log.error("unhandled error in %s", self._ctx.method.name, exc_info=exc)
        code = self._code or grpc.StatusCode.UNKNOWN
        return connect_error(code, self._details or "unexpected error in the method handler")

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return tuple(_Metadatum(k, v) for k, v in self._ctx.request_headers.allitems())

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        for key, value in metadata:
            if isinstance(value, str):
                self._ctx.response_trailers[key] = value

    async def send_initial_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        for key, value in metadata:
            if isinstance(value, str):
                self._ctx.response_headers[key] = value

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Iterable = ()
    ) -> None:
        raise connect_error(code, details, trailing_metadata)

    async def abort_with_status(self, status: grpc.Status) -> None:
        raise connect_error(status.code, status.details, status.trailing_metadata)

    def auth_context(self) -> dict[str, list[bytes]]:
        """As grpc.aio reports it: the verified client certificate (mTLS) when there is one."""
        if self._scope.get("scheme") != "https":
            return {"transport_security_type": [b"insecure"]}
        found: dict[str, list[bytes]] = {"transport_security_type": [b"ssl"]}
        chain = self._scope.get("extensions", {}).get("tls", {}).get("client_cert_chain")
        if chain:
            found["x509_pem_cert"] = [chain[0].encode()]
        return found

    def peer(self) -> str:
        client = self._scope.get("client")
        return f"ipv4:{client[0]}:{client[1]}" if client else ""

    def time_remaining(self) -> float | None:
        remaining = self._ctx.timeout_ms
        return None if remaining is None else max(0.0, remaining / 1000)

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    async def write(self, message: Message) -> None:
        assert self._queue is not None, "write() outside a server stream"
        await self._queue.put(message)

    async def written(self, behavior: Awaitable[None]) -> AsyncIterator[Any]:
        """The messages a handler sends with write() until it returns."""
        queue = self._queue = asyncio.Queue(maxsize=1)
        task = asyncio.ensure_future(behavior)
        task.add_done_callback(lambda _: queue.put_nowait(_END))
        try:
            while (item := await queue.get()) is not _END:
                yield item
            task.result()
        finally:
            task.cancel()


def connect_error(
    code: grpc.StatusCode, message: str, trailing_metadata: Iterable = ()
) -> ConnectError:
    """A gRPC status (with its google.rpc.Status details trailer) as the same Connect error."""
    details = []
    for key, value in trailing_metadata or ():
        if key == _STATUS_DETAILS:
            status = status_pb2.Status.FromString(value)
            details = [
                ErrorDetail(WireAny(type_url=d.type_url, value=d.value)) for d in status.details
            ]
    return ConnectError(_CODES.get(code, Code.UNKNOWN), message or "", details)


# --- the ASGI application and its server ---------------------------------------------------------


class _JsonCodec(ProtoJSONCodec):
    """google.protobuf JSON, compact (connectrpc's indents it)."""

    def encode(self, message: Message) -> bytes:
        return json_format.MessageToJson(message, indent=None).encode()


class _Endpoints(ConnectASGIApplication):
    path = "/"


def build_app(
    endpoints: dict[str, Any], settings: Settings, fallback: Callable | None = None
) -> Callable:
    """The HTTP listener's ASGI application: CORS, then the Connect endpoints; other paths go to
    `fallback` (404 without one)."""
    rpc = _Endpoints(
        service=None,
        endpoints=lambda _service: endpoints,
        read_max_bytes=settings.max_message_bytes,
        codecs=[google_protobuf_binary_codec(), _JsonCodec()],
    )

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        if fallback is not None and scope["path"] not in endpoints:
            await fallback(scope, receive, send)
            return
        _scope_var.set(scope)
        await rpc(scope, receive, send)

    return CORSMiddleware(
        app,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=CORS_ALLOW_HEADERS,
        expose_headers=CORS_EXPOSE_HEADERS,
        max_age=7200,
    )


class _Protocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, plus the ASGI TLS extension's client certificate (which
    uvicorn does not fill in): the verified peer certificate of the connection, as PEM."""

    _tls: dict | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = transport.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        self._tls = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)]} if der else None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[typeddict-unknown-key]


class _Server(uvicorn.Server):
    """uvicorn inside the Agentplane process: the process owns the signals (app.py drains
    both listeners on SIGTERM), so uvicorn must not take them over."""

    def capture_signals(self) -> contextlib.nullcontext:  # type: ignore[override]
        return contextlib.nullcontext()


class HttpListener:
    """uvicorn on --http-listen, TLS with the gRPC listener's certificate flags."""

    def __init__(self, app: Callable, settings: Settings) -> None:
        self.settings = settings
        self.app = app
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> int:
        settings = self.settings
        host, _, port = settings.http_listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family, kind, proto, _, address = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if settings.workers > 1:  # the workers share the port, as they do the gRPC one
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        self.port = sock.getsockname()[1]
        tls: dict[str, Any] = {}
        if settings.tls_cert is not None:
            tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
            if settings.tls_client_ca is not None:
                tls |= {
                    "ssl_ca_certs": str(settings.tls_client_ca),
                    "ssl_cert_reqs": ssl.CERT_REQUIRED,
                }
        config = uvicorn.Config(
            self.app,
            http=_Protocol,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,  # the pipeline writes the access log
            server_header=False,
            timeout_graceful_shutdown=settings.shutdown_grace,  # type: ignore[arg-type]
            **tls,
        )
        # uvicorn's own start/stop lines name no listener; app.py logs those.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"could not serve HTTP on {settings.http_listen}")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop accepting connections; let calls finish for `grace` seconds, then cancel them."""
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = grace  # type: ignore[assignment]
        self._server.should_exit = True
        await self._task
