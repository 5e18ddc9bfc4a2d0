"""How the server is assembled from the contract: the list of services comes from the generated
modules (and matches the .proto files), and a contract service that no service package builds
stops the server at start-up with a clear message instead of answering UNIMPLEMENTED later."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from serverproc import free_port

from agentplane.contract import contract_services

ROOT = Path(__file__).resolve().parents[1]


def test_contract_services_are_the_services_of_the_proto_files() -> None:
    declared = set()
    for path in (ROOT / "proto/agentplane").rglob("*.proto"):
        text = path.read_text()
        package = re.search(r"^package ([\w.]+);", text, re.MULTILINE)
        assert package is not None, path
        for name in re.findall(r"^service (\w+)", text, re.MULTILINE):
            declared.add(f"{package.group(1)}.{name}")
    found = [s.full_name for s in contract_services()]
    assert len(found) == len(set(found))
    assert set(found) == declared
    assert {s.client_attribute for s in contract_services()} == {
        "sessions",
        "feedback",
        "traces",
        "registry",
        "governance",
        "inference",
        "admin",
    }


DROP_ADMIN_AND_SERVE = """
import sys
from agentplane_server import app
from agentplane_server.cli import main
app.SERVICE_PACKAGES = tuple(p for p in app.SERVICE_PACKAGES if not p.__name__.startswith(
    "agentplane_server.admin."))
sys.exit(main(sys.argv[1:]))
"""


def test_a_contract_service_without_a_servicer_stops_the_server_at_start_up() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="agentplane-test-"))
    args = [
        "serve",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(data_dir),
        "--metrics-listen",
        f"127.0.0.1:{free_port()}",
        "--http-listen",
        f"127.0.0.1:{free_port()}",
        "--triton-url",
        f"127.0.0.1:{free_port()}",
    ]
    done = subprocess.run(
        [sys.executable, "-c", DROP_ADMIN_AND_SERVE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=data_dir,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "no servicer for agentplane.admin.v1.AdminService" in output
    assert "Traceback" not in output
