"""client.inference against a real server without Triton: the calls reach InferenceService and
come back typed (the model runs themselves are covered by the inference tests with Triton)."""

from __future__ import annotations

import pytest

from agentplane import FailedPreconditionError, NotFoundError, UnavailableError


def test_inference_without_triton(client) -> None:  # type: ignore[no-untyped-def]
    try:
        models = list(client.inference.list_models(page_size=10))
    except UnavailableError as error:
        assert error.reason == "ERROR_REASON_INFERENCE_UNAVAILABLE"
        models = []
    assert all(m.name for m in models)
    with pytest.raises((UnavailableError, FailedPreconditionError, NotFoundError)) as caught:
        client.inference.embed(model="no-such-model", texts=["hello"], timeout=5)
    assert caught.value.reason in (
        "ERROR_REASON_INFERENCE_UNAVAILABLE",
        "ERROR_REASON_MODEL_NOT_READY",
        "ERROR_REASON_RESOURCE_NOT_FOUND",
    )


async def test_inference_stream_without_triton(aclient) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((UnavailableError, FailedPreconditionError, NotFoundError)):
        async for _ in aclient.inference.generate(model="no-such-model", prompt="hi", timeout=5):
            pass
