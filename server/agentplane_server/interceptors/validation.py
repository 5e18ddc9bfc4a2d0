"""protovalidate on every request: the buf.validate rules in the contracts, enforced before
any servicer runs, answered with INVALID_ARGUMENT and one BadRequest.FieldViolation per rule."""

from __future__ import annotations

import protovalidate
from google.protobuf.message import Message

from agentplane_server.errors import FieldViolation, InvalidArgument


def field_path(violation: protovalidate.Violation) -> str:
    """buf.validate.FieldPath as text: messages[0].agent_id, labels["Key"]."""
    parts: list[str] = []
    for element in violation.proto.field.elements:
        subscript = element.WhichOneof("subscript")
        text = element.field_name
        if subscript == "index":
            text += f"[{element.index}]"
        elif subscript is not None:
            text += f"[{getattr(element, subscript)!r}]".replace("'", '"')
        parts.append(text)
    return ".".join(parts)


class RequestValidator:
    def __init__(self) -> None:
        self._validator = protovalidate.Validator()

    def check(self, message: Message) -> None:
        violations = self._validator.collect_violations(message)
        if not violations:
            return
        field_violations = [
            FieldViolation(
                field=field_path(v) or "(request)",
                description=v.proto.message,
                reason=v.proto.rule_id,
            )
            for v in violations
        ]
        summary = "; ".join(f"{v.field}: {v.description}" for v in field_violations[:5])
        raise InvalidArgument(
            f"invalid {message.DESCRIPTOR.name}: {summary}", field_violations=field_violations
        )
