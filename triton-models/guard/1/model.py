"""Triton Python-backend model `guard`: flags unsafe text by its nearness to labelled exemplars.

Inputs:  TEXT [batch, 1] BYTES.
Outputs: FLAGGED [batch, 1] BOOL, SCORE [batch, 1] FP32 (cosine similarity to the nearest
         unsafe exemplar), CATEGORY [batch, 1] BYTES (that exemplar's label when flagged).
The texts and the exemplars are embedded by the `embed` model through a BLS call, so the guard
shares embed's instances (and GPU) instead of loading a model of its own.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.embedding_model = params.get("embedding_model") or "embed"
        self.threshold = float(params.get("threshold") or 0.5)
        path = params.get("exemplars") or "exemplars.json"
        if not os.path.isabs(path):
            path = os.path.join(args["model_repository"], args["model_version"], path)
        with open(path, encoding="utf-8") as f:
            exemplars = json.load(f)
        if not exemplars or not all({"label", "text"} <= set(e) for e in exemplars):
            raise pb_utils.TritonModelException(f"{path}: need a list of {{label, text}}")
        self.labels = np.array([e["label"] for e in exemplars], dtype=object)
        self.texts = [e["text"] for e in exemplars]
        self.unsafe = self.labels != "safe"
        # Embedded on first use: `embed` may still be loading while this model initialises.
        self.vectors: np.ndarray | None = None
        self.lock = threading.Lock()

    def _embed(self, texts: list[str]) -> np.ndarray:
        request = pb_utils.InferenceRequest(
            model_name=self.embedding_model,
            requested_output_names=["EMBEDDING"],
            inputs=[pb_utils.Tensor("TEXT", np.array(texts, dtype=object).reshape(-1, 1))],
        )
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(
                f"{self.embedding_model}: {response.error().message()}"
            )
        vectors = pb_utils.get_output_tensor_by_name(response, "EMBEDDING").as_numpy()
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def execute(self, requests: list) -> list:
        try:
            with self.lock:
                if self.vectors is None:
                    self.vectors = self._embed(self.texts)
            texts: list[str] = []
            sizes: list[int] = []
            for request in requests:
                values = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
                sizes.append(len(values))
                texts += [
                    v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
                ]
            similarity = self._embed(texts) @ self.vectors.T  # [texts, exemplars]
        except pb_utils.TritonModelException as exc:
            error = pb_utils.TritonError(str(exc))
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        unsafe = np.where(self.unsafe, similarity, -1.0)
        safe = np.where(self.unsafe, -1.0, similarity)
        nearest = unsafe.argmax(axis=1)
        score = unsafe.max(axis=1)
        flagged = (score >= self.threshold) & (score > safe.max(axis=1))
        category = np.where(flagged, self.labels[nearest], "").astype(object)
        responses = []
        start = 0
        for size in sizes:
            part = slice(start, start + size)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("FLAGGED", flagged[part].reshape(-1, 1)),
                        pb_utils.Tensor("SCORE", score[part].astype(np.float32).reshape(-1, 1)),
                        pb_utils.Tensor("CATEGORY", category[part].reshape(-1, 1)),
                    ]
                )
            )
            start += size
        return responses
