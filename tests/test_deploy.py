"""deploy/: the image's install steps work in a fresh virtualenv, the Dockerfiles lint clean, and
every Kubernetes overlay renders and validates with the properties the deployment relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serverproc import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
OVERLAYS = sorted(p.name for p in (DEPLOY / "kubernetes" / "overlays").iterdir())


def test_the_image_install_steps_work_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """What deploy/server.Dockerfile runs: copy sdk-python/ and server/, make a virtualenv
    (no system site-packages), install both with uv (the version the Dockerfile pins), then
    the entrypoint."""
    dockerfile = (DEPLOY / "server.Dockerfile").read_text()
    install = "uv pip install --python /opt/agentplane/bin/python ./sdk-python ./server"
    assert install in dockerfile
    pinned = re.search(r"pip install uv==([0-9.]+)", dockerfile)
    assert pinned, "the Dockerfile pins uv"
    uv = BIN / "uv"
    version = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[1] == pinned.group(1), "dev extra and Dockerfile pin one uv"
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "sdk-python", src / "sdk-python", ignore=ignore)
    shutil.copytree(ROOT / "server", src / "server", ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    started = time.monotonic()
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", python, "./sdk-python", "./server"],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    print(f"image install steps: {time.monotonic() - started:.1f} s")

    agentplane = venv / "bin" / "agentplane"
    shown = subprocess.run([str(agentplane), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "serve" in shown.stdout, shown.stderr

    data, port = tmp_path / "data", free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [
            str(agentplane),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-listen",
            f"127.0.0.1:{free_port()}",
            "--triton-url",
            f"127.0.0.1:{free_port()}",
            "--data-dir",
            str(data),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    status = health.Check(
                        health_pb2.HealthCheckRequest(
                            service="agentplane.session.v1.SessionService"
                        ),
                        timeout=1,
                    ).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        assert (data / "admin.key").stat().st_mode & 0o777 == 0o600
    finally:
        server.terminate()
        assert server.wait(30) == 0
        log.close()


def test_the_dockerfiles_lint_clean() -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), *sorted(map(str, DEPLOY.glob("*.Dockerfile")))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name for p in DEPLOY.glob("*.Dockerfile")} == {
        "server.Dockerfile",
        "triton.Dockerfile",
    }


def render(overlay: str, tmp_path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the overlays (kubectl kustomize)"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(rendered)
    validated = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", str(out)], capture_output=True, text=True
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_valid_and_hardened(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay, tmp_path)
    server = find(docs, "StatefulSet", "agentplane")
    pod = server["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    # The bootstrap admin key and TLS come from Secrets; the decision journal on a per-pod volume.
    assert env["AGENTPLANE_BOOTSTRAP_ADMIN_KEY"]["value"].startswith("/etc/agentplane/admin/")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["admin-key"]["secret"]["secretName"] == "agentplane-admin"
    assert volumes["tls"]["secret"]["secretName"] == "agentplane-tls"
    assert env["AGENTPLANE_TLS_CERT"]["value"].startswith("/etc/agentplane/tls/")
    assert env["AGENTPLANE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"].startswith(
        "agentplane-db"
    )
    assert "data" not in volumes  # not an emptyDir: a claim per pod
    assert [c["metadata"]["name"] for c in server["spec"]["volumeClaimTemplates"]] == ["data"]
    assert "startupProbe" in container
    assert {p["containerPort"] for p in container["ports"]} == {50051, 8080, 9464}
    service = find(docs, "Service", "agentplane")
    assert {p["port"] for p in service["spec"]["ports"]} == {50051, 8080}
    find(docs, "PodDisruptionBudget", "agentplane")
    find(docs, "NetworkPolicy", "agentplane")

    triton = find(docs, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert "startupProbe" in triton and "livenessProbe" in triton
    assert find(docs, "Service", "triton")["spec"]["ports"][0]["port"] == 8001
    assert env["AGENTPLANE_TRITON_URL"]["value"] == "triton:8001"

    for doc in docs:
        if doc["kind"] not in ("StatefulSet", "Deployment"):
            continue
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, c["name"]
            assert context["readOnlyRootFilesystem"] is True, c["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert "readinessProbe" in c and "livenessProbe" in c, c["name"]

    postgres = [
        d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "postgres"
    ]
    gpu = triton["resources"]["limits"].get("nvidia.com/gpu")
    if overlay == "dev":
        assert postgres and gpu is None  # PostgreSQL in the cluster; Triton on the CPU
    if overlay == "prod":
        assert not postgres and gpu == "1"  # external PostgreSQL; Triton on a GPU
        assert not any(d["kind"] == "Secret" for d in docs)  # secrets come from outside
