"""`agentplane models validate|deploy|status`: check a Triton model repository with Triton's own
model-config proto, deploy models through Triton's explicit model control, and show their state.

validate parses every config.pbtxt (and configs/*.pbtxt, Triton's named configurations) with
tritonclient's model_config_pb2, then checks what Triton would otherwise only report at load
time: names, backends and platforms, version folders and their files, inputs and outputs,
batching, instance groups, and the conventions of Agentplane's tasks. Every problem is reported
with its file (and line and column for syntax errors); none stops the check.

deploy sends each model's configuration and the files of its version folders over Triton's API
(RepositoryModelLoad with a config override and "file:" parameters), so the Triton host needs no
copy of the repository. Triton loads the new model beside the one serving and switches only
when the new one is ready: when the load fails, the previous version keeps serving, and deploy
says so and exits non-zero.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

CONFIG = "config.pbtxt"
BACKENDS = {
    "python",
    "onnxruntime",
    "tensorrt",
    "pytorch",
    "tensorflow",
    "openvino",
    "fil",
    "dali",
    "tensorrtllm",
    "vllm",
    "identity",
    "repeat",
    "square",
}
# Platform -> the model file Triton looks for in a version folder.
PLATFORMS = {
    "tensorrt_plan": "model.plan",
    "onnxruntime_onnx": "model.onnx",
    "pytorch_libtorch": "model.pt",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow_graphdef": "model.graphdef",
    "ensemble": None,
}
BACKEND_FILES = {
    "python": "model.py",
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "pytorch": "model.pt",
    "openvino": "model.xml",
}
TASK_TENSORS = {
    # task: (required inputs, required outputs) with their data types
    "embed": ({"TEXT": mc.TYPE_STRING}, {"EMBEDDING": mc.TYPE_FP32}),
    "generate": ({}, {"TEXT": mc.TYPE_STRING, "FINISH_REASON": mc.TYPE_STRING}),
}
SKIP = {"__pycache__"}


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        where = str(self.path)
        if self.line:
            where += f":{self.line}:{self.column}" if self.column else f":{self.line}"
        return f"{where}: {self.message}"


@dataclass
class LocalModel:
    name: str
    directory: Path
    config: mc.ModelConfig
    versions: list[str] = field(default_factory=list)

    def files(self) -> dict[str, bytes]:
        """The version folders' files, as Triton's load API takes them ("file:1/model.py")."""
        found: dict[str, bytes] = {}
        for version in self.versions:
            for path in sorted((self.directory / version).rglob("*")):
                relative = path.relative_to(self.directory)
                if path.is_file() and not SKIP & set(relative.parts):
                    found[f"file:{relative.as_posix()}"] = path.read_bytes()
        return found

    def config_json(self) -> str:
        return json_format.MessageToJson(self.config, preserving_proto_field_name=True)


def _parse(path: Path, problems: list[Problem]) -> mc.ModelConfig | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(path, f"cannot be read: {exc}"))
        return None
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line, column = exc.GetLine() or 0, exc.GetColumn() or 0
        message = str(exc)
        prefix = f"{line}:{column} : "
        message = message[len(prefix) :] if message.startswith(prefix) else message
        problems.append(
            Problem(path, f"not a valid Triton model configuration: {message}", line, column)
        )
        return None
    return config


def _check_tensors(
    path: Path, kind: str, tensors: list, batching: bool, problems: list[Problem]
) -> None:
    seen: set[str] = set()
    for index, tensor in enumerate(tensors):
        label = f"{kind} {tensor.name!r}" if tensor.name else f"{kind} #{index + 1}"
        if not tensor.name:
            problems.append(Problem(path, f"{label} has no name"))
        elif tensor.name in seen:
            problems.append(Problem(path, f"{label} is declared twice"))
        seen.add(tensor.name)
        if tensor.data_type == mc.TYPE_INVALID:
            problems.append(Problem(path, f"{label} has no data_type"))
        if not tensor.dims and not tensor.HasField("reshape") and not batching:
            problems.append(Problem(path, f"{label} has no dims"))
        bad = [d for d in tensor.dims if d == 0 or d < -1]
        if bad:
            problems.append(Problem(path, f"{label} has invalid dims {list(tensor.dims)}"))


def check_config(path: Path, config: mc.ModelConfig, directory: Path) -> list[Problem]:
    """What Triton would refuse, or Agentplane could not serve, in one parsed configuration."""
    problems: list[Problem] = []
    if config.name and config.name != directory.name:
        problems.append(
            Problem(path, f"name {config.name!r} differs from the folder name {directory.name!r}")
        )
    if not config.backend and not config.platform:
        problems.append(Problem(path, "neither backend nor platform is set"))
    if config.backend and config.backend not in BACKENDS:
        problems.append(
            Problem(
                path, f"unknown backend {config.backend!r} (known: {', '.join(sorted(BACKENDS))})"
            )
        )
    if config.platform and config.platform not in PLATFORMS:
        problems.append(Problem(path, f"unknown platform {config.platform!r}"))
    if config.max_batch_size < 0:
        problems.append(Problem(path, "max_batch_size must not be negative"))
    batching = config.max_batch_size > 0
    if config.HasField("dynamic_batching") and not batching:
        problems.append(Problem(path, "dynamic_batching needs max_batch_size > 0"))
    if config.platform != "ensemble":
        if not config.input:
            problems.append(Problem(path, "no inputs are declared"))
        if not config.output:
            problems.append(Problem(path, "no outputs are declared"))
    _check_tensors(path, "input", list(config.input), False, problems)
    _check_tensors(path, "output", list(config.output), False, problems)
    for group in config.instance_group:
        if group.count < 0:
            problems.append(Problem(path, f"instance_group count {group.count} is negative"))
        if group.kind == mc.ModelInstanceGroup.KIND_CPU and group.gpus:
            problems.append(Problem(path, "a KIND_CPU instance_group lists gpus"))
    task = ""
    if "agentplane_task" in config.parameters:
        task = config.parameters["agentplane_task"].string_value
        if not task:
            problems.append(Problem(path, "parameter 'agentplane_task' is empty"))
    if task and task not in TASK_TENSORS:
        problems.append(
            Problem(
                path, f"parameter agentplane_task {task!r} is not one of {sorted(TASK_TENSORS)}"
            )
        )
    elif task:
        inputs = {t.name: t.data_type for t in config.input}
        outputs = {t.name: t.data_type for t in config.output}
        needed_in, needed_out = TASK_TENSORS[task]
        for kind, needed, have in (("input", needed_in, inputs), ("output", needed_out, outputs)):
            for name, dtype in needed.items():
                if name not in have:
                    problems.append(Problem(path, f"{task} models need the {kind} {name!r}"))
                elif have[name] != dtype:
                    problems.append(
                        Problem(
                            path,
                            f"{kind} {name!r} of {task} models must be "
                            f"{mc.DataType.Name(dtype)}, not {mc.DataType.Name(have[name])}",
                        )
                    )
        if task == "embed" and not batching:
            problems.append(Problem(path, "embed models must batch (max_batch_size > 0)"))
        if task == "generate" and not config.model_transaction_policy.decoupled:
            problems.append(
                Problem(path, "generate models must be decoupled (model_transaction_policy)")
            )
        if task == "generate" and "PROMPT" not in inputs and "MESSAGES" not in inputs:
            problems.append(Problem(path, "generate models need the input 'PROMPT' or 'MESSAGES'"))
    return problems


def load_model_dir(
    directory: Path, problems: list[Problem], config_name: str = ""
) -> LocalModel | None:
    """One model folder; with `config_name`, its configs/<config_name>.pbtxt replaces
    config.pbtxt where it exists (as Triton's --model-config-name does)."""
    path = directory / CONFIG
    if not path.is_file():
        problems.append(Problem(path, "missing: every model folder needs a config.pbtxt"))
        return None
    config = _parse(path, problems)
    for named in sorted((directory / "configs").glob("*.pbtxt")):
        extra = _parse(named, problems)
        if extra is not None:
            problems.extend(check_config(named, extra, directory))
    if config is None:
        return None
    problems.extend(check_config(path, config, directory))
    named_config = directory / "configs" / f"{config_name}.pbtxt"
    if config_name and named_config.is_file():
        config = _parse(named_config, []) or config
    model = LocalModel(directory.name, directory, config)
    model.versions = sorted(
        (p.name for p in directory.iterdir() if p.is_dir() and p.name.isdigit()), key=int
    )
    if not model.versions:
        problems.append(Problem(directory, "no version folder (a numbered folder such as 1/)"))
    if config.version_policy.HasField("specific"):
        for version in config.version_policy.specific.versions:
            if str(version) not in model.versions:
                problems.append(
                    Problem(path, f"version_policy names version {version}, which has no folder")
                )
    expected = config.default_model_filename or (
        BACKEND_FILES.get(config.backend) if config.backend else PLATFORMS.get(config.platform)
    )
    for version in model.versions:
        folder = directory / version
        if expected and not (folder / expected).exists():
            problems.append(Problem(folder / expected, "missing: the version's model file"))
        if config.backend == "python" and (folder / "model.py").exists():
            source = folder / "model.py"
            try:
                compile(source.read_text(encoding="utf-8"), str(source), "exec")
            except SyntaxError as exc:
                problems.append(
                    Problem(source, f"syntax error: {exc.msg}", exc.lineno or 0, exc.offset or 0)
                )
    return model


def validate(
    repository: Path, only: list[str] | None = None, config_name: str = ""
) -> tuple[list[LocalModel], list[Problem]]:
    problems: list[Problem] = []
    models: list[LocalModel] = []
    if not repository.is_dir():
        return [], [Problem(repository, "not a directory")]
    folders = sorted(
        p for p in repository.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    names = {p.name for p in folders}
    for name in only or []:
        if name not in names:
            problems.append(Problem(repository / name, f"model {name!r} is not in the repository"))
    for folder in folders:
        if only and folder.name not in only:
            continue
        model = load_model_dir(folder, problems, config_name)
        if model is not None:
            models.append(model)
    if not folders:
        problems.append(Problem(repository, "no model folders"))
    return models, problems


# -- commands ------------------------------------------------------------------------------


def cmd_validate(repository: Path, only: list[str] | None, out: TextIO = sys.stdout) -> int:
    models, problems = validate(repository, only)
    for problem in problems:
        print(f"error: {problem}", file=out)
    for model in models:
        print(
            f"{model.name}: backend {model.config.backend or model.config.platform}, "
            f"versions {', '.join(model.versions) or '-'}",
            file=out,
        )
    if problems:
        print(f"{len(problems)} problem(s) in {repository}", file=out)
        return 1
    print(f"{repository}: {len(models)} model(s), no problems", file=out)
    return 0


def _client(url: str):  # type: ignore[no-untyped-def]
    import tritonclient.grpc.aio as triton_aio

    return triton_aio.InferenceServerClient(url)


async def _states(client, name: str) -> list[dict]:  # type: ignore[no-untyped-def]
    index = await client.get_model_repository_index(as_json=True)
    return [e for e in index.get("models", []) if e.get("name") == name]


def _describe(entries: list[dict]) -> str:
    if not entries:
        return "not in Triton's repository"
    return ", ".join(
        f"version {e.get('version') or '-'} {e.get('state') or 'UNLOADED'}"
        + (f" ({e['reason']})" if e.get("reason") and e.get("state") != "READY" else "")
        for e in entries
    )


async def deploy(
    repository: Path, url: str, only: list[str] | None, out: TextIO, config_name: str = ""
) -> int:
    from tritonclient.utils import InferenceServerException

    models, problems = validate(repository, only, config_name)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=out)
        print("not deployed: fix the problems above (`agentplane models validate`)", file=out)
        return 2
    client = _client(url)
    failed = 0
    try:
        try:
            await client.is_server_live(client_timeout=5)
        except InferenceServerException as exc:
            print(f"error: Triton at {url} cannot be reached: {exc.message()}", file=out)
            return 3
        for model in models:
            before = await _states(client, model.name)
            serving = [e for e in before if e.get("state") == "READY"]
            print(
                f"{model.name}: loading versions {', '.join(model.versions)} ...",
                file=out,
                flush=True,
            )
            try:
                # Triton returns when the load has finished, successfully or not.
                await client.load_model(model.name, config=model.config_json(), files=model.files())
            except InferenceServerException as exc:
                failed += 1
                after = await _states(client, model.name)
                print(f"{model.name}: FAILED to load: {exc.message()}", file=out)
                still = [e for e in after if e.get("state") == "READY"]
                if still:
                    print(
                        f"{model.name}: the previous deployment keeps serving ({_describe(still)})",
                        file=out,
                    )
                elif serving:
                    print(
                        f"{model.name}: WARNING: nothing is serving now ({_describe(after)})",
                        file=out,
                    )
                else:
                    print(f"{model.name}: not serving ({_describe(after)})", file=out)
                continue
            ready = await client.is_model_ready(model.name)
            after = await _states(client, model.name)
            if not ready:
                failed += 1
                print(f"{model.name}: loaded but not ready: {_describe(after)}", file=out)
                continue
            print(f"{model.name}: READY ({_describe(after)})", file=out)
    finally:
        await client.close()
    return 1 if failed else 0


async def status(url: str, out: TextIO) -> int:
    from tritonclient.utils import InferenceServerException

    client = _client(url)
    try:
        try:
            live = await client.is_server_live(client_timeout=5)
            index = await client.get_model_repository_index(as_json=True, client_timeout=10)
        except InferenceServerException as exc:
            print(f"Triton at {url}: UNREACHABLE ({exc.message()})", file=out)
            return 3
        print(f"Triton at {url}: {'live' if live else 'not live'}", file=out)
        entries = index.get("models", [])
        width = max([len(e.get("name", "")) for e in entries] + [5])
        print(f"{'MODEL':<{width}}  VERSION  STATE        REASON", file=out)
        for entry in sorted(entries, key=lambda e: (e.get("name", ""), e.get("version", ""))):
            print(
                f"{entry.get('name', ''):<{width}}  {entry.get('version') or '-':<7}  "
                f"{entry.get('state') or 'UNLOADED':<11}  {entry.get('reason', '')}",
                file=out,
            )
        return 0 if live else 1
    finally:
        await client.close()


def main(args, triton_url: str) -> int:  # type: ignore[no-untyped-def]
    """Entry point of `agentplane models ...` (the parser is in cli.py)."""
    if args.models_command == "validate":
        return cmd_validate(Path(args.repository), args.model)
    if args.models_command == "deploy":
        return asyncio.run(
            deploy(
                Path(args.repository),
                args.triton or triton_url,
                args.model,
                sys.stdout,
                args.config_name or "",
            )
        )
    if args.models_command == "status":
        return asyncio.run(status(args.triton or triton_url, sys.stdout))
    return 2
