"""Triton Python-backend model `generate`: streamed text generation, one request, many responses.

Decoupled: every response but the last carries a TEXT delta (with INPUT_TOKENS and the
OUTPUT_TOKENS so far); the last carries FINISH_REASON, STOP_SEQUENCE, INPUT_TOKENS,
OUTPUT_TOKENS and ERROR, with the FINAL flag. Each request runs in
a worker thread of its own, token by token with the KV cache, and checks between tokens whether
Triton cancelled it (the client went away), so a cancel stops the work within one token.

Metrics (Triton's metrics endpoint, custom metrics of the Python backend):
agentplane_generate_active{model,version} requests being generated now;
agentplane_generate_finished_total{model,version,reason} finished requests by finish reason;
agentplane_generate_output_tokens_total{model,version} tokens generated.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

# Weights come from a local directory; never reach for a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

FINISH_REASONS = ("stop", "length", "cancelled", "error", "invalid_argument")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class InvalidRequest(Exception):
    """The request cannot be served as asked (answered with FINISH_REASON invalid_argument)."""


def resolve_model_dir(value: str, args: dict) -> str:
    if os.path.isabs(value):
        return value
    return os.path.join(args["model_repository"], args["model_version"], value)


def optional_input(request, name: str):  # type: ignore[no-untyped-def]
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def as_text(value) -> str:  # type: ignore[no-untyped-def]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Detokenizer:
    """Turns the growing list of generated ids into text deltas of whole characters.

    Decodes a short window (the previous delta's tokens plus the new ones) rather than the whole
    text each step, so a long generation costs O(tokens), and holds a delta back while it ends
    in an incomplete UTF-8 sequence (decoded as U+FFFD).
    """

    def __init__(self, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        prefix = decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        full = decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return full[len(prefix) :]
        return ""


class StopMatcher:
    """Finds stop sequences in the streamed text and holds back text that may start one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, delta: str) -> tuple[str, str | None]:
        """Returns (text safe to send now, the stop sequence matched or None)."""
        self.pending += delta
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, None
        found = [(self.pending.find(s), s) for s in self.stops]
        found = [(i, s) for i, s in found if i >= 0]
        if found:
            index, stop = min(found)
            out, self.pending = self.pending[:index], ""
            return out, stop
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, None

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("generate must be a decoupled model")
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if args["model_instance_kind"] == "GPU":
            self.device = f"cuda:{args['model_instance_device_id']}"
        else:
            self.device = "cpu"
        model_dir = resolve_model_dir(params.get("model_dir") or "tiny-lm", args)
        if not os.path.isdir(model_dir):
            raise pb_utils.TritonModelException(
                f"model_dir {model_dir} does not exist (for the test model, run `make triton-env`)"
            )
        dtype_name = params.get("dtype", "auto") or "auto"
        if dtype_name == "auto":
            dtype = "auto" if self.device != "cpu" else torch.float32
        elif dtype_name in DTYPES:
            dtype = DTYPES[dtype_name]
        else:
            raise pb_utils.TritonModelException(f"unknown dtype parameter {dtype_name!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, dtype=dtype
        )
        self.model.to(self.device).eval()
        model_config = self.model.config
        self.context = int(
            getattr(model_config, "max_position_embeddings", 0)
            or getattr(model_config, "n_positions", 0)
            or self.tokenizer.model_max_length
        )
        eos = model_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.default_max_tokens = int(params.get("default_max_tokens") or 256)
        workers = int(params.get("max_concurrent_requests") or 4)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate")
        self.lock = threading.Lock()
        self.active = 0

        labels = {"model": args["model_name"], "version": args["model_version"]}
        # The families must outlive their metrics, so they are kept on the model too.
        self.families = [
            pb_utils.MetricFamily(
                name="agentplane_generate_active",
                description="Requests the generate model is generating now",
                kind=pb_utils.MetricFamily.GAUGE,
            ),
            pb_utils.MetricFamily(
                name="agentplane_generate_finished_total",
                description="Requests the generate model finished, by finish reason",
                kind=pb_utils.MetricFamily.COUNTER,
            ),
            pb_utils.MetricFamily(
                name="agentplane_generate_output_tokens_total",
                description="Tokens the generate model generated",
                kind=pb_utils.MetricFamily.COUNTER,
            ),
        ]
        active, finished, tokens = self.families
        self.active_gauge = active.Metric(labels=labels)
        self.finished = {r: finished.Metric(labels={**labels, "reason": r}) for r in FINISH_REASONS}
        self.tokens_total = tokens.Metric(labels=labels)

    def execute(self, requests: list) -> None:
        for request in requests:
            with self.lock:
                self.active += 1
                self.active_gauge.set(self.active)
            self.pool.submit(self._serve, request)
        return None

    def finalize(self) -> None:
        self.pool.shutdown(wait=True)

    # -- one request ----------------------------------------------------------------------------

    def _serve(self, request) -> None:  # type: ignore[no-untyped-def]
        sender = request.get_response_sender()
        state = {"input": 0, "output": 0, "stop": "", "error": ""}
        reason = "error"
        try:
            reason = self._generate(request, sender, state)
        except InvalidRequest as exc:
            reason, state["error"] = "invalid_argument", str(exc)
        except Exception as exc:  # the stream must still end with a final response
            reason, state["error"] = "error", f"{type(exc).__name__}: {exc}"
        finally:
            self.finished[reason].increment(1)
            self.tokens_total.increment(state["output"])
            final = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("FINISH_REASON", np.array([reason], dtype=object)),
                    pb_utils.Tensor("STOP_SEQUENCE", np.array([state["stop"]], dtype=object)),
                    pb_utils.Tensor("INPUT_TOKENS", np.array([state["input"]], dtype=np.int64)),
                    pb_utils.Tensor("OUTPUT_TOKENS", np.array([state["output"]], dtype=np.int64)),
                    pb_utils.Tensor("ERROR", np.array([state["error"]], dtype=object)),
                ]
            )
            try:
                sender.send(final, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception:  # cancelled: the final flag is still consumed to free the request
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            with self.lock:
                self.active -= 1
                self.active_gauge.set(self.active)

    def _prompt_ids(self, request) -> list[int]:  # type: ignore[no-untyped-def]
        prompt = optional_input(request, "PROMPT")
        messages = optional_input(request, "MESSAGES")
        if (prompt is None) == (messages is None):
            raise InvalidRequest("exactly one of PROMPT and MESSAGES must be given")
        if prompt is not None:
            text = as_text(prompt[0])
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        try:
            conversation = json.loads(as_text(messages[0]))
        except ValueError as exc:
            raise InvalidRequest(f"MESSAGES is not JSON: {exc}") from None
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=False
            )
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        # No chat template (e.g. the test model): a plain layout the model can continue.
        text = "".join(f"{m['role']}: {m['content']}\n" for m in conversation) + "assistant:"
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _generate(self, request, sender, state: dict) -> str:  # type: ignore[no-untyped-def]
        ids = self._prompt_ids(request)
        state["input"] = len(ids)
        if not ids:
            raise InvalidRequest("the prompt has no tokens")
        if len(ids) >= self.context:
            raise InvalidRequest(
                f"the prompt has {len(ids)} tokens; the model's context window is "
                f"{self.context} tokens, prompt and output together"
            )
        max_tokens = optional_input(request, "MAX_TOKENS")
        max_tokens = int(max_tokens[0]) if max_tokens is not None else self.default_max_tokens
        if max_tokens < 1:
            raise InvalidRequest("MAX_TOKENS must be at least 1")
        temperature = optional_input(request, "TEMPERATURE")
        temperature = float(temperature[0]) if temperature is not None else 1.0
        top_p = optional_input(request, "TOP_P")
        top_p = float(top_p[0]) if top_p is not None else 1.0
        seed = optional_input(request, "SEED")
        stops = optional_input(request, "STOP")
        matcher = StopMatcher([as_text(s) for s in stops] if stops is not None else [])
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=self.device)
            if seed is not None:
                generator.manual_seed(int(seed[0]))
            else:
                generator.seed()
        detokenizer = Detokenizer(self.tokenizer)

        def send(text: str) -> None:
            # Token counts so far ride along, so a cancelled stream can still be metered.
            if text:
                sender.send(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("TEXT", np.array([text], dtype=object)),
                            pb_utils.Tensor("INPUT_TOKENS", np.array([state["input"]], np.int64)),
                            pb_utils.Tensor("OUTPUT_TOKENS", np.array([state["output"]], np.int64)),
                        ]
                    )
                )

        input_ids = torch.tensor([ids], device=self.device)
        past = None
        with torch.inference_mode():
            while True:
                if sender.is_cancelled():
                    return "cancelled"
                out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = self._sample(out.logits[0, -1, :], temperature, top_p, generator)
                if token in self.eos_ids:
                    send(matcher.flush())
                    return "stop"
                state["output"] += 1
                text, stop = matcher.feed(detokenizer.add(token))
                send(text)
                if stop is not None:
                    state["stop"] = stop
                    return "stop"
                if (
                    state["output"] >= max_tokens
                    or state["input"] + state["output"] >= self.context
                ):
                    send(matcher.flush())
                    return "length"
                input_ids = torch.tensor([[token]], device=self.device)

    @staticmethod
    def _sample(logits, temperature: float, top_p: float, generator) -> int:  # type: ignore[no-untyped-def]
        if temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
            sorted_probs = sorted_probs * keep
            choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
            return int(order[choice])
        return int(torch.multinomial(probs, 1, generator=generator))
