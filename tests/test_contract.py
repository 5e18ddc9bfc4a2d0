"""Contract compatibility as a user runs it: buf lint and buf breaking on real images."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "sdk-typescript-gen/node_modules/.bin/buf"
BASELINE = ROOT / "contract/baseline.binpb"


def build_image(proto_dir: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/build_image.py"),
            "--proto-dir",
            str(proto_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def buf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BUF), *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image") / "agentplane.binpb"
    built = build_image(ROOT / "proto", out)
    assert built.returncode == 0, built.stderr
    return out


def test_contracts_pass_lint(image: Path) -> None:
    result = buf("lint", str(image), "--path", "agentplane", "--config", "buf.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_contracts_are_compatible_with_the_released_baseline(image: Path) -> None:
    result = buf(
        "breaking",
        str(image),
        "--against",
        str(BASELINE),
        "--path",
        "agentplane",
        "--config",
        "buf.yaml",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_renumbering_a_field_is_reported_as_breaking(tmp_path: Path, image: Path) -> None:
    scratch = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", scratch)
    session_proto = scratch / "agentplane/session/v1/session.proto"
    text = session_proto.read_text()
    renumbered = re.sub(r"string title = 3 ", "string title = 30 ", text, count=1)
    assert renumbered != text
    session_proto.write_text(renumbered)
    changed = tmp_path / "changed.binpb"
    built = build_image(scratch, changed)
    assert built.returncode == 0, built.stderr

    result = buf(
        "breaking",
        str(changed),
        "--against",
        str(image),
        "--path",
        "agentplane",
        "--config",
        "buf.yaml",
    )
    assert result.returncode != 0
    assert "agentplane/session/v1/session.proto" in result.stdout
    assert 'Field "3"' in result.stdout or "title" in result.stdout
