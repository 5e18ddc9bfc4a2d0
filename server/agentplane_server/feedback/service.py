"""Builds FeedbackService (with the signing keys of its feedback tokens); registers feedback
retention."""

from __future__ import annotations

from typing import Any

from agentplane.feedback.v1 import feedback_service_pb2
from agentplane_server.feedback.logic import FeedbackLogic
from agentplane_server.feedback.retention import expire_feedback
from agentplane_server.feedback.servicer import FeedbackServicer
from agentplane_server.feedback.tokens import FeedbackTokens
from agentplane_server.runtime import Runtime
from agentplane_server.signing import signing_keys

SERVICE = feedback_service_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name


async def build(runtime: Runtime) -> dict[str, Any]:
    tokens = FeedbackTokens(await signing_keys(runtime.settings, runtime.db, "feedback_tokens"))
    runtime.add_retention("feedback", expire_feedback)
    return {SERVICE: FeedbackServicer(FeedbackLogic(runtime.db, runtime.page_tokens, tokens))}
