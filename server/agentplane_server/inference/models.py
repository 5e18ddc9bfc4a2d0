"""What the server knows of Triton's models: the contract's Model from Triton's repository index
and model configuration, and the few facts the hot paths need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentplane.inference.v1 import model_pb2

TASKS = {"embed": model_pb2.MODEL_TASK_EMBED, "generate": model_pb2.MODEL_TASK_GENERATE}
STATES = {
    "READY": model_pb2.MODEL_STATE_READY,
    "LOADING": model_pb2.MODEL_STATE_LOADING,
    "UNLOADING": model_pb2.MODEL_STATE_UNLOADING,
    "UNAVAILABLE": model_pb2.MODEL_STATE_UNAVAILABLE,
}
KINDS = {
    "KIND_CPU": model_pb2.INSTANCE_KIND_CPU,
    "KIND_GPU": model_pb2.INSTANCE_KIND_GPU,
    "KIND_MODEL": model_pb2.INSTANCE_KIND_MODEL,
}


def parameter(config: dict[str, Any], key: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", ""))


def task_of(config: dict[str, Any]) -> int:
    return TASKS.get(parameter(config, "agentplane_task"), model_pb2.MODEL_TASK_UNSPECIFIED)


def data_type(name: str) -> str:
    """Triton's config type to the API's name: TYPE_STRING is BYTES on the wire."""
    name = name.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _tensor(spec: dict[str, Any]) -> model_pb2.TensorSpec:
    return model_pb2.TensorSpec(
        name=spec.get("name", ""),
        data_type=data_type(spec.get("data_type", "")),
        dims=[int(d) for d in spec.get("dims", [])],
        optional=bool(spec.get("optional", False)),
    )


def embedding_dimension(config: dict[str, Any]) -> int:
    if task_of(config) != model_pb2.MODEL_TASK_EMBED:
        return 0
    for output in config.get("output", []):
        if output.get("name") == "EMBEDDING":
            dims = [int(d) for d in output.get("dims", [])]
            return dims[-1] if dims and dims[-1] > 0 else 0
    return 0


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


def build_model(
    name: str, entries: list[dict[str, Any]], config: dict[str, Any] | None
) -> model_pb2.Model:
    """One Model from its repository index entries (one per version) and, when it is loaded,
    its configuration."""
    versions = sorted(
        (e for e in entries if e.get("version")),
        key=lambda e: _version_key(str(e["version"])),
        reverse=True,
    )
    model = model_pb2.Model(
        name=name,
        versions=[
            model_pb2.ModelVersion(
                version=str(e["version"]),
                state=STATES.get(e.get("state", ""), model_pb2.MODEL_STATE_UNAVAILABLE),
                state_reason="" if e.get("state") == "READY" else e.get("reason", ""),
            )
            for e in versions
        ],
    )
    # The version requests use: the newest READY one, else the newest one.
    current = next((v for v in model.versions if v.state == model_pb2.MODEL_STATE_READY), None)
    if current is None and model.versions:
        current = model.versions[0]
    if current is not None:
        model.state, model.state_reason = current.state, current.state_reason
    else:  # in the repository, never loaded
        model.state = model_pb2.MODEL_STATE_UNAVAILABLE
        reasons = [e.get("reason", "") for e in entries if e.get("reason")]
        model.state_reason = reasons[0] if reasons else "not loaded"
    if config:
        model.task = task_of(config)
        model.platform = config.get("platform", "")
        model.backend = config.get("backend", "")
        model.max_batch_size = int(config.get("max_batch_size", 0))
        model.inputs.extend(_tensor(t) for t in config.get("input", []))
        model.outputs.extend(_tensor(t) for t in config.get("output", []))
        model.instance_groups.extend(
            model_pb2.ModelInstanceGroup(
                kind=KINDS.get(g.get("kind", ""), model_pb2.INSTANCE_KIND_UNSPECIFIED),
                count=int(g.get("count", 1)),
                gpus=[int(x) for x in g.get("gpus", [])],
            )
            for g in config.get("instance_group", [])
        )
        model.embedding_dimension = embedding_dimension(config)
        model.decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    return model


@dataclass(frozen=True, slots=True)
class ServingModel:
    """What Embed and Generate need to know of a loaded model."""

    name: str
    task: int
    max_batch_size: int
    dimension: int

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> ServingModel:
        return cls(
            name=name,
            task=task_of(config),
            max_batch_size=int(config.get("max_batch_size", 0)),
            dimension=embedding_dimension(config),
        )
