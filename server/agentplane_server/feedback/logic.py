"""FeedbackService behaviour: ids, one feedback per user per message, idempotency, filters,
summaries and feedback tokens.

Who may write feedback about whom, and which feedback moves trust:
- A person's verdict reaches the server through a feedback token (SubmitFeedback): the agent
  mints it for one of its own answers and hands it to the user. It counts as HUMAN feedback
  and moves the agent's trust.
- Operators' credentials (admin, project_admin) may write feedback about any agent of the
  project, with any source (reviewers, evaluation pipelines); it moves trust.
- An agent credential writes feedback only about its own answers (agent_id is itself; a named
  message stored in Agentplane must be one it wrote) and never as FEEDBACK_SOURCE_HUMAN (unset means
  FEEDBACK_SOURCE_MODEL): what an agent says about itself is recorded but never moves its trust.
  It may update or delete only the feedback it wrote, and its feedback never replaces anyone
  else's. Readers write nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane.common.v1 import time_range_pb2
from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane.feedback.v1 import feedback_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as pb
from agentplane_server.auth.ratelimit import RateLimiter
from agentplane_server.authz import acting_agent
from agentplane_server.context import Principal, Role
from agentplane_server.errors import InvalidArgument, NotFound, PermissionDenied
from agentplane_server.feedback.store import Bucket, FeedbackFilter, FeedbackStore
from agentplane_server.feedback.tokens import FeedbackTokens, TokenClaims, invalid
from agentplane_server.governance.trust import record_feedback_trust
from agentplane_server.pagination import PageTokens
from agentplane_server.resources import new_id
from agentplane_server.storage.db import Database, now_us
from agentplane_server.storage.idempotency import run_idempotent

MAX_METADATA_BYTES = 64 * 1024
FEEDBACK_PAGE = (50, 500)  # default, maximum
DEFAULT_TOKEN_TTL_US = 3600 * 1_000_000
# SubmitFeedback needs no API key, so its rate limit is per token: a person changing their mind
# a few times is fine, a script hammering one token is not.
SUBMITS_PER_SECOND_PER_TOKEN = 5.0
MUTABLE_PATHS = ("rating", "score", "comment", "correction", "categories", "metadata")


def new_feedback_id() -> str:
    return new_id("fb")


def feedback_not_found(feedback_id: str) -> NotFound:
    return NotFound(
        f"feedback {feedback_id!r} not found",
        metadata={"resource_type": "feedback", "resource_id": feedback_id},
    )


def check_metadata(field: str, struct: struct_pb2.Struct) -> None:
    if struct.ByteSize() > MAX_METADATA_BYTES:
        raise InvalidArgument.field(field, f"must be at most {MAX_METADATA_BYTES} bytes")


def metadata_json(message: Message) -> dict | None:
    """The message's `metadata` Struct as JSON; None when it is unset."""
    if not message.HasField("metadata"):
        return None
    return json_format.MessageToDict(message.metadata)  # type: ignore[attr-defined]


def dedupe_key(
    user_id: str, message_id: str, token_id: str = "", author_agent_id: str = ""
) -> str | None:
    """The key under which a later feedback replaces an earlier one (fixed length, so long ids
    fit the indexed column): the user and message when both are known, else the token. An
    agent's own feedback has keys of its own, so it never replaces a person's or an operator's."""
    if user_id and message_id:
        parts = [user_id, message_id, author_agent_id] if author_agent_id else [user_id, message_id]
        digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
        return f"um:{digest}"
    if token_id:
        return f"tk:{token_id}"
    return None


def time_bounds(time_range: time_range_pb2.TimeRange) -> tuple[int | None, int | None]:
    start = time_range.start_time.ToMicroseconds() if time_range.HasField("start_time") else None
    end = time_range.end_time.ToMicroseconds() if time_range.HasField("end_time") else None
    return start, end


def feedback_row(
    project_id: str,
    judgement: pb.CreateFeedbackRequest | pb.SubmitFeedbackRequest,
    *,
    metadata: dict | None,
    source: int,
    links: pb.CreateFeedbackRequest | TokenClaims,
    dedupe: str | None,
    author_agent_id: str = "",
) -> dict[str, Any]:
    """A new feedback row: the judgement from the request, the links (agent, session, message,
    trace, user) from the request or from a feedback token."""
    now = now_us()
    return {
        "project_id": project_id,
        "feedback_id": new_feedback_id(),
        "rating": judgement.rating,
        "score": judgement.score if judgement.HasField("score") else None,
        "comment": judgement.comment,
        "correction": judgement.correction,
        "categories": list(judgement.categories),
        "metadata": metadata,
        "source": source,
        "user_id": links.user_id,
        "agent_id": links.agent_id,
        "session_id": links.session_id,
        "message_id": links.message_id,
        "trace_id": links.trace_id,
        "dedupe_key": dedupe,
        "author_agent_id": author_agent_id,
        "create_time_us": now,
        "update_time_us": now,
    }


class FeedbackLogic:
    def __init__(self, db: Database, page_tokens: PageTokens, tokens: FeedbackTokens) -> None:
        self.db = db
        self.store = FeedbackStore()
        self.page_tokens = page_tokens
        self.tokens = tokens
        self.limiter = RateLimiter()
        self._limiter_since = time.monotonic()

    # -- create / replace ---------------------------------------------------------------------

    async def create(
        self, who: Principal, request: pb.CreateFeedbackRequest
    ) -> pb.CreateFeedbackResponse:
        check_metadata("metadata", request.metadata)
        author = _author(who)
        keyed = pb.CreateFeedbackRequest()
        keyed.CopyFrom(request)
        keyed.agent_id = acting_agent(who, request.agent_id)
        keyed.source = _source(who, request.source)

        async def work(c) -> pb.CreateFeedbackResponse:  # type: ignore[no-untyped-def]
            await self._check_own_answer(c, who, keyed.message_id)
            feedback, replaced = await self.store.insert_or_replace(
                c,
                feedback_row(
                    who.project_id,
                    keyed,
                    metadata=metadata_json(keyed),
                    source=keyed.source,
                    links=keyed,
                    dedupe=dedupe_key(keyed.user_id, keyed.message_id, author_agent_id=author),
                    author_agent_id=author,
                ),
            )
            if not author:
                await _move_trust(c, feedback)
            return pb.CreateFeedbackResponse(feedback=feedback, replaced=replaced)

        response, _ = await run_idempotent(
            self.db,
            who.project_id,
            "CreateFeedback",
            request.request_id,
            keyed,
            pb.CreateFeedbackResponse,
            work,
        )
        return response

    async def _check_own_answer(self, c: AsyncConnection, who: Principal, message_id: str) -> None:
        """An agent credential names only messages it wrote (feedback and feedback tokens),
        where the message is stored in Agentplane."""
        if who.role is not Role.AGENT or not message_id:
            return
        owner = await self.store.message_agent(c, who.project_id, message_id)
        # A message kept outside Agentplane cannot be checked; the agent_id still is.
        if owner is not None and owner != who.agent_id:
            raise PermissionDenied(
                f"message {message_id!r} was written by another agent; an agent credential "
                "writes feedback only about its own answers",
                reason=ErrorReason.ERROR_REASON_AGENT_IDENTITY_MISMATCH,
                metadata={"agent_id": who.agent_id, "field": "message_id"},
            )

    async def _check_author(self, c: AsyncConnection, who: Principal, feedback_id: str) -> None:
        """An agent credential changes only feedback it wrote; others, any of the project's."""
        author = await self.store.author(c, who.project_id, feedback_id)
        if author is None:
            raise feedback_not_found(feedback_id)
        if who.role is Role.AGENT and author != who.agent_id:
            raise PermissionDenied(
                f"feedback {feedback_id!r} was not written by this agent; an agent credential "
                "may change only the feedback it wrote",
                reason=ErrorReason.ERROR_REASON_AGENT_IDENTITY_MISMATCH,
                metadata={"agent_id": who.agent_id, "field": "feedback_id"},
            )

    # -- read, update, delete -----------------------------------------------------------------

    async def get(self, who: Principal, feedback_id: str) -> feedback_pb2.Feedback:
        async with self.db.read() as c:
            feedback = await self.store.get(c, who.project_id, feedback_id)
        if feedback is None:
            raise feedback_not_found(feedback_id)
        return feedback

    async def update(
        self, who: Principal, request: pb.UpdateFeedbackRequest
    ) -> feedback_pb2.Feedback:
        given = request.feedback
        paths = list(dict.fromkeys(request.update_mask.paths))
        bad = [p for p in paths if p not in MUTABLE_PATHS]
        if not paths or bad:  # the contract's rule says the same; kept for direct callers
            raise InvalidArgument.field(
                "update_mask", f"paths must be among {list(MUTABLE_PATHS)}; got {bad or 'none'}"
            )
        values: dict[str, Any] = {}
        for path in paths:
            if path == "score":
                values["score"] = given.score if given.HasField("score") else None
            elif path == "categories":
                values["categories"] = list(given.categories)
            elif path == "metadata":
                check_metadata("feedback.metadata", given.metadata)
                values["metadata"] = metadata_json(given)
            else:
                values[path] = getattr(given, path)
        values["update_time_us"] = now_us()
        async with self.db.write() as c:
            await self._check_author(c, who, given.feedback_id)
            if not await self.store.update(c, who.project_id, given.feedback_id, values):
                raise feedback_not_found(given.feedback_id)
            updated = await self.store.get(c, who.project_id, given.feedback_id)
        assert updated is not None
        return updated

    async def delete(self, who: Principal, feedback_id: str) -> None:
        async with self.db.write() as c:
            await self._check_author(c, who, feedback_id)
            if not await self.store.delete(c, who.project_id, feedback_id):
                raise feedback_not_found(feedback_id)

    # -- queries ------------------------------------------------------------------------------

    async def list(
        self, who: Principal, request: pb.ListFeedbackRequest
    ) -> pb.ListFeedbackResponse:
        after_us, before_us = time_bounds(request.create_time)
        where = FeedbackFilter(
            agent_ids=tuple(request.agent_ids),
            rating=request.rating,
            create_after_us=after_us,
            create_before_us=before_us,
            session_id=request.session_id,
            message_id=request.message_id,
            trace_id=request.trace_id,
            user_id=request.user_id,
            source=request.source,
            category=request.category,
        )
        filters = _key(who, where)
        page = self.page_tokens.page("ListFeedback", request, filters, FEEDBACK_PAGE)
        after = (int(page.position[0]), str(page.position[1])) if page.position else None
        async with self.db.read() as c:
            rows = await self.store.list(c, who.project_id, where, after, page.fetch)
        found, token = page.finish(rows, lambda f: [f.create_time.ToMicroseconds(), f.feedback_id])
        return pb.ListFeedbackResponse(feedback=found, next_page_token=token)

    async def summarize(
        self, who: Principal, request: pb.SummarizeFeedbackRequest
    ) -> pb.SummarizeFeedbackResponse:
        after_us, before_us = time_bounds(request.time_range)
        where = FeedbackFilter(
            agent_ids=tuple(request.agent_ids),
            create_after_us=after_us,
            create_before_us=before_us,
            source=request.source,
        )
        async with self.db.read() as c:
            buckets = await self.store.summarize(c, who.project_id, where, request.window)
        return pb.SummarizeFeedbackResponse(buckets=[_bucket(b) for b in buckets])

    # -- tokens -------------------------------------------------------------------------------

    async def create_token(
        self, who: Principal, request: pb.CreateFeedbackTokenRequest
    ) -> pb.CreateFeedbackTokenResponse:
        agent_id = acting_agent(who, request.agent_id)
        if who.role is Role.AGENT and request.message_id:
            async with self.db.read() as c:
                await self._check_own_answer(c, who, request.message_id)
        ttl_us = request.ttl.ToMicroseconds() if request.HasField("ttl") else DEFAULT_TOKEN_TTL_US
        expire_us = now_us() + ttl_us
        token = self.tokens.mint(
            TokenClaims(
                project_id=who.project_id,
                agent_id=agent_id,
                session_id=request.session_id,
                message_id=request.message_id,
                trace_id=request.trace_id,
                user_id=request.user_id,
                expire_time_us=expire_us,
                token_id=self.tokens.new_token_id(),
            )
        )
        response = pb.CreateFeedbackTokenResponse(token=token)
        response.expire_time.FromMicroseconds(expire_us)
        return response

    async def submit(self, request: pb.SubmitFeedbackRequest) -> pb.SubmitFeedbackResponse:
        """SubmitFeedback: the token is the credential (the caller has no principal)."""
        claims = self.tokens.verify(request.token, now_us())
        now = time.monotonic()
        if now - self._limiter_since > 60:
            # A bucket holds one second of state: starting afresh each minute forgets the
            # tokens of the past (one per message) instead of keeping them all forever.
            self.limiter, self._limiter_since = RateLimiter(), now
        self.limiter.check(f"feedback-token:{claims.token_id}", SUBMITS_PER_SECOND_PER_TOKEN)
        async with self.db.write() as c:
            if not await self.store.project_exists(c, claims.project_id):
                # The project was deleted after the token was minted.
                raise invalid("its project no longer exists")
            feedback, replaced = await self.store.insert_or_replace(
                c,
                feedback_row(
                    claims.project_id,
                    request,
                    metadata=None,
                    source=feedback_pb2.FEEDBACK_SOURCE_HUMAN,
                    links=claims,
                    dedupe=dedupe_key(claims.user_id, claims.message_id, claims.token_id),
                ),
            )
            await _move_trust(c, feedback)
        return pb.SubmitFeedbackResponse(feedback=feedback, replaced=replaced)


def _author(who: Principal) -> str:
    """The agent recorded as the feedback's author: set only for agent credentials."""
    return who.agent_id if who.role is Role.AGENT else ""


def _source(who: Principal, requested: int) -> int:
    """The stored source. An agent credential never speaks for a person."""
    if who.role is not Role.AGENT:
        return requested or feedback_pb2.FEEDBACK_SOURCE_HUMAN
    if requested == feedback_pb2.FEEDBACK_SOURCE_HUMAN:
        raise PermissionDenied(
            "an agent credential cannot record a person's verdict (FEEDBACK_SOURCE_HUMAN); "
            "mint a feedback token (CreateFeedbackToken) and let the person submit it",
            metadata={"field": "source"},
        )
    return requested or feedback_pb2.FEEDBACK_SOURCE_MODEL


async def _move_trust(c: AsyncConnection, feedback: feedback_pb2.Feedback) -> None:
    """Thumbs up or down on an agent's answer moves its trust score, in the same transaction.
    Keyed by feedback id, so a retried create, or a user replacing their rating, counts once."""
    if feedback.agent_id and feedback.rating in (
        feedback_pb2.RATING_THUMBS_UP,
        feedback_pb2.RATING_THUMBS_DOWN,
    ):
        await record_feedback_trust(
            c,
            feedback.project_id,
            feedback.agent_id,
            feedback.rating == feedback_pb2.RATING_THUMBS_UP,
            feedback.feedback_id,
        )


def _key(who: Principal, where: FeedbackFilter) -> dict[str, Any]:
    return {
        "project": who.project_id,
        "agents": sorted(where.agent_ids),
        "rating": where.rating,
        "after": where.create_after_us,
        "before": where.create_before_us,
        "session": where.session_id,
        "message": where.message_id,
        "trace": where.trace_id,
        "user": where.user_id,
        "source": where.source,
        "category": where.category,
    }


def _bucket(bucket: Bucket) -> pb.FeedbackBucket:
    result = pb.FeedbackBucket(
        agent_id=bucket.agent_id,
        up_count=bucket.up_count,
        down_count=bucket.down_count,
        score_count=bucket.score_count,
        feedback_count=bucket.feedback_count,
    )
    if bucket.mean_score is not None:
        result.mean_score = bucket.mean_score
    result.window_start_time.FromMicroseconds(bucket.window_start_us)
    return result
