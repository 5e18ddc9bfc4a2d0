"""The MODEL check of ValidateOutput: the `guard` content-safety model (triton-models/README.md),
called through the inference service's Triton client, so that the process keeps one channel to
Triton and its health monitor."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentplane_server.errors import ApiError, NotFound
from agentplane_server.inference.triton import model_not_ready, text_input

if TYPE_CHECKING:
    from agentplane_server.inference.health import TritonHealth
    from agentplane_server.inference.triton import TritonClient

GUARD_MODEL = "guard"
# After a failed call, checks run by default skip the model this long rather than paying for
# another failing round trip (and the error mapping's probes) on every ValidateOutput.
RETRY_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Classification:
    flagged: bool
    score: float
    category: str


class OutputClassifier:
    def __init__(
        self, triton: TritonClient, health: TritonHealth, model: str = GUARD_MODEL
    ) -> None:
        self.triton = triton
        self.health = health
        self.model = model
        self._retry_at = 0.0

    def ready(self) -> bool:
        """Whether a default (not asked for) MODEL check should run: Triton answered the health
        monitor's last probe and the model did not just fail."""
        return self.health.serving is True and time.monotonic() >= self._retry_at

    async def classify(self, text: str) -> Classification:
        """The model's verdict on `text`; raises the inference service's errors (UNAVAILABLE
        with ERROR_REASON_INFERENCE_UNAVAILABLE, FAILED_PRECONDITION with
        ERROR_REASON_MODEL_NOT_READY, ...)."""
        try:
            result = await self.triton.infer(self.model, [text_input("TEXT", [text])])
        except ApiError as error:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            if isinstance(error, NotFound):
                raise model_not_ready(self.model, "it is not in the Triton repository") from None
            raise
        flagged = result.as_numpy("FLAGGED")
        score = result.as_numpy("SCORE")
        category = result.as_numpy("CATEGORY")
        label = category.reshape(-1)[0] if category is not None else b""
        return Classification(
            flagged=bool(flagged.reshape(-1)[0]) if flagged is not None else False,
            score=float(score.reshape(-1)[0]) if score is not None else 0.0,
            category=label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label),
        )
