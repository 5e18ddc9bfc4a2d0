"""`agentplane models validate`: Triton's own model-config proto parses every config.pbtxt, and
every problem is reported with its file. No Triton needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tritonproc import MODEL_REPOSITORY

AGENTPLANE = Path(sys.executable).with_name("agentplane")

PYTHON_MODEL = "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
GOOD = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [{{ name: "TEXT" data_type: TYPE_STRING dims: [1] }}]
output [{{ name: "OUT" data_type: TYPE_FP32 dims: [4] }}]
"""


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTPLANE), "models", "validate", *args], capture_output=True, text=True, timeout=60
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_repository_is_valid() -> None:
    result = validate(str(MODEL_REPOSITORY))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 model(s), no problems" in result.stdout
    for name in ("embed", "generate", "guard"):
        assert f"{name}: backend python, versions 1" in result.stdout


def test_every_problem_is_reported_with_its_file(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    # A syntax error: reported with line and column.
    write(repo / "syntax" / "config.pbtxt", 'backend: "python"\nmax_batch_size: eight\n')
    write(repo / "syntax" / "1" / "model.py", PYTHON_MODEL)
    # No configuration at all.
    write(repo / "noconfig" / "1" / "model.py", PYTHON_MODEL)
    # Parses, but Triton would refuse it.
    write(
        repo / "wrong" / "config.pbtxt",
        'name: "other"\nbackend: "nosuch"\nmax_batch_size: 0\n'
        "dynamic_batching {}\n"
        'input [{ name: "A" data_type: TYPE_FP32 dims: [0] }, { name: "A" dims: [1] }]\n'
        "instance_group [{ kind: KIND_CPU gpus: [0] }]\n",
    )
    # A python model whose version folder lacks model.py, and one whose model.py is broken.
    write(repo / "nofile" / "config.pbtxt", GOOD.format(name="nofile"))
    (repo / "nofile" / "1").mkdir()
    write(repo / "badpy" / "config.pbtxt", GOOD.format(name="badpy"))
    write(repo / "badpy" / "1" / "model.py", "def broken(:\n")
    # Agentplane's task conventions.
    write(
        repo / "badembed" / "config.pbtxt",
        GOOD.format(name="badembed")
        + 'parameters { key: "agentplane_task" value { string_value: "embed" } }\n',
    )
    write(repo / "badembed" / "1" / "model.py", PYTHON_MODEL)
    write(
        repo / "badgen" / "config.pbtxt",
        GOOD.format(name="badgen")
        + 'parameters { key: "agentplane_task" value { string_value: "generate" } }\n',
    )
    write(repo / "badgen" / "1" / "model.py", PYTHON_MODEL)
    # A named configuration (configs/*.pbtxt) is checked too.
    write(repo / "named" / "config.pbtxt", GOOD.format(name="named"))
    write(repo / "named" / "1" / "model.py", PYTHON_MODEL)
    write(
        repo / "named" / "configs" / "gpu.pbtxt",
        GOOD.format(name="named").replace("max_batch_size: 8", "max_batch_size: -3"),
    )
    # A good model beside them is still listed.
    write(repo / "fine" / "config.pbtxt", GOOD.format(name="fine"))
    write(repo / "fine" / "1" / "model.py", PYTHON_MODEL)

    result = validate(str(repo))
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
    expected = [
        (repo / "syntax" / "config.pbtxt", ":2:17: not a valid Triton model configuration"),
        (repo / "noconfig" / "config.pbtxt", "every model folder needs a config.pbtxt"),
        (repo / "wrong" / "config.pbtxt", "name 'other' differs from the folder name 'wrong'"),
        (repo / "wrong" / "config.pbtxt", "unknown backend 'nosuch'"),
        (repo / "wrong" / "config.pbtxt", "dynamic_batching needs max_batch_size > 0"),
        (repo / "wrong" / "config.pbtxt", "no outputs are declared"),
        (repo / "wrong" / "config.pbtxt", "input 'A' has invalid dims [0]"),
        (repo / "wrong" / "config.pbtxt", "input 'A' is declared twice"),
        (repo / "wrong" / "config.pbtxt", "input 'A' has no data_type"),
        (repo / "wrong" / "config.pbtxt", "a KIND_CPU instance_group lists gpus"),
        (repo / "wrong", "no version folder"),
        (repo / "nofile" / "1" / "model.py", "missing: the version's model file"),
        (repo / "badpy" / "1" / "model.py", ":1:12: syntax error"),
        (repo / "badembed" / "config.pbtxt", "embed models need the output 'EMBEDDING'"),
        (repo / "badgen" / "config.pbtxt", "generate models need the output 'TEXT'"),
        (repo / "badgen" / "config.pbtxt", "generate models must be decoupled"),
        (repo / "badgen" / "config.pbtxt", "need the input 'PROMPT' or 'MESSAGES'"),
        (repo / "badgen" / "config.pbtxt", "generate models need the output 'FINISH_REASON'"),
        (repo / "named" / "configs" / "gpu.pbtxt", "max_batch_size must not be negative"),
    ]
    for path, message in expected:
        assert any(e.startswith(f"error: {path}") and message in e for e in errors), (
            path,
            message,
            errors,
        )
    assert len(errors) == len(expected), errors
    assert "fine: backend python, versions 1" in result.stdout
    assert f"{len(expected)} problem(s) in {repo}" in result.stdout


def test_a_missing_repository_or_model_is_a_problem(tmp_path: Path) -> None:
    result = validate(str(tmp_path / "absent"))
    assert result.returncode == 1 and "not a directory" in result.stdout
    result = validate(str(MODEL_REPOSITORY), "--model", "nope")
    assert result.returncode == 1 and "model 'nope' is not in the repository" in result.stdout
