"""The server's one connection to Triton (tritonclient.grpc.aio), and its error mapping.

One InferenceServerClient (one HTTP/2 channel) per process, reused by every call: Triton
multiplexes the calls over it. Reconnect backoff is kept short so that calls succeed again
within about a second of Triton coming back, rather than after gRPC's default of up to two
minutes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferResult
from tritonclient.utils import InferenceServerException

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.errors import (
    ApiError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)

log = logging.getLogger(__name__)

MAX_MESSAGE = 2**31 - 1  # what tritonclient itself allows (tensors can be large)
CONFIG_TTL = 2.0  # seconds a model configuration is reused by the hot paths


class DeadlineExceeded(ApiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = ErrorReason.ERROR_REASON_INFERENCE_UNAVAILABLE


def inference_unavailable(url: str, detail: str = "") -> Unavailable:
    suffix = f" ({detail})" if detail else ""
    return Unavailable(
        f"the inference backend (Triton at {url}) cannot be reached{suffix}; retry with backoff",
        reason=ErrorReason.ERROR_REASON_INFERENCE_UNAVAILABLE,
        metadata={"triton_url": url},
        retry_after=1.0,
    )


def model_not_found(name: str) -> NotFound:
    return NotFound(
        f"model {name!r} not found in the Triton repository",
        metadata={"resource_type": "model", "resource_id": name},
    )


def model_not_ready(name: str, detail: str = "") -> FailedPrecondition:
    suffix = f": {detail}" if detail else ""
    return FailedPrecondition(
        f"model {name!r} is not ready{suffix}",
        reason=ErrorReason.ERROR_REASON_MODEL_NOT_READY,
        metadata={"model": name},
    )


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC code of a failed Triton call, whichever way tritonclient reported it."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code()
    if isinstance(exc, InferenceServerException):
        name = (exc.status() or "").removeprefix("StatusCode.")
        return getattr(grpc.StatusCode, name, None)
    return None


def message_of(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.details() or ""
    if isinstance(exc, InferenceServerException):
        return exc.message() or ""
    return str(exc)


class TritonClient:
    """Triton's gRPC API as the inference service uses it.

    `on_unreachable` is called when a call finds Triton unreachable, so the health monitor
    can re-check at once instead of at its next tick.
    """

    def __init__(self, url: str, timeout: float, on_unreachable: Callable[[], None] = lambda: None):
        self.url = url
        self.timeout = timeout
        self.on_unreachable = on_unreachable
        self.client = triton_aio.InferenceServerClient(
            url,
            channel_args=[
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        self._configs: dict[str, tuple[float, dict[str, Any]]] = {}

    async def close(self) -> None:
        await self.client.close()

    # -- errors ---------------------------------------------------------------------------------

    async def error(self, exc: BaseException, model: str = "") -> ApiError:
        """Map a failed Triton call to what the caller sees.

        Triton answers UNAVAILABLE both when it cannot be reached and when a model has no ready
        version; a liveness probe tells the two apart.
        """
        code = status_of(exc)
        detail = message_of(exc)
        if code == grpc.StatusCode.NOT_FOUND and model:
            # Triton says NOT_FOUND for models that are in its repository but not loaded too.
            try:
                index = await self.client.get_model_repository_index(
                    as_json=True, client_timeout=self.timeout
                )
            except (InferenceServerException, grpc.aio.AioRpcError):
                return model_not_found(model)
            entries = [e for e in index.get("models", []) if e.get("name") == model]
            if not entries:
                return model_not_found(model)
            reasons = [e.get("reason", "") for e in entries if e.get("reason")]
            return model_not_ready(model, reasons[0] if reasons else "it is not loaded")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, None):
            if not await self.live():
                self.on_unreachable()
                return inference_unavailable(self.url, detail)
            if model and code == grpc.StatusCode.UNAVAILABLE:
                return model_not_ready(model, detail)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(
                f"the model {model!r} did not answer in time: {detail}",
                reason=ErrorReason.ERROR_REASON_INFERENCE_UNAVAILABLE,
                metadata={"model": model},
            )
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(f"the model {model!r} refused the request: {detail}")
        log.warning("triton call failed", extra={"model": model, "code": str(code)})
        return Internal(f"the inference backend failed: {detail}")

    # -- server and repository ------------------------------------------------------------------

    async def live(self, probe_seconds: float = 2.0) -> bool:
        try:
            return bool(await self.client.is_server_live(client_timeout=probe_seconds))
        except (TimeoutError, InferenceServerException, grpc.aio.AioRpcError):
            return False

    async def repository_index(self) -> list[dict[str, Any]]:
        try:
            index = await self.client.get_model_repository_index(
                as_json=True, client_timeout=self.timeout
            )
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            raise await self.error(exc) from None
        return list(index.get("models", []))

    async def model_config(self, name: str, *, fresh: bool = False) -> dict[str, Any]:
        """The loaded model's configuration (Triton's ModelConfig as JSON), cached briefly."""
        now = time.monotonic()
        cached = self._configs.get(name)
        if cached is not None and not fresh and now - cached[0] < CONFIG_TTL:
            return cached[1]
        try:
            reply = await self.client.get_model_config(
                name, as_json=True, client_timeout=self.timeout
            )
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            self._configs.pop(name, None)
            raise await self.error(exc, name) from None
        config = reply.get("config", {})
        self._configs[name] = (now, config)
        return config

    def forget(self, name: str) -> None:
        self._configs.pop(name, None)

    # -- inference ------------------------------------------------------------------------------

    async def infer(
        self,
        model: str,
        inputs: list[InferInput],
        *,
        request_id: str = "",
        time_limit: float | None = None,
    ) -> InferResult:
        try:
            return await self.client.infer(
                model,
                inputs,
                request_id=request_id,
                client_timeout=time_limit or self.timeout,
            )
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            self.forget(model)
            raise await self.error(exc, model) from None

    def stream(
        self,
        model: str,
        inputs: list[InferInput],
        *,
        request_id: str = "",
        time_limit: float | None = None,
    ) -> Any:
        """One request on Triton's bidirectional stream; an async iterator of (result, error)
        with a `cancel()` that cancels the gRPC call, and so the Triton request."""

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": inputs, "request_id": request_id}

        return self.client.stream_infer(one_request(), stream_timeout=time_limit)

    async def load_model(
        self, name: str, config: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        """Raises InferenceServerException with Triton's own message on failure."""
        await self.client.load_model(name, config=config, files=files, client_timeout=None)
        self.forget(name)


def text_input(name: str, values: list[str] | list[bytes], batched: bool = True) -> InferInput:
    array = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)
    if batched:
        array = array.reshape(-1, 1)
    tensor = InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def scalar_input(name: str, value: float | int, datatype: str) -> InferInput:
    dtype = {"INT32": np.int32, "INT64": np.int64, "FP32": np.float32}[datatype]
    tensor = InferInput(name, [1], datatype)
    tensor.set_data_from_numpy(np.array([value], dtype=dtype))
    return tensor
