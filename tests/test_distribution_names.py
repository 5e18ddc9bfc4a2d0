"""Distribution names: the ones the project publishes under (the import stays `agentplane`), and
every install hint in the repository names them and an extra they declare."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK = tomllib.loads((ROOT / "sdk-python" / "pyproject.toml").read_text())["project"]
SERVER = tomllib.loads((ROOT / "server" / "pyproject.toml").read_text())["project"]
HINT = re.compile(r"pip install ['\"]?([A-Za-z0-9_.\-/]+)\[([a-z0-9_,-]+)\]")


def test_distribution_names() -> None:
    assert SDK["name"] == "agentplane-sdk"
    assert SERVER["name"] == "agentplane-server"
    assert "agentplane-sdk" in SERVER["dependencies"]
    assert not any(re.match(r"agentplane\b(?!-)", d) for d in SERVER["dependencies"])
    assert (ROOT / "sdk-python" / "src" / "agentplane" / "__init__.py").exists()  # the import


def test_every_install_hint_names_our_distribution_and_a_declared_extra() -> None:
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.toml", "*Dockerfile", "*.ts", "Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    extras = {"agentplane-sdk": set(SDK["optional-dependencies"]), "agentplane-server": {"dev"}}
    local = {
        "./sdk-python": "agentplane-sdk",
        "/src": "agentplane-sdk",
        "./server": "agentplane-server",
    }
    hints = []
    for name in files:
        path = ROOT / name
        if "/gen/" in name or not path.is_file():
            continue
        for dist, wanted in HINT.findall(path.read_text(errors="replace")):
            hints.append((name, dist, wanted))
            dist = local.get(dist, dist)
            assert dist in extras, f"{name}: `pip install {dist}[...]` is not our distribution"
            assert set(wanted.split(",")) <= extras[dist], f"{name}: {dist}[{wanted}]"
    # The SDK's own hints (configure_tracing, validate=True) are among those checked.
    assert {n for n, d, _ in hints if d == "agentplane-sdk"} >= {
        "sdk-python/src/agentplane/_tracing.py",
        "sdk-python/src/agentplane/_validation.py",
    }
