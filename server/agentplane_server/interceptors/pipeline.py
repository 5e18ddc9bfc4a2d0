"""CallInterceptor: wraps each Agentplane method handler once with the whole per-call pipeline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.context import method_var, principal_var
from agentplane_server.errors import ApiError, Internal, Unavailable, Unimplemented
from agentplane_server.interceptors import metrics
from agentplane_server.interceptors.auth import Authenticator, MethodInfo, method_info
from agentplane_server.interceptors.request_id import begin_request
from agentplane_server.interceptors.validation import RequestValidator
from agentplane_server.storage.errors import storage_unavailable

log = logging.getLogger("agentplane.rpc")
PUBLIC_SERVICES = ("grpc.health.v1.", "grpc.reflection.")


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
        if handler is None or path.lstrip("/").startswith(PUBLIC_SERVICES):
            return handler
        wrapped = self._wrap(handler, method_info(path))
        self._wrapped[path] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: MethodInfo) -> grpc.RpcMethodHandler:
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
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

    async def _begin(self, call: _Call, request: Any, context: grpc.aio.ServicerContext) -> None:
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
        if isinstance(request, Message):  # client-streaming requests are validated per item
            self.validator.check(request)

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
                await self._begin(call, request, context)
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
                await self._begin(call, request, context)
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
