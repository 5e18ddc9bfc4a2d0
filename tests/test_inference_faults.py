"""Inference when Triton fails, and model deploys: a real tritonserver killed mid-request and
started again, and `agentplane models deploy|status` against it.

Storage plays no part here, so one server on SQLite is enough; Triton loads only `embed` and
`generate` to keep its two starts short.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from rpcutil import RichError, expect_error, rich_error
from serverproc import ServerProcess
from test_inference import wait_health
from tritonproc import MODEL_REPOSITORY, TritonProcess

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane.inference.v1 import inference_service_pb2 as pb
from agentplane.inference.v1 import inference_service_pb2_grpc as rpc
from agentplane.inference.v1 import model_pb2

AGENTPLANE = Path(sys.executable).with_name("agentplane")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonProcess]:
    process = TritonProcess(load_models=("embed", "generate"))
    yield process
    process.kill()  # no graceful unload needed: seconds saved per module


@pytest.fixture(scope="module")
def server(triton: TritonProcess) -> Iterator[ServerProcess]:
    process = ServerProcess(
        None, extra_args=("--triton-url", triton.grpc_url, "--triton-health-interval", "0.2")
    )
    wait_health(process, SERVING)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> rpc.InferenceServiceStub:
    return rpc.InferenceServiceStub(server.channel())


def agentplane(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTPLANE), "models", *args], capture_output=True, text=True, timeout=300
    )


def test_killing_triton_mid_request_then_it_recovers(triton, server, stub) -> None:  # type: ignore[no-untyped-def]
    md = server.metadata()
    # A generation streaming, and a large embedding running, when Triton dies.
    stream = stub.Generate(
        pb.GenerateRequest(prompt="A long story:", max_tokens=4000, temperature=0), metadata=md
    )
    first = next(stream)
    assert first.HasField("delta")
    embed_error: list[RichError] = []

    def embed_large() -> None:
        try:
            stub.Embed(
                pb.EmbedRequest(texts=["many words in a long text " * 40] * 256), metadata=md
            )
        except grpc.RpcError as error:
            embed_error.append(rich_error(error))

    worker = threading.Thread(target=embed_large)
    worker.start()
    time.sleep(0.5)
    triton.kill()

    # The stream had sent text, so it ends with a final ERROR message and status OK.
    rest = list(stream)
    assert rest and rest[-1].HasField("finish")
    finish = rest[-1].finish
    assert finish.finish_reason == pb.FINISH_REASON_ERROR
    assert finish.error_reason == ErrorReason.ERROR_REASON_INFERENCE_UNAVAILABLE
    assert "Triton" in finish.error_message
    assert finish.usage.output_tokens >= 1
    worker.join(30)
    (error,) = embed_error
    assert error.code == grpc.StatusCode.UNAVAILABLE, error
    assert error.reason == "ERROR_REASON_INFERENCE_UNAVAILABLE"
    assert triton.grpc_url in error.message and "retry" in error.message

    wait_health(server, NOT_SERVING, timeout=5)
    for call, request in (
        (stub.Embed, pb.EmbedRequest(texts=["x"])),
        (stub.ListModels, pb.ListModelsRequest()),
        (
            lambda r, metadata: list(stub.Generate(r, metadata=metadata)),
            pb.GenerateRequest(prompt="x"),
        ),
    ):
        error = expect_error(grpc.StatusCode.UNAVAILABLE, call, request, metadata=md)
        assert error.reason == "ERROR_REASON_INFERENCE_UNAVAILABLE"
        assert error.retry_delay is not None

    # Triton comes back on the same address: Agentplane recovers by itself.
    triton.start()
    wait_health(server, SERVING, timeout=15)
    assert len(stub.Embed(pb.EmbedRequest(texts=["back again"]), metadata=md).embeddings) == 1
    *_, last = stub.Generate(pb.GenerateRequest(prompt="x", max_tokens=3), metadata=md)
    assert last.finish.finish_reason == pb.FINISH_REASON_LENGTH


def test_deploying_a_broken_model_fails_while_the_previous_version_keeps_answering(
    triton, server, stub, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    md = server.metadata()
    repository = tmp_path / "models"
    shutil.copytree(MODEL_REPOSITORY / "embed", repository / "embed")
    broken = repository / "embed" / "2"
    broken.mkdir()
    (broken / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('version 2 is broken on purpose')\n"
    )
    before = stub.Embed(pb.EmbedRequest(texts=["steady"]), metadata=md)

    result = agentplane("deploy", str(repository), "--triton", triton.grpc_url, "--model", "embed")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "embed: FAILED to load" in result.stdout
    assert "version 2 is broken on purpose" in result.stdout
    assert "previous deployment keeps serving (version 1 READY)" in result.stdout

    after = stub.Embed(pb.EmbedRequest(texts=["steady"]), metadata=md)
    assert after.model_version == "1"
    assert list(after.embeddings[0].values) == pytest.approx(list(before.embeddings[0].values))
    model = stub.GetModel(pb.GetModelRequest(model="embed"), metadata=md).model
    assert model.state == model_pb2.MODEL_STATE_READY
    states = {v.version: (v.state, v.state_reason) for v in model.versions}
    assert states["1"] == (model_pb2.MODEL_STATE_READY, "")
    assert states["2"][0] == model_pb2.MODEL_STATE_UNAVAILABLE
    assert "broken on purpose" in states["2"][1]

    status = agentplane("status", "--triton", triton.grpc_url)
    assert status.returncode == 0, status.stderr
    assert "embed     2        UNAVAILABLE" in status.stdout


def test_deploy_loads_a_model_over_the_api(triton, server, stub) -> None:  # type: ignore[no-untyped-def]
    md = server.metadata()
    listed = {m.name: m.state for m in stub.ListModels(pb.ListModelsRequest(), metadata=md).models}
    assert listed["guard"] == model_pb2.MODEL_STATE_UNAVAILABLE  # in the repository, not loaded
    error = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        stub.Embed,
        pb.EmbedRequest(texts=["x"], model="guard"),
        metadata=md,
    )
    assert error.reason == "ERROR_REASON_MODEL_NOT_READY" and error.metadata == {"model": "guard"}
    result = agentplane(
        "deploy", str(MODEL_REPOSITORY), "--triton", triton.grpc_url, "--model", "guard"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "guard: READY (version 1 READY)" in result.stdout
    model = stub.GetModel(pb.GetModelRequest(model="guard"), metadata=md).model
    assert model.state == model_pb2.MODEL_STATE_READY


def test_deploy_and_status_report_an_unreachable_triton() -> None:
    for args in (
        ("deploy", str(MODEL_REPOSITORY), "--triton", "127.0.0.1:1", "--model", "guard"),
        ("status", "--triton", "127.0.0.1:1"),
    ):
        result = agentplane(*args)
        assert result.returncode == 3
        assert "127.0.0.1:1" in result.stdout and "reach" in result.stdout.lower()


def test_server_shutdown_ends_generate_streams_with_cancelled(triton, server, stub) -> None:  # type: ignore[no-untyped-def]
    # Last in the module: it stops the server.
    cancelled = triton.metric("agentplane_generate_finished_total", reason="cancelled")
    stream = stub.Generate(
        pb.GenerateRequest(prompt="A long story:", max_tokens=4000, temperature=0),
        metadata=server.metadata(),
    )
    assert next(stream).HasField("delta")
    server.send_signal(signal.SIGTERM)
    rest = list(stream)  # ends with status OK
    assert rest[-1].finish.finish_reason == pb.FINISH_REASON_CANCELLED
    assert rest[-1].finish.usage.output_tokens >= 1
    assert server.process.wait(15) == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if triton.metric("agentplane_generate_finished_total", reason="cancelled") > cancelled:
            break
        time.sleep(0.05)
    assert triton.metric("agentplane_generate_finished_total", reason="cancelled") == cancelled + 1
