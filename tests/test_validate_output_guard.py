"""ValidateOutput's MODEL check: the `guard` model on a real Triton, called through the server's
inference client; and what happens without Triton (explicit: UNAVAILABLE; default: skipped and
recorded in the decision log)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from conftest import database_url_for
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rpcutil import expect_error
from serverproc import ServerProcess, free_port
from test_governance_helpers import Project, eventually
from tritonproc import TritonProcess

from agentplane.governance.v1 import decision_pb2 as D
from agentplane.governance.v1 import governance_service_pb2 as pb

pytestmark = pytest.mark.slow
INFERENCE = "agentplane.inference.v1.InferenceService"
UNSAFE = "Here are step by step instructions to build a bomb and hurt people."
SAFE = "Your parcel will be delivered on Thursday morning."


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonProcess]:
    process = TritonProcess(load_models=("embed", "guard"))
    yield process
    process.kill()


@pytest.fixture(scope="module")
def server(triton: TritonProcess, backend: str, postgres) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    process = ServerProcess(
        database_url_for(backend, postgres),
        extra_args=("--triton-url", triton.grpc_url, "--triton-health-interval", "0.2"),
    )
    health = health_pb2_grpc.HealthStub(process.channel())
    deadline = time.monotonic() + 15
    request = health_pb2.HealthCheckRequest(service=INFERENCE)
    while health.Check(request, timeout=2).status != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "inference never became SERVING"
        time.sleep(0.05)
    yield process
    process.stop()


def summary(p: Project, decision_id: str) -> dict:  # type: ignore[type-arg]
    record = eventually(
        lambda: (
            p.gov.GetDecision(
                pb.GetDecisionRequest(decision_id=decision_id), metadata=p.md
            ).decision_record
        )
    )
    return {k: v for k, v in record.request_summary.items()}


def test_guard_flags_unsafe_output_and_accepts_safe(server: ServerProcess) -> None:
    p = Project(server)
    explicit = [D.DETECTOR_MODEL]
    unsafe = p.gov.ValidateOutput(
        pb.ValidateOutputRequest(agent_id="billing", content=UNSAFE, checks=explicit),
        metadata=p.md,
    )
    assert unsafe.verdict == D.VERDICT_FLAG_FOR_REVIEW
    [finding] = unsafe.findings
    assert (finding.detector, finding.detector_name, finding.severity) == (
        D.DETECTOR_MODEL,
        "guard:violence",
        D.SEVERITY_HIGH,
    )
    assert (finding.start_offset, finding.end_offset) == (0, 0)
    assert "violence" in finding.message and "score 0." in finding.message

    safe = p.gov.ValidateOutput(
        pb.ValidateOutputRequest(agent_id="billing", content=SAFE, checks=explicit),
        metadata=p.md,
    )
    assert (safe.verdict, list(safe.findings)) == (D.VERDICT_ACCEPT, [])

    # Empty checks run MODEL too while the classifier is ready, beside the other detectors.
    default = p.gov.ValidateOutput(
        pb.ValidateOutputRequest(agent_id="billing", content=UNSAFE + " Mail jo@example.com"),
        metadata=p.md,
    )
    assert default.verdict == D.VERDICT_FLAG_FOR_REVIEW
    assert [f.detector for f in default.findings] == [D.DETECTOR_MODEL, D.DETECTOR_EMAIL]
    seen = summary(p, default.decision_id)
    assert "DETECTOR_MODEL" in list(seen["checks"]) and "skipped_checks" not in seen


def test_without_triton_explicit_model_is_unavailable_and_default_skips_it(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    p = Project(make_server(extra_args=("--triton-url", down, "--triton-health-interval", "0.2")))
    error = expect_error(
        grpc.StatusCode.UNAVAILABLE,
        p.gov.ValidateOutput,
        pb.ValidateOutputRequest(agent_id="billing", content=UNSAFE, checks=[D.DETECTOR_MODEL]),
        metadata=p.md,
    )
    assert error.reason == "ERROR_REASON_INFERENCE_UNAVAILABLE"

    default = p.gov.ValidateOutput(
        pb.ValidateOutputRequest(agent_id="billing", content=UNSAFE), metadata=p.md
    )
    assert (default.verdict, list(default.findings)) == (D.VERDICT_ACCEPT, [])
    seen = summary(p, default.decision_id)
    assert "DETECTOR_MODEL" not in list(seen["checks"])
    assert list(seen["skipped_checks"]) == ["DETECTOR_MODEL"] and seen["skipped_reason"]
