# ruff: noqa: ASYNC109 - `timeout` is a gRPC deadline or a bounded wait, part of the API.
"""The call layer under every sub-client: deadline, metadata, retry, typed errors, paging.

``SyncTransport`` runs on a ``grpc.Channel``, ``AsyncTransport`` on a ``grpc.aio.Channel``, and
``NullTransport`` answers every call with an empty response (null mode). The generated
sub-clients (``_services.py``) only build requests and pick one of four calls: ``unary``,
``paginate`` (items of every page, page tokens hidden), ``stream`` (server streaming).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from agentplane._config import ConnectConfig
from agentplane._errors import CancelledError, RpcError, from_grpc_error
from agentplane._retry import RetryPolicy
from agentplane._validation import validate_request

log = logging.getLogger("agentplane")

T = TypeVar("T")
Headers = Mapping[str, str]

# CreateApiKey returns the secret only in the first response: a retry that the server answers
# from its idempotency record would hand back a key without its secret. Never fill its
# request_id (callers who set one accept that trade-off knowingly).
NO_AUTO_REQUEST_ID = frozenset({"/agentplane.admin.v1.AdminService/CreateApiKey"})


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One RPC of the contract, as the transport needs it."""

    path: str  # "/agentplane.session.v1.SessionService/CreateSession"
    request_type: type[Message]
    response_type: type[Message]
    idempotent: bool  # NO_SIDE_EFFECTS or IDEMPOTENT in the contract
    has_request_id: bool
    streaming: bool = False
    items_field: str = ""  # for List RPCs: the repeated field that holds a page's items
    # Seconds; None: the client's default timeout. Watch streams have no deadline by default.
    default_timeout: float | None = None
    long_lived: bool = False


def _prepare(
    spec: MethodSpec,
    request: Message,
    owned: bool,
    retry: RetryPolicy | bool | None,
    default: RetryPolicy,
) -> tuple[Message, RetryPolicy | None]:
    """The request to send (with a request_id filled in) and the retry policy, if any."""
    if retry is False:
        return request, None
    policy = retry if isinstance(retry, RetryPolicy) else default
    if policy.max_attempts <= 1:
        return request, None
    if spec.has_request_id and not request.request_id:  # type: ignore[attr-defined]
        if not policy.auto_request_id or spec.path in NO_AUTO_REQUEST_ID:
            return request, policy if spec.idempotent else None
        if not owned:  # never change the caller's object: it may be reused for another call
            copy = type(request)()
            copy.CopyFrom(request)
            request = copy
        request.request_id = uuid.uuid4().hex  # type: ignore[attr-defined]
        return request, policy
    if spec.idempotent or spec.has_request_id:
        return request, policy
    return request, None


class SyncStream(Generic[T]):
    """A server stream: iterate it for responses; ``cancel()`` (or leaving ``with``) ends it."""

    def __init__(self, call: Any, spec: MethodSpec) -> None:
        self._call = call
        self._spec = spec
        self._cancelled = False

    def __iter__(self) -> SyncStream[T]:
        return self

    def __next__(self) -> T:
        try:
            return next(self._call)
        except grpc.RpcError as error:
            if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                raise StopIteration from None
            raise from_grpc_error(error, self._spec.path) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class AsyncStream(Generic[T]):
    """A server stream for ``async for``; ``cancel()`` (or leaving ``async with``) ends it."""

    def __init__(self, call: Any, spec: MethodSpec) -> None:
        self._call = call
        self._spec = spec
        self._cancelled = False

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._cancelled:
            raise StopAsyncIteration
        try:
            response = await self._call.read()
        except asyncio.CancelledError:
            if self._cancelled:
                raise StopAsyncIteration from None
            raise
        except grpc.RpcError as error:
            if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                raise StopAsyncIteration from None
            raise from_grpc_error(error, self._spec.path) from None
        if response is grpc.aio.EOF:
            raise StopAsyncIteration
        return response  # type: ignore[no-any-return]

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class _Base:
    def __init__(self, config: ConnectConfig) -> None:
        self.config = config
        self._metadata = config.call_metadata()

    def _md(self, headers: Headers | None) -> tuple[tuple[str, str], ...]:
        if not headers:
            return self._metadata
        return self._metadata + tuple((k.lower(), v) for k, v in headers.items())

    def _timeout(self, spec: MethodSpec, timeout: float | None) -> float | None:
        if timeout is not None:
            return timeout
        if spec.long_lived:
            return spec.default_timeout
        return spec.default_timeout or self.config.timeout


class SyncTransport(_Base):
    def __init__(self, channel: grpc.Channel, config: ConnectConfig) -> None:
        super().__init__(config)
        self.channel = channel
        self._unary: dict[str, Any] = {}
        self._streams: dict[str, Any] = {}

    def _callable(self, spec: MethodSpec) -> Any:
        call = self._unary.get(spec.path)
        if call is None:
            call = self._unary[spec.path] = self.channel.unary_unary(
                spec.path,
                request_serializer=spec.request_type.SerializeToString,
                response_deserializer=spec.response_type.FromString,
            )
        return call

    def unary(
        self,
        spec: MethodSpec,
        request: Message,
        *,
        owned: bool = True,
        timeout: float | None = None,
        retry: RetryPolicy | bool | None = None,
        headers: Headers | None = None,
    ) -> Any:
        if self.config.validate:
            validate_request(request, spec.path)
        request, policy = _prepare(spec, request, owned, retry, self.config.retry)
        metadata = self._md(headers)
        seconds = self._timeout(spec, timeout)
        call = self._callable(spec)
        if policy is None:
            try:
                return call(request, timeout=seconds, metadata=metadata)
            except grpc.RpcError as error:
                raise from_grpc_error(error, spec.path) from None
        deadline = None if seconds is None else time.monotonic() + seconds
        attempt = 1
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                return call(request, timeout=remaining, metadata=metadata)
            except grpc.RpcError as grpc_error:
                error = from_grpc_error(grpc_error, spec.path)
            delay = _next_delay(policy, error, attempt, deadline)
            if delay is None:
                raise error
            time.sleep(delay)
            attempt += 1

    def paginate(
        self,
        spec: MethodSpec,
        request: Message,
        *,
        owned: bool = True,
        timeout: float | None = None,
        retry: RetryPolicy | bool | None = None,
        headers: Headers | None = None,
    ) -> Iterator[Any]:
        if not owned:
            copy = type(request)()
            copy.CopyFrom(request)
            request = copy
        while True:
            page = self.unary(spec, request, timeout=timeout, retry=retry, headers=headers)
            yield from getattr(page, spec.items_field)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token  # type: ignore[attr-defined]

    def stream(
        self,
        spec: MethodSpec,
        request: Message,
        *,
        owned: bool = True,
        timeout: float | None = None,
        retry: RetryPolicy | bool | None = None,
        headers: Headers | None = None,
    ) -> SyncStream[Any]:
        call = self._streams.get(spec.path)
        if call is None:
            call = self._streams[spec.path] = self.channel.unary_stream(
                spec.path,
                request_serializer=spec.request_type.SerializeToString,
                response_deserializer=spec.response_type.FromString,
            )
        if self.config.validate:
            validate_request(request, spec.path)
        return SyncStream(
            call(request, timeout=self._timeout(spec, timeout), metadata=self._md(headers)), spec
        )


class AsyncTransport(_Base):
    def __init__(self, channel: grpc.aio.Channel, config: ConnectConfig) -> None:
        super().__init__(config)
        self.channel = channel
        self._unary: dict[str, Any] = {}
        self._streams: dict[str, Any] = {}

    def _callable(self, spec: MethodSpec) -> Any:
        call = self._unary.get(spec.path)
        if call is None:
            call = self._unary[spec.path] = self.channel.unary_unary(
                spec.path,
                request_serializer=spec.request_type.SerializeToString,
                response_deserializer=spec.response_type.FromString,
            )
        return call

    async def unary(
        self,
        spec: MethodSpec,
        request: Message,
        *,
        owned: bool = True,
        timeout: float | None = None,
        retry: RetryPolicy | bool | None = None,
        headers: Headers | None = None,
    ) -> Any:
        if self.config.validate:
            validate_request(request, spec.path)
        request, policy = _prepare(spec, request, owned, retry, self.config.retry)
        metadata = self._md(headers)
        seconds = self._timeout(spec, timeout)
        call = self._callable(spec)
        if policy is None:
            try:
                return await call(request, timeout=seconds, metadata=metadata)
            except grpc.RpcError as error:
                raise from_grpc_error(error, spec.path) from None
        deadline = None if seconds is None else time.monotonic() + seconds
        attempt = 1
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                return await call(request, timeout=remaining, metadata=metadata)
            except grpc.RpcError as grpc_error:
                error = from_grpc_error(grpc_error, spec.path)
            delay = _next_delay(policy, error, attempt, deadline)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def paginate(
        self,
        spec: MethodSpec,
        request: Message,
        *,
        owned: bool = True,
        timeout: float | None = None,
        retry: RetryPolicy | bool | None = None,
        headers: Headers | None = None,
    ) -> AsyncIterator[Any]:
        if not owned:
            copy = type(request)()
            copy.CopyFrom(request)
            request = copy
        while True:
            page = await self.unary(spec, request, timeout=timeout, retry=retry, headers=headers)
            for item in getattr(page, spec.items_field):
                yield item
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token  # type: ignore[attr-defined]

    def stream(
        self,
        spec: MethodSpec,
        request: Message,
        *,
        owned: bool = True,
        timeout: float | None = None,
        retry: RetryPolicy | bool | None = None,
        headers: Headers | None = None,
    ) -> AsyncStream[Any]:
        call = self._streams.get(spec.path)
        if call is None:
            call = self._streams[spec.path] = self.channel.unary_stream(
                spec.path,
                request_serializer=spec.request_type.SerializeToString,
                response_deserializer=spec.response_type.FromString,
            )
        if self.config.validate:
            validate_request(request, spec.path)
        return AsyncStream(
            call(request, timeout=self._timeout(spec, timeout), metadata=self._md(headers)), spec
        )


def _next_delay(
    policy: RetryPolicy, error: RpcError, attempt: int, deadline: float | None
) -> float | None:
    """Seconds to wait before the next attempt, or None to give up with ``error``."""
    if isinstance(error, CancelledError) or not policy.should_retry(error, attempt):
        return None
    delay = policy.backoff(error, attempt)
    if deadline is not None and time.monotonic() + delay >= deadline:
        return None
    log.debug("retrying %s in %.3fs after %s (attempt %d)", error.method, delay, error, attempt)
    if policy.on_retry is not None:
        policy.on_retry(error, attempt, delay)
    return delay


class _EmptyStream:
    def __iter__(self) -> _EmptyStream:
        return self

    def __next__(self) -> Any:
        raise StopIteration

    def __aiter__(self) -> _EmptyStream:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration

    def cancel(self) -> None:
        pass

    def __enter__(self) -> _EmptyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    async def __aenter__(self) -> _EmptyStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


class NullTransport(_Base):
    """Null mode: every call is a logged no-op that returns an empty response."""

    def __init__(self, config: ConnectConfig, *, is_async: bool) -> None:
        super().__init__(config)
        self.channel = None
        self.is_async = is_async

    def _note(self, spec: MethodSpec) -> None:
        log.debug("null mode: %s not sent", spec.path)

    def unary(self, spec: MethodSpec, request: Message, **_: Any) -> Any:
        self._note(spec)
        if self.is_async:
            return _ready(spec.response_type())
        return spec.response_type()

    def paginate(self, spec: MethodSpec, request: Message, **_: Any) -> Any:
        self._note(spec)
        return _EmptyStream()

    def stream(self, spec: MethodSpec, request: Message, **_: Any) -> Any:
        self._note(spec)
        return _EmptyStream()


async def _ready(value: T) -> T:
    return value
