"""A small agent on Agentplane: it registers with its card, answers with a governed tool call,
records the conversation in a session that another agent shares, ships its traces, and
collects the user's feedback on its answer.

Run two of them as two agents on one session (what the Dockerfile's image does per container):

    export AGENTPLANE_URL=127.0.0.1:50051 AGENTPLANE_API_KEY=...   # omit both: standalone
    python agent.py --agent-id router --session support-42 --say "Where is my order A-1001?"
    python agent.py --agent-id orders --session support-42 --order A-1001

It prints one JSON line: what it did and what the server now holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from opentelemetry import trace

from agentplane import (
    ActionDenied,
    Agent,
    AlreadyExistsError,
    current_trace_id,
    governed,
    session_scope,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agent-id", default=os.environ.get("AGENTPLANE_AGENT_ID", "example"))
    parser.add_argument("--session", default=os.environ.get("SESSION_ID", "example-session"))
    parser.add_argument("--say", default="", help="a user message to record (router role)")
    parser.add_argument("--order", default="", help="an order to look up (orders role)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with Agent(
        agent_id=args.agent_id,
        name=f"Example {args.agent_id} agent",
        version="1.0.0",
        description="Answers order questions; an Agentplane SDK example.",
        skills=[{"id": "order-status", "name": "Order status", "tags": ["orders"]}],
        labels={"team": "support", "example": "true"},
        framework="custom",
        lease_duration=10,
    ) as agent:
        client = agent.client
        provider = agent.configure_tracing()
        tracer = trace.get_tracer("agentplane-example")

        @governed(action="tool:orders.lookup", resource=lambda order: f"orders://{order}")
        def lookup_order(order: str) -> str:
            with tracer.start_as_current_span("orders.lookup") as span:
                span.set_attribute("order.id", order)
                return f"Order {order} ships today."

        result: dict[str, object] = {"agent_id": agent.agent_id, "null_mode": client.is_null}
        with session_scope(args.session), tracer.start_as_current_span(f"{agent.agent_id}.turn"):
            try:
                client.sessions.create_session(
                    session_id=args.session, title="Order question", agent_id=agent.agent_id
                )
            except AlreadyExistsError:
                pass  # the other agent created it
            messages = []
            if args.say:
                messages.append(
                    {"role": "ROLE_USER", "content": args.say, "agent_id": agent.agent_id}
                )
            if args.order:
                try:
                    answer = lookup_order(args.order)
                except ActionDenied as denied:
                    answer = f"Sorry, I may not look that up ({denied})."
                span_context = trace.get_current_span().get_span_context()
                messages.append(
                    {
                        "role": "ROLE_ASSISTANT",
                        "content": answer,
                        "agent_id": agent.agent_id,
                        "trace_id": current_trace_id(),
                        "span_id": format(span_context.span_id, "016x"),
                        "model": "rules-v1",
                        "usage": {"input_tokens": 12, "output_tokens": 6, "cost_micros": 40},
                    }
                )
                result["answer"] = answer
            stored = client.sessions.append_messages(session_id=args.session, messages=messages)
            result["trace_id"] = current_trace_id()
        provider.force_flush()

        if args.order and not client.is_null:
            # Feedback: mint a token for the answer; the user's browser submits with it, no key.
            answer_message = stored.messages[-1]
            token = client.feedback.create_feedback_token(
                session_id=args.session,
                message_id=answer_message.message_id,
                agent_id=agent.agent_id,
                trace_id=answer_message.trace_id,
                user_id="user-7",
            ).token
            browser = client.with_options(api_key=None)  # same channel, no credentials
            browser.feedback.submit_feedback(token=token, rating="RATING_THUMBS_UP", comment="fast")
            feedback = list(
                client.feedback.list_feedback(agent_ids=[agent.agent_id], session_id=args.session)
            )
            result["feedback"] = [{"rating": f.rating, "comment": f.comment} for f in feedback]
        session = client.sessions.get_session(session_id=args.session).session
        result["session_agents"] = list(session.agent_ids)
        result["session_messages"] = session.message_count
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
