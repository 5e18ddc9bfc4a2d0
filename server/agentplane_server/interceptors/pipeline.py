"""CallInterceptor: wraps each Agentplane method handler once with the whole per-call pipeline."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.context import method_var, principal_var
from agentplane_server.errors import (
    ApiError,
    FieldViolation,
    Internal,
    InvalidArgument,
    Unavailable,
    Unimplemented,
)
from agentplane_server.interceptors import metrics
from agentplane_server.interceptors.auth import Authenticator, MethodInfo, method_info
from agentplane_server.interceptors.request_id import begin_request
from agentplane_server.interceptors.validation import RequestValidator
from agentplane_server.storage.errors import storage_unavailable

log = logging.getLogger("agentplane.rpc")
PUBLIC_SERVICES = ("grpc.health.v1.", "grpc.reflection.")
# Bytes that do not parse are anyone's to send, credentials or not: say so at most this often.
MALFORMED_WARNING_EVERY_S = 10.0


class MalformedRequest:
    """Stands in for a request whose bytes did not parse (corrupt wire data, invalid UTF-8 in a
    string field, nesting past the parser's limit), so the pipeline answers it like any other
    bad request instead of the framework answering UNKNOWN from inside its deserializer."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class _MalformedLog:
    """One warning per interval, counting the malformed requests it stood for."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.last = -every_s
        self.suppressed = 0

    def warn(self, method: MethodInfo, problem: str) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.suppressed += 1
            return
        log.warning(
            "malformed request bytes",
            extra={
                "service": method.service,
                "problem": problem,
                "suppressed_since_last": self.suppressed,
            },
        )
        self.last, self.suppressed = now, 0


_malformed_log = _MalformedLog(MALFORMED_WARNING_EVERY_S)


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # any parse failure means the bytes are not the message
            return MalformedRequest(type(exc).__name__)

    return parse


def malformed(request: Any, method: MethodInfo) -> InvalidArgument | None:
    """INVALID_ARGUMENT for a request that did not parse; None for a parsed one."""
    if not isinstance(request, MalformedRequest):
        return None
    _malformed_log.warn(method, request.problem)
    description = f"the request bytes are not a valid {method.name} request message"
    return InvalidArgument(
        f"malformed request: {description}",
        field_violations=[FieldViolation("(request)", description, "request.malformed")],
        metadata={"method": f"{method.service}/{method.name}"},
    )


async def _checked(requests: AsyncIterator[Any], method: MethodInfo) -> AsyncIterator[Any]:
    """A client stream whose items are checked for malformed bytes as they arrive."""
    async for request in requests:
        error = malformed(request, method)
        if error is not None:
            raise error
        yield request


def as_api_error(exc: BaseException, method: MethodInfo) -> ApiError:
    """The one mapping from anything a handler raises to what the caller sees."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NotImplementedError):
        return Unimplemented(
            f"{method.service}/{method.name} is part of the Agentplane contract but this "
            "server does not serve it yet",
            metadata={"method": f"{method.service}/{method.name}"},
        )
    unavailable = storage_unavailable(exc)
    if unavailable is not None:
        log.warning("storage unavailable: %s", type(exc).__name__)
        return unavailable
    log.error("unhandled error", exc_info=exc)
    return Internal("internal error; the server log has details under this request id")


class _Call:
    """State of one call through the pipeline."""

    __slots__ = ("code", "method", "request_id", "started")

    def __init__(self, method: MethodInfo) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.request_id = ""


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, authenticator: Authenticator, validator: RequestValidator, access_log: bool
    ) -> None:
        self.authenticator = authenticator
        self.validator = validator
        self.access_log = access_log
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        # Set when the server begins to stop: calls that start from then on are answered
        # UNAVAILABLE at once (see AgentplaneServer.stop), and last_call_started tells when the
        # queue of arrived calls has emptied.
        self.draining = False
        self.last_call_started = 0.0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        path = handler_call_details.method
        wrapped = self._wrapped.get(path)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        public = path.lstrip("/").startswith(PUBLIC_SERVICES)
        wrapped = self._wrap(handler, method_info(path), public)
        self._wrapped[path] = wrapped
        return wrapped

    def _wrap(
        self, handler: grpc.RpcMethodHandler, method: MethodInfo, public: bool
    ) -> grpc.RpcMethodHandler:
        kwargs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if public:  # health and reflection: no credentials, only the malformed-bytes check
            return _public_handler(handler, method, kwargs)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, method), **kwargs
        )

    async def _begin(self, call: _Call, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Runs the steps before the servicer; returns the request the servicer gets."""
        metadata = {m.key: m.value for m in context.invocation_metadata() or ()}
        call.request_id = begin_request(metadata, context)
        self.last_call_started = call.started
        if self.draining:
            raise Unavailable(
                "the server is shutting down; retry",
                reason=ErrorReason.ERROR_REASON_SERVER_SHUTTING_DOWN,
            )
        method_var.set(call.method.name)
        auth_context = None if "authorization" in metadata else context.auth_context()
        principal_var.set(
            await self.authenticator.authenticate(metadata, call.method, auth_context)
        )
        error = malformed(request, call.method)
        if error is not None:
            raise error
        if isinstance(request, Message):
            self.validator.check(request)
        elif hasattr(request, "__aiter__"):  # a client stream: checked item by item
            return _checked(request, call.method)
        return request  # a message, or raw bytes that their servicer parses itself

    async def _fail(
        self, call: _Call, exc: BaseException, context: grpc.aio.ServicerContext
    ) -> None:
        error = as_api_error(exc, call.method)
        call.code = error.code
        await context.abort_with_status(error.to_status(call.request_id))

    def _finish(self, call: _Call) -> None:
        elapsed = time.perf_counter() - call.started
        metrics.observe(call.method.service, call.method.name, call.code.name, elapsed)
        if self.access_log:
            log.info(
                "rpc",
                extra={
                    "service": call.method.service,
                    "code": call.code.name,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )

    def _unary(self, behavior: Callable, method: MethodInfo) -> Callable:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(method)
            try:
                request = await self._begin(call, request, context)
                return await behavior(request, context)
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # every failure gets a mapped status
                await self._fail(call, exc, context)
            finally:
                self._finish(call)

        return handle

    def _stream(self, behavior: Callable, method: MethodInfo) -> Callable:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(method)
            try:
                request = await self._begin(call, request, context)
                async for response in behavior(request, context):
                    yield response
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._fail(call, exc, context)
            finally:
                self._finish(call)

        return handle


def _public_handler(
    handler: grpc.RpcMethodHandler, method: MethodInfo, kwargs: dict[str, Any]
) -> grpc.RpcMethodHandler:
    """A public method (health, reflection) with only the malformed-bytes check in front."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        error = malformed(request, method)
        if error is not None:
            await context.abort_with_status(error.to_status())

    if handler.unary_unary:

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(request, context)
            return await handler.unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
    if handler.unary_stream and inspect.iscoroutinefunction(handler.unary_stream):
        # Written with context.write (grpc_health's Watch): stays a coroutine, so that the
        # framework (and the HTTP listener) let it write.

        async def unary_stream_writer(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(request, context)
            await handler.unary_stream(request, context)

        return grpc.unary_stream_rpc_method_handler(unary_stream_writer, **kwargs)
    if handler.unary_stream:

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(request, context)
            async for response in handler.unary_stream(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)

    async def stream_checked(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        async for request in requests:
            await refuse(request, context)
            yield request

    if handler.stream_unary:

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            return await handler.stream_unary(stream_checked(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        async for response in handler.stream_stream(stream_checked(requests, context), context):
            yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
