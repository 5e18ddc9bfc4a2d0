"""InferenceService behaviour: model lookup, quotas, Triton calls, streaming and metering.

Models are shared by every project; what belongs to a project is the usage, metered to the
calling project, agent and session (meter.py) and checked against the project's
inference_tokens_per_day quota before a call runs.

The model conventions the server relies on (triton-models/README.md):
- the model configuration parameter "agentplane_task" ("embed" or "generate") says which RPC
  serves a model;
- embed models take TEXT [batch, 1] BYTES and give EMBEDDING [batch, D] FP32, and optionally
  TOKENS [batch, 1] INT64 for metering;
- generate models are decoupled; they take PROMPT or MESSAGES (JSON) and the sampling inputs,
  stream TEXT deltas (with OUTPUT_TOKENS so far) and end with one response holding
  FINISH_REASON, STOP_SEQUENCE, INPUT_TOKENS, OUTPUT_TOKENS and ERROR.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import InferResult
from tritonclient.utils import InferenceServerException

from agentplane.common.v1 import usage_pb2
from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane.inference.v1 import inference_service_pb2 as pb
from agentplane.inference.v1 import model_pb2
from agentplane_server.authz import acting_agent
from agentplane_server.context import Principal, request_id_var
from agentplane_server.errors import ApiError, FieldViolation, Internal, InvalidArgument
from agentplane_server.inference.meter import UsageMeter
from agentplane_server.inference.models import ServingModel, build_model
from agentplane_server.inference.triton import (
    TritonClient,
    model_not_found,
    scalar_input,
    text_input,
)
from agentplane_server.pagination import PageTokens

log = logging.getLogger(__name__)

MODELS_PAGE = (100, 1000)  # default, maximum
DEFAULT_EMBED_MODEL = "embed"
DEFAULT_GENERATE_MODEL = "generate"
DEFAULT_MAX_TOKENS = 256
ROLES = {
    pb.CHAT_ROLE_SYSTEM: "system",
    pb.CHAT_ROLE_USER: "user",
    pb.CHAT_ROLE_ASSISTANT: "assistant",
    pb.CHAT_ROLE_TOOL: "tool",
}
FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "cancelled": pb.FINISH_REASON_CANCELLED,
    "error": pb.FINISH_REASON_ERROR,
}
TASK_NAMES = {
    model_pb2.MODEL_TASK_EMBED: "an embedding",
    model_pb2.MODEL_TASK_GENERATE: "a generation",
}


class _StreamFailed(Exception):
    """Triton reported an error inside the response stream."""

    def __init__(self, error: InferenceServerException) -> None:
        super().__init__(error.message())
        self.error = error


@dataclass(slots=True)
class _Progress:
    input_tokens: int = 0
    output_tokens: int = 0
    model_version: str = ""
    sent: bool = False
    finish_reason: int = pb.FINISH_REASON_UNSPECIFIED


def _first(result: InferResult, name: str) -> Any:
    array = result.as_numpy(name)
    return None if array is None or array.size == 0 else array.reshape(-1)[0]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


class InferenceLogic:
    def __init__(
        self,
        triton: TritonClient,
        meter: UsageMeter,
        page_tokens: PageTokens,
        shutdown: asyncio.Event,
    ) -> None:
        self.triton = triton
        self.meter = meter
        self.page_tokens = page_tokens
        self.shutdown = shutdown

    # -- models -----------------------------------------------------------------------------------

    async def _serving(self, name: str, task: int, field: str = "model") -> ServingModel:
        """The loaded model `name`, which must serve `task`."""
        model = ServingModel.from_config(name, await self.triton.model_config(name))
        if model.task != task:
            raise InvalidArgument(
                f"model {name!r} is not {TASK_NAMES[task]} model",
                field_violations=[
                    FieldViolation(field, f"model {name!r} is not {TASK_NAMES[task]} model")
                ],
            )
        return model

    async def _models(self) -> list[model_pb2.Model]:
        entries: dict[str, list[dict[str, Any]]] = {}
        for entry in await self.triton.repository_index():
            entries.setdefault(entry["name"], []).append(entry)
        names = sorted(entries)
        loaded = [n for n in names if any(e.get("state") == "READY" for e in entries[n])]

        async def config(name: str) -> dict[str, Any] | None:
            try:
                return await self.triton.model_config(name)
            except ApiError as error:
                if error.code == grpc.StatusCode.UNAVAILABLE and error.reason == (
                    ErrorReason.ERROR_REASON_INFERENCE_UNAVAILABLE
                ):
                    raise
                return None  # unloaded in between: listed without its configuration

        configs = dict(zip(loaded, await asyncio.gather(*(config(n) for n in loaded)), strict=True))
        return [build_model(n, entries[n], configs.get(n)) for n in names]

    async def list_models(
        self, who: Principal, request: pb.ListModelsRequest
    ) -> pb.ListModelsResponse:
        filters = {"task": request.task, "state": request.state}
        page = self.page_tokens.page("ListModels", request, filters, MODELS_PAGE)
        after = str(page.position[0]) if page.position else ""
        matching = [
            m
            for m in await self._models()
            if m.name > after
            and (not request.task or m.task == request.task)
            and (not request.state or m.state == request.state)
        ]
        models, token = page.finish(matching, lambda m: [m.name])
        return pb.ListModelsResponse(models=models, next_page_token=token)

    async def get_model(self, who: Principal, name: str) -> model_pb2.Model:
        for model in await self._models():
            if model.name == name:
                return model
        raise model_not_found(name)

    # -- Embed ------------------------------------------------------------------------------------

    async def embed(
        self, who: Principal, request: pb.EmbedRequest, time_limit: float | None
    ) -> pb.EmbedResponse:
        agent_id = acting_agent(who, request.agent_id)
        name = request.model or DEFAULT_EMBED_MODEL
        model = await self._serving(name, model_pb2.MODEL_TASK_EMBED)
        await self.meter.check_quota(who.project_id)
        request_id = request.request_id or request_id_var.get()
        texts = list(request.texts)
        size = model.max_batch_size or len(texts)
        # Larger requests than the model batches go to Triton as several requests at once; its
        # dynamic batcher may run them together again.
        results = await asyncio.gather(
            *(
                self.triton.infer(
                    name,
                    [text_input("TEXT", texts[i : i + size])],
                    request_id=request_id,
                    time_limit=time_limit,
                )
                for i in range(0, len(texts), size)
            )
        )
        vectors = np.concatenate([r.as_numpy("EMBEDDING") for r in results]).astype(
            np.float32, copy=False
        )
        if vectors.shape[0] != len(texts):
            raise Internal(
                f"model {name!r} returned {vectors.shape[0]} embeddings for {len(texts)} texts"
            )
        if request.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        tokens = 0
        for result in results:
            counts = result.as_numpy("TOKENS")
            if counts is not None:
                tokens += int(counts.sum())
        version = results[0].get_response().model_version
        response = pb.EmbedResponse(
            embeddings=[pb.Embedding(values=row) for row in vectors.tolist()],
            dimension=int(vectors.shape[1]),
            model=name,
            model_version=version,
            usage=usage_pb2.Usage(input_tokens=tokens),
        )
        self.meter.record(
            project_id=who.project_id,
            agent_id=agent_id,
            session_id=request.session_id,
            method="Embed",
            model=name,
            model_version=version,
            request_id=request_id,
            input_tokens=tokens,
            output_tokens=0,
        )
        return response

    # -- Generate ---------------------------------------------------------------------------------

    def _generate_inputs(self, request: pb.GenerateRequest) -> list[Any]:
        if request.prompt:
            inputs = [text_input("PROMPT", [request.prompt], batched=False)]
        else:
            conversation = [{"role": ROLES[m.role], "content": m.content} for m in request.messages]
            inputs = [text_input("MESSAGES", [json.dumps(conversation)], batched=False)]
        max_tokens = request.max_tokens if request.HasField("max_tokens") else DEFAULT_MAX_TOKENS
        inputs.append(scalar_input("MAX_TOKENS", max_tokens, "INT32"))
        if request.HasField("temperature"):
            inputs.append(scalar_input("TEMPERATURE", request.temperature, "FP32"))
        if request.HasField("top_p"):
            inputs.append(scalar_input("TOP_P", request.top_p, "FP32"))
        if request.HasField("seed"):
            inputs.append(scalar_input("SEED", request.seed, "INT64"))
        if request.stop_sequences:
            inputs.append(text_input("STOP", list(request.stop_sequences), batched=False))
        return inputs

    async def generate(
        self, who: Principal, request: pb.GenerateRequest, time_limit: float | None
    ) -> AsyncIterator[pb.GenerateResponse]:
        agent_id = acting_agent(who, request.agent_id)
        name = request.model or DEFAULT_GENERATE_MODEL
        await self._serving(name, model_pb2.MODEL_TASK_GENERATE)
        await self.meter.check_quota(who.project_id)
        request_id = request.request_id or request_id_var.get()
        stream = self.triton.stream(
            name, self._generate_inputs(request), request_id=request_id, time_limit=time_limit
        )
        # A server shutdown cancels the Triton request; the stream then ends with CANCELLED.
        on_shutdown = asyncio.ensure_future(self.shutdown.wait())
        on_shutdown.add_done_callback(lambda _: stream.cancel())
        progress = _Progress()
        finish: pb.GenerateFinish | None = None
        try:
            async for result, error in stream:
                if error is not None:
                    raise _StreamFailed(error)
                response = result.get_response()
                progress.model_version = response.model_version
                outputs = {o.name for o in response.outputs}
                if "OUTPUT_TOKENS" in outputs:
                    progress.output_tokens = int(_first(result, "OUTPUT_TOKENS"))
                if "INPUT_TOKENS" in outputs:
                    progress.input_tokens = int(_first(result, "INPUT_TOKENS"))
                if "FINISH_REASON" in outputs:
                    finish = self._finish(name, request, result, progress)
                    break
                text = _text(_first(result, "TEXT")) if "TEXT" in outputs else ""
                if text:
                    progress.sent = True
                    yield pb.GenerateResponse(delta=pb.GenerateDelta(text=text))
            if finish is None:  # the stream ended without the final response
                raise _StreamFailed(InferenceServerException("the model ended without finishing"))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.shutdown.is_set() and task is not None and not task.cancelling():
                # Our own cancel of the Triton call at shutdown, not the client's.
                finish = await self._failed(name, asyncio.CancelledError(), progress)
            else:
                # The client cancelled, or its deadline passed: stop the model now.
                stream.cancel()
                progress.finish_reason = pb.FINISH_REASON_CANCELLED
                raise
        except (grpc.aio.AioRpcError, InferenceServerException, _StreamFailed) as exc:
            stream.cancel()
            finish = await self._failed(name, exc, progress)
        finally:
            on_shutdown.cancel()
            # Metered when the model generated: not for requests refused before it ran.
            ran = finish is not None or progress.sent or progress.finish_reason
            if ran:
                self._record_generate(who, agent_id, request, name, request_id, progress, finish)
        yield pb.GenerateResponse(finish=finish)

    def _record_generate(
        self,
        who: Principal,
        agent_id: str,
        request: pb.GenerateRequest,
        name: str,
        request_id: str,
        progress: _Progress,
        finish: pb.GenerateFinish | None,
    ) -> None:
        self.meter.record(
            project_id=who.project_id,
            agent_id=agent_id,
            session_id=request.session_id,
            method="Generate",
            model=name,
            model_version=progress.model_version,
            request_id=request_id,
            input_tokens=progress.input_tokens,
            output_tokens=progress.output_tokens,
            finish_reason=finish.finish_reason if finish else progress.finish_reason,
        )

    def _finish(
        self, name: str, request: pb.GenerateRequest, result: InferResult, progress: _Progress
    ) -> pb.GenerateFinish:
        reason = _text(_first(result, "FINISH_REASON"))
        message = _text(_first(result, "ERROR"))
        if reason == "invalid_argument":
            field = "prompt" if request.prompt else "messages"
            raise InvalidArgument(
                f"invalid {field}: {message}", field_violations=[FieldViolation(field, message)]
            )
        if reason not in FINISH or (reason == "error" and not progress.sent):
            raise Internal(f"model {name!r} failed: {message or reason}")
        finish = pb.GenerateFinish(
            finish_reason=FINISH[reason],
            usage=usage_pb2.Usage(
                input_tokens=progress.input_tokens, output_tokens=progress.output_tokens
            ),
            model=name,
            model_version=progress.model_version,
            stop_sequence=_text(_first(result, "STOP_SEQUENCE")),
        )
        if reason == "error":
            finish.error_reason = ErrorReason.ERROR_REASON_INTERNAL
            finish.error_message = message
        return finish

    async def _failed(
        self, name: str, exc: BaseException, progress: _Progress
    ) -> pb.GenerateFinish:
        """The stream broke: an error status before any text, else a final ERROR message (or
        CANCELLED, when the server is shutting down)."""
        usage = usage_pb2.Usage(
            input_tokens=progress.input_tokens, output_tokens=progress.output_tokens
        )
        finish = pb.GenerateFinish(usage=usage, model=name, model_version=progress.model_version)
        if self.shutdown.is_set():
            finish.finish_reason = pb.FINISH_REASON_CANCELLED
            return finish
        cause = exc.error if isinstance(exc, _StreamFailed) else exc
        error = await self.triton.error(cause, name)
        if not progress.sent:
            raise error
        finish.finish_reason = pb.FINISH_REASON_ERROR
        finish.error_reason = error.reason
        finish.error_message = error.message
        return finish
