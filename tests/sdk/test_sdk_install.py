"""A fresh virtual environment installs the SDK from sdk-python/ (with the otel extra) and runs
the example agent: standalone (null mode), then as two agents against a running server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdk.sdkutil import eventually, uid

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("sdk-venv")
    source = base / "sdk-python"  # a copy: building must not write into the repository
    shutil.copytree(
        ROOT / "sdk-python",
        source,
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "dist"),
    )
    venv.EnvBuilder(with_pip=True).create(base / "venv")
    python = base / "venv/bin/python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"{source}[otel]",
        ],
        check=True,
        timeout=240,
    )
    yield python


def run_example(python: Path, *args: str, env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTPLANE_", "PYTHON"))}
    result = subprocess.run(
        [str(python), str(ROOT / "sdk-python/examples/agent.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        cwd=python.parent,  # not the repository: only the installed SDK is importable
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_installed_sdk_is_the_copy_and_typed(fresh_python: Path) -> None:
    probe = subprocess.run(
        [
            str(fresh_python),
            "-c",
            "import agentplane, pathlib; p = pathlib.Path(agentplane.__file__).parent; print(p); "
            "print((p / 'py.typed').exists(), (p / 'session/v1/session_pb2.pyi').exists())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=fresh_python.parent,
    )
    location, typed = probe.stdout.split("\n")[:2]
    assert "site-packages" in location and str(ROOT) not in location
    assert typed == "True True"


def test_example_runs_standalone_in_null_mode(fresh_python: Path) -> None:
    result = run_example(fresh_python, "--agent-id", "solo", "--order", "A-1", env={})
    assert result["null_mode"] is True
    assert result["answer"] == "Order A-1 ships today."


def test_example_against_a_running_server(fresh_python: Path, server, client) -> None:  # type: ignore[no-untyped-def]
    session_id = uid("example")
    env = {"AGENTPLANE_URL": server.address, "AGENTPLANE_API_KEY": server.admin_key}
    router = run_example(
        fresh_python,
        "--agent-id",
        "router",
        "--session",
        session_id,
        "--say",
        "Where is A-1?",
        env=env,
    )
    orders = run_example(
        fresh_python, "--agent-id", "orders", "--session", session_id, "--order", "A-1", env=env
    )
    assert router["null_mode"] is False
    assert orders["session_agents"] == ["router", "orders"] and orders["session_messages"] == 2
    assert orders["feedback"] == [{"rating": 1, "comment": "fast"}]
    with pytest.raises(Exception, match="NOT_FOUND"):  # deregistered on the way out
        client.registry.get_agent(agent_id="orders")

    def traced() -> None:
        traces = list(client.traces.list_traces(session_id=session_id))
        assert sorted(a for t in traces for a in t.agent_ids) == ["orders", "router"]

    eventually(traced)

    def checked() -> None:  # the decision log is written behind the decision
        decisions = list(
            client.governance.list_decisions(agent_id="orders", action="tool:orders.lookup")
        )
        assert decisions, "the governed tool call was checked"

    eventually(checked)
