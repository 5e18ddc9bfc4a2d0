"""Client-side request validation with protovalidate (the ``validate`` extra).

The server always validates; validating here as well (``Client.connect(validate=True)``) turns
a bad request into the same ``InvalidArgumentError`` without a round trip, from the same
``buf.validate`` rules the server enforces.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.message import Message

from agentplane._errors import FieldViolation, InvalidArgumentError

_validator: Any = None


def field_path(violation: Any) -> str:
    """buf.validate.FieldPath as text: messages[0].agent_id, labels["Key"] (the server names
    fields the same way in its BadRequest details)."""
    if violation.proto.field is None:  # a message-level rule: no single field to name
        return ""
    parts: list[str] = []
    for element in violation.proto.field.elements:
        text = element.field_name
        subscript = element.subscript
        if subscript is not None:
            key = subscript.value
            text += f"[{key}]" if subscript.field == "index" else f"[{json.dumps(key)}]"
        parts.append(text)
    return ".".join(parts)


def validate_request(message: Message, method: str = "") -> None:
    """Raise InvalidArgumentError (with field violations) if ``message`` breaks its rules."""
    global _validator
    if _validator is None:
        try:
            import protovalidate
        except ImportError as error:  # pragma: no cover - depends on the extra
            raise ImportError(
                "client-side validation needs protovalidate: pip install 'agentplane-sdk[validate]'"
            ) from error
        _validator = protovalidate.Validator()
    violations = [
        FieldViolation(field_path(v) or "(request)", v.proto.message, v.proto.rule_id)
        for v in _validator.collect_violations(message)
    ]
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        raise InvalidArgumentError(
            f"invalid {message.DESCRIPTOR.name}: {summary} (checked before sending)",
            reason="ERROR_REASON_INVALID_REQUEST",
            field_violations=violations,
            method=method,
        )
