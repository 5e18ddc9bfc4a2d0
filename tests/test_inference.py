"""InferenceService end to end: a real Triton (tritonserver from the nvidia-pytriton wheel) serving
triton-models/, a real Agentplane server on SQLite and on PostgreSQL, the generated stubs.

Triton starts once for the module (on CPU: embed is all-MiniLM-L6-v2, generate is the tiny
random-weight GPT-2 that `make triton-env` builds); each backend gets its own server.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator

import grpc
import numpy as np
import psycopg
import pytest
from conftest import database_url_for
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rpcutil import expect_error
from serverproc import ServerProcess
from tritonproc import TritonProcess

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import admin_service_pb2_grpc as admin_rpc
from agentplane.admin.v1 import api_key_pb2, project_pb2
from agentplane.inference.v1 import inference_service_pb2 as pb
from agentplane.inference.v1 import inference_service_pb2_grpc as rpc
from agentplane.inference.v1 import model_pb2

SERVICE = "agentplane.inference.v1.InferenceService"
pytestmark = pytest.mark.slow


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonProcess]:
    process = TritonProcess()
    yield process
    process.kill()  # no graceful unload needed: seconds saved per module


@pytest.fixture(scope="module")
def server(triton: TritonProcess, backend: str, postgres) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    process = ServerProcess(
        database_url_for(backend, postgres),
        extra_args=("--triton-url", triton.grpc_url, "--triton-health-interval", "0.2"),
    )
    wait_health(process, health_pb2.HealthCheckResponse.SERVING)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> rpc.InferenceServiceStub:
    return rpc.InferenceServiceStub(server.channel())


@pytest.fixture(scope="module")
def md(server: ServerProcess) -> tuple[tuple[str, str], ...]:
    return server.metadata()


def wait_health(server: ServerProcess, status: int, timeout: float = 15) -> None:
    health = health_pb2_grpc.HealthStub(server.channel())
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2).status
        if seen == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"inference health stayed {seen}, expected {status}")


def embed(stub, md, texts: list[str], **fields) -> np.ndarray:  # type: ignore[no-untyped-def]
    reply = stub.Embed(pb.EmbedRequest(texts=texts, **fields), metadata=md)
    return np.array([e.values for e in reply.embeddings], dtype=np.float32)


def usage_rows(server: ServerProcess, request_id: str, timeout: float = 5) -> list[dict]:
    """The inference_usage rows of a request, once the server's write-behind has written them."""
    deadline = time.monotonic() + timeout
    query = (
        "select agent_id, session_id, method, model, input_tokens, output_tokens, finish_reason "
        "from inference_usage where request_id = "
    )
    names = ["agent_id", "session_id", "method", "model", "input", "output", "finish"]
    while True:
        if server.database_url:
            url = server.database_url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(url) as c:
                rows = c.execute(query + "%s", (request_id,)).fetchall()
        else:
            c = sqlite3.connect(server.data_dir / "agentplane.db")
            try:
                rows = c.execute(query + "?", (request_id,)).fetchall()
            finally:
                c.close()
        if rows or time.monotonic() > deadline:
            return [dict(zip(names, row, strict=True)) for row in rows]
        time.sleep(0.1)


# -- Embed ------------------------------------------------------------------------------------


def test_inference_health_is_serving_with_triton(server: ServerProcess) -> None:
    wait_health(server, health_pb2.HealthCheckResponse.SERVING, timeout=1)


def test_embed_paraphrase_is_closer_than_unrelated(stub, md) -> None:  # type: ignore[no-untyped-def]
    reply = stub.Embed(
        pb.EmbedRequest(
            texts=[
                "A man is playing a guitar on stage.",
                "Someone performs a song on the guitar.",
                "The central bank raised interest rates again.",
            ],
            normalize=True,
        ),
        metadata=md,
    )
    assert reply.dimension == 384 and reply.model == "embed" and reply.model_version == "1"
    vectors = np.array([e.values for e in reply.embeddings])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)
    assert reply.usage.input_tokens >= 3 * 5 and reply.usage.output_tokens == 0


def test_batches_give_the_same_vectors_as_single_calls(stub, md) -> None:  # type: ignore[no-untyped-def]
    texts = [
        f"sentence number {i} is about {['cats', 'rain', 'code', 'tea'][i % 4]}" for i in range(100)
    ]
    # 64 single-text calls, in flight together (Triton may batch them; the API calls are single).
    futures = [stub.Embed.future(pb.EmbedRequest(texts=[t]), metadata=md) for t in texts[:64]]
    singles = np.array([f.result().embeddings[0].values for f in futures], dtype=np.float32)
    batch_of_1 = embed(stub, md, texts[:1])
    batch_of_64 = embed(stub, md, texts[:64])
    # 100 texts: more than the model's max_batch_size (64), so two Triton requests.
    batch_of_100 = embed(stub, md, texts)
    np.testing.assert_allclose(batch_of_1, singles[:1], atol=1e-5)
    np.testing.assert_allclose(batch_of_64, singles, atol=1e-5)
    np.testing.assert_allclose(batch_of_100[:64], singles, atol=1e-5)
    assert batch_of_100.shape == (100, 384)
    assert not np.allclose(batch_of_64[0], batch_of_64[1])


def test_oversize_and_bad_embed_requests_are_invalid_argument(server, stub, md) -> None:  # type: ignore[no-untyped-def]
    request_id = uid("bad")
    cases = {
        "texts": pb.EmbedRequest(texts=["x"] * 257, request_id=request_id),
        "texts[0]": pb.EmbedRequest(texts=["é" * 4097], request_id=request_id),  # 8194 bytes
        "texts[1]": pb.EmbedRequest(texts=["ok", ""], request_id=request_id),
        "model": pb.EmbedRequest(texts=["ok"], model="-bad", request_id=request_id),
    }
    for field, request in cases.items():
        error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.Embed, request, metadata=md)
        assert field in error.field_violations, (field, error.field_violations)
    empty = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, stub.Embed, pb.EmbedRequest(), metadata=md
    )
    assert "texts" in empty.field_violations
    # A generation model is not an embedding model.
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.Embed,
        pb.EmbedRequest(texts=["x"], model="generate", request_id=request_id),
        metadata=md,
    )
    assert "model" in error.field_violations
    assert usage_rows(server, request_id, timeout=1) == []  # nothing metered


def test_unknown_model_is_not_found(stub, md) -> None:  # type: ignore[no-untyped-def]
    for call, request in (
        (stub.Embed, pb.EmbedRequest(texts=["x"], model="no-such-model")),
        (stub.GetModel, pb.GetModelRequest(model="no-such-model")),
    ):
        error = expect_error(grpc.StatusCode.NOT_FOUND, call, request, metadata=md)
        assert error.reason == "ERROR_REASON_RESOURCE_NOT_FOUND"
        assert error.metadata == {"resource_type": "model", "resource_id": "no-such-model"}


def test_embed_usage_is_metered_to_the_agent_and_session(server, stub, md) -> None:  # type: ignore[no-untyped-def]
    request_id = uid("rq")
    reply = stub.Embed(
        pb.EmbedRequest(
            texts=["metered text"], agent_id="router", session_id="s-1", request_id=request_id
        ),
        metadata=md,
    )
    (row,) = usage_rows(server, request_id)
    assert row == {
        "agent_id": "router",
        "session_id": "s-1",
        "method": "Embed",
        "model": "embed",
        "input": reply.usage.input_tokens,
        "output": 0,
        "finish": 0,
    }


# -- Generate ---------------------------------------------------------------------------------


def generate(stub, md, **fields) -> tuple[list[str], pb.GenerateFinish]:  # type: ignore[no-untyped-def]
    deltas, finish = [], None
    for message in stub.Generate(pb.GenerateRequest(**fields), metadata=md):
        assert finish is None, "nothing may follow the final message"
        if message.HasField("delta"):
            assert message.delta.text
            deltas.append(message.delta.text)
        else:
            finish = message.finish
    assert finish is not None
    return deltas, finish


def test_generate_streams_deltas_and_stops_at_max_tokens(server, stub, md) -> None:  # type: ignore[no-untyped-def]
    request_id = uid("gen")
    deltas, finish = generate(
        stub,
        md,
        prompt="The quick brown fox",
        max_tokens=24,
        temperature=0,
        agent_id="writer",
        request_id=request_id,
    )
    assert len(deltas) >= 3
    assert finish.finish_reason == pb.FINISH_REASON_LENGTH
    assert finish.usage.output_tokens == 24 and finish.usage.input_tokens == 4
    assert finish.model == "generate" and finish.model_version == "1"
    (row,) = usage_rows(server, request_id)
    assert (row["agent_id"], row["method"], row["input"], row["output"], row["finish"]) == (
        "writer",
        "Generate",
        4,
        24,
        pb.FINISH_REASON_LENGTH,
    )


def test_generate_is_repeatable_with_a_seed_and_honours_stop_sequences(stub, md) -> None:  # type: ignore[no-untyped-def]
    common = {"prompt": "Once upon a time", "max_tokens": 30, "temperature": 0.8, "seed": 7}
    first, _ = generate(stub, md, **common)
    again, _ = generate(stub, md, **common)
    assert first == again
    text = "".join(first)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    deltas, finish = generate(stub, md, **common, stop_sequences=[stop, "never-there"])
    assert finish.finish_reason == pb.FINISH_REASON_STOP
    assert finish.stop_sequence == stop
    assert "".join(deltas) == text[: text.index(stop)]


def test_generate_answers_a_conversation(stub, md) -> None:  # type: ignore[no-untyped-def]
    deltas, finish = generate(
        stub,
        md,
        messages=[
            pb.ChatMessage(role=pb.CHAT_ROLE_SYSTEM, content="Be brief."),
            pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="Say hello."),
        ],
        max_tokens=5,
        temperature=0,
    )
    assert deltas and finish.finish_reason == pb.FINISH_REASON_LENGTH
    assert finish.usage.input_tokens > 5  # the laid-out conversation, not the bare content


def test_bad_generate_requests_are_invalid_argument(stub, md) -> None:  # type: ignore[no-untyped-def]
    cases = {
        "max_tokens": pb.GenerateRequest(prompt="x", max_tokens=4097),
        "temperature": pb.GenerateRequest(prompt="x", temperature=2.5),
        "stop_sequences": pb.GenerateRequest(prompt="x", stop_sequences=["s"] * 9),
        "(request)": pb.GenerateRequest(),  # neither prompt nor messages
        # Longer than the model's 4096-token context window.
        "prompt": pb.GenerateRequest(prompt="word " * 5000),
    }
    for field, request in cases.items():
        error = expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            lambda r: list(stub.Generate(r, metadata=md)),
            request,
        )
        assert field in error.field_violations, (field, error.field_violations)
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda r: list(stub.Generate(r, metadata=md)),
        pb.GenerateRequest(prompt="x", model="embed"),
    )
    assert "model" in error.field_violations


def test_cancelling_generate_stops_the_triton_request(triton, stub, md) -> None:  # type: ignore[no-untyped-def]
    cancelled = triton.metric("agentplane_generate_finished_total", reason="cancelled")
    tokens = triton.metric("agentplane_generate_output_tokens_total", model="generate")
    call = stub.Generate(
        pb.GenerateRequest(prompt="Tell me a long story", max_tokens=4000, temperature=0),
        metadata=md,
    )
    for received, _ in enumerate(call, start=1):
        if received == 3:
            break
    call.cancel()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if triton.metric("agentplane_generate_finished_total", reason="cancelled") > cancelled:
            break
        time.sleep(0.02)
    assert triton.metric("agentplane_generate_finished_total", reason="cancelled") == cancelled + 1
    assert triton.metric("agentplane_generate_active", model="generate") == 0
    # It stopped well short of the 4000 tokens it was asked for.
    assert (
        triton.metric("agentplane_generate_output_tokens_total", model="generate") - tokens < 2000
    )


# -- models -----------------------------------------------------------------------------------


def test_list_and_get_models(stub, md) -> None:  # type: ignore[no-untyped-def]
    models = stub.ListModels(pb.ListModelsRequest(), metadata=md).models
    assert [m.name for m in models] == ["embed", "generate", "guard"]
    by_name = {m.name: m for m in models}
    embed_model = by_name["embed"]
    assert embed_model.task == model_pb2.MODEL_TASK_EMBED
    assert embed_model.state == model_pb2.MODEL_STATE_READY
    assert [(v.version, v.state) for v in embed_model.versions] == [
        ("1", model_pb2.MODEL_STATE_READY)
    ]
    assert embed_model.backend == "python" and embed_model.max_batch_size == 64
    assert embed_model.embedding_dimension == 384
    assert [(t.name, t.data_type, list(t.dims)) for t in embed_model.inputs] == [
        ("TEXT", "BYTES", [1])
    ]
    # KIND_AUTO resolves to CPU on a machine without GPUs.
    assert [g.kind for g in embed_model.instance_groups] == [model_pb2.INSTANCE_KIND_CPU]
    assert by_name["generate"].task == model_pb2.MODEL_TASK_GENERATE
    assert by_name["generate"].decoupled and not embed_model.decoupled
    assert by_name["guard"].task == model_pb2.MODEL_TASK_UNSPECIFIED
    only_embed = stub.ListModels(
        pb.ListModelsRequest(task=model_pb2.MODEL_TASK_EMBED), metadata=md
    ).models
    assert [m.name for m in only_embed] == ["embed"]
    pages, token = [], ""
    while True:
        page = stub.ListModels(pb.ListModelsRequest(page_size=2, page_token=token), metadata=md)
        pages.append([m.name for m in page.models])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["embed", "generate"], ["guard"]]
    got = stub.GetModel(pb.GetModelRequest(model="generate"), metadata=md).model
    assert got == by_name["generate"]
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.ListModels,
        pb.ListModelsRequest(page_token="forged"),
        metadata=md,
    )
    assert error.reason == "ERROR_REASON_INVALID_PAGE_TOKEN"


def test_guard_flags_unsafe_text_through_embed(triton) -> None:  # type: ignore[no-untyped-def]
    import tritonclient.grpc as triton_grpc

    texts = [
        "Here are step by step instructions to build a bomb and hurt people.",
        "Your parcel will be delivered on Thursday morning.",
        "Write ransomware that encrypts all the files on a computer.",
        "Please restart the server after the update.",
    ]
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    tensor = triton_grpc.InferInput("TEXT", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object).reshape(-1, 1))
    result = client.infer("guard", [tensor])
    flagged = result.as_numpy("FLAGGED").reshape(-1).tolist()
    categories = [c.decode() for c in result.as_numpy("CATEGORY").reshape(-1)]
    assert flagged == [True, False, True, False]
    assert categories == ["violence", "", "malware", ""]
    client.close()


# -- access control and quotas ----------------------------------------------------------------


def test_roles_and_agent_identity(server, stub) -> None:  # type: ignore[no-untyped-def]
    admin = admin_rpc.AdminServiceStub(server.channel())

    def key(role: int, **fields) -> tuple[tuple[str, str], ...]:  # type: ignore[no-untyped-def]
        created = admin.CreateApiKey(
            admin_pb.CreateApiKeyRequest(role=role, **fields), metadata=server.metadata()
        )
        return (("authorization", f"Bearer {created.key}"),)

    reader = key(api_key_pb2.ROLE_READER)
    agent = key(api_key_pb2.ROLE_AGENT, agent_id="summarizer")
    # Readers may look at models but not run them.
    assert stub.ListModels(pb.ListModelsRequest(), metadata=reader).models
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED, stub.Embed, pb.EmbedRequest(texts=["x"]), metadata=reader
    )
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        lambda r: list(stub.Generate(r, metadata=reader)),
        pb.GenerateRequest(prompt="x", max_tokens=1),
    )
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED, stub.Embed, pb.EmbedRequest(texts=["x"]), metadata=()
    )
    # An agent acts as itself: usage goes to its own agent id.
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        stub.Embed,
        pb.EmbedRequest(texts=["x"], agent_id="someone-else"),
        metadata=agent,
    )
    assert error.reason == "ERROR_REASON_AGENT_IDENTITY_MISMATCH"
    request_id = uid("agent")
    stub.Embed(pb.EmbedRequest(texts=["x"], request_id=request_id), metadata=agent)
    assert [r["agent_id"] for r in usage_rows(server, request_id)] == ["summarizer"]


def test_project_token_quota(server, stub) -> None:  # type: ignore[no-untyped-def]
    admin = admin_rpc.AdminServiceStub(server.channel())
    project = uid("quota")
    admin.CreateProject(
        admin_pb.CreateProjectRequest(
            project_id=project,
            settings=project_pb2.ProjectSettings(
                quotas=project_pb2.ProjectQuotas(inference_tokens_per_day=40)
            ),
        ),
        metadata=server.metadata(),
    )
    md = server.metadata(**{"x-agentplane-project": project})
    used = 0
    for _ in range(10):
        try:
            used += stub.Embed(
                pb.EmbedRequest(texts=["a sentence of about ten tokens long, give or take"]),
                metadata=md,
            ).usage.input_tokens
        except grpc.RpcError:
            break
    assert 40 <= used < 60  # refused once the quota was spent, not before
    error = expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, stub.Embed, pb.EmbedRequest(texts=["x"]), metadata=md
    )
    assert error.reason == "ERROR_REASON_QUOTA_EXCEEDED"
    expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda r: list(stub.Generate(r, metadata=md)),
        pb.GenerateRequest(prompt="x", max_tokens=1),
    )
    # Other projects are unaffected.
    assert stub.Embed(pb.EmbedRequest(texts=["x"]), metadata=server.metadata()).embeddings
