"""Feedback moves the trust of the agent whose answer it rates (FeedbackService ->
GovernanceService), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from agentplane.feedback.v1 import feedback_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as feedback_pb
from agentplane.feedback.v1 import feedback_service_pb2_grpc as feedback_rpc
from agentplane.governance.v1 import governance_service_pb2 as gov_pb
from agentplane.governance.v1 import governance_service_pb2_grpc as gov_rpc
from agentplane.governance.v1 import trust_pb2


def test_thumbs_up_and_down_move_the_agents_trust_once_each(server) -> None:  # type: ignore[no-untyped-def]
    md = server.metadata()
    channel = server.channel()
    feedback = feedback_rpc.FeedbackServiceStub(channel)
    governance = gov_rpc.GovernanceServiceStub(channel)
    agent = f"agent-{uuid.uuid4().hex[:8]}"

    def score() -> float:
        reply = governance.GetTrustScore(gov_pb.GetTrustScoreRequest(agent_id=agent), metadata=md)
        return reply.trust_score.score

    start = score()
    down = feedback_pb.CreateFeedbackRequest(
        rating=feedback_pb2.RATING_THUMBS_DOWN,
        agent_id=agent,
        user_id="u1",
        message_id="m1",
        request_id=f"r-{uuid.uuid4().hex[:8]}",
    )
    created = feedback.CreateFeedback(down, metadata=md).feedback
    after_down = score()
    assert after_down < start
    feedback.CreateFeedback(down, metadata=md)  # a retry counts once
    assert abs(score() - after_down) < 1e-6  # (scores decay toward the baseline continuously)
    feedback.CreateFeedback(
        feedback_pb.CreateFeedbackRequest(
            rating=feedback_pb2.RATING_THUMBS_UP, agent_id=agent, user_id="u2", message_id="m1"
        ),
        metadata=md,
    )
    assert score() > after_down

    events = governance.ListTrustEvents(
        gov_pb.ListTrustEventsRequest(agent_id=agent), metadata=md
    ).trust_events
    causes = [e.cause for e in events]
    assert sorted(causes) == sorted(
        [trust_pb2.TRUST_EVENT_CAUSE_FEEDBACK_DOWN, trust_pb2.TRUST_EVENT_CAUSE_FEEDBACK_UP]
    )
    assert created.feedback_id in {e.feedback_id for e in events}
