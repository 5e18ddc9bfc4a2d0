"""protovalidate on every request: the buf.validate rules in the contracts, enforced before
any servicer runs, answered with INVALID_ARGUMENT and one BadRequest.FieldViolation per rule."""

from __future__ import annotations

import json
import math

import protovalidate
from google.protobuf.message import Message

from agentplane._validation import field_path  # one formatting of field paths, shared
from agentplane_server.errors import FieldViolation, InvalidArgument

# Timestamp.seconds range of the well-known type: 0001-01-01 to 9999-12-31.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
# Duration range of the well-known type: about +-10,000 years.
_MAX_DURATION_SECONDS = 315_576_000_000


def wire_safety_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """Checks every request needs beyond its contract rules, in one walk of the message:
    no NUL characters in strings (PostgreSQL text cannot hold them, so both databases refuse
    them alike), Timestamps in the well-known type's range, and finite numbers in Structs."""
    found: list[FieldViolation] = []
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == field.TYPE_STRING:
            values = (
                value.items()
                if _is_map(field)
                else (enumerate(value) if _is_repeated(field) else [(None, value)])
            )
            for key, text in values:
                if "\x00" in text or (isinstance(key, str) and "\x00" in key):
                    found.append(
                        FieldViolation(
                            _sub(path, key), "must not contain NUL characters", "string.no_nul"
                        )
                    )
        elif field.type == field.TYPE_MESSAGE:
            items = (
                value.items()
                if _is_map(field)
                else (enumerate(value) if _is_repeated(field) else [(None, value)])
            )
            for key, item in items:
                if not isinstance(item, Message):  # a scalar map value
                    texts = [key, item]
                    if any(isinstance(t, str) and "\x00" in t for t in texts):
                        found.append(
                            FieldViolation(
                                _sub(path, key), "must not contain NUL characters", "string.no_nul"
                            )
                        )
                    continue
                found += _special(item, _sub(path, key))
                found += wire_safety_violations(item, _sub(path, key) + ".")
    return found


def _special(item: Message, path: str) -> list[FieldViolation]:
    name = item.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        seconds, nanos = item.seconds, item.nanos  # type: ignore[attr-defined]
        if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos <= 999_999_999):
            return [
                FieldViolation(
                    path, "must be a valid timestamp (years 1 to 9999)", "timestamp.valid"
                )
            ]
    elif name == "google.protobuf.Duration":
        seconds, nanos = item.seconds, item.nanos  # type: ignore[attr-defined]
        if not (
            abs(seconds) <= _MAX_DURATION_SECONDS
            and abs(nanos) <= 999_999_999
            and (seconds == 0 or nanos == 0 or (seconds > 0) == (nanos > 0))
        ):
            return [
                FieldViolation(
                    path,
                    "must be a valid duration (at most 315,576,000,000 seconds either way)",
                    "duration.valid",
                )
            ]
    elif name == "google.protobuf.Value":
        number = getattr(item, "number_value", 0.0)
        if item.WhichOneof("kind") == "number_value" and not math.isfinite(number):
            return [
                FieldViolation(
                    path, "must be a finite number (JSON has no NaN or Infinity)", "struct.finite"
                )
            ]
    return []


def _is_map(field) -> bool:  # type: ignore[no-untyped-def]
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _is_repeated(field) -> bool:  # type: ignore[no-untyped-def]
    return field.is_repeated


def _sub(path: str, key: object) -> str:
    if key is None:
        return path
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}[{json.dumps(key)}]"


class RequestValidator:
    def __init__(self) -> None:
        self._validator = protovalidate.Validator()

    def check(self, message: Message) -> None:
        # First: values that the contract rules cannot even evaluate (an out-of-range
        # Timestamp makes the CEL runtime overflow).
        field_violations = wire_safety_violations(message)
        if not field_violations:
            try:
                found = self._validator.collect_violations(message)
            except protovalidate.EvaluationError as exc:
                # A value the rules cannot be evaluated on (e.g. an arithmetic overflow in a
                # rule's expression) is not a valid request either.
                raise InvalidArgument(
                    f"invalid {message.DESCRIPTOR.name}: a field's value cannot be checked "
                    f"against the contract's rules ({exc})"
                ) from exc
            field_violations = [
                FieldViolation(
                    field=field_path(v) or "(request)",
                    description=v.proto.message,
                    reason=v.proto.rule_id,
                )
                for v in found
            ]
        if not field_violations:
            return
        summary = "; ".join(f"{v.field}: {v.description}" for v in field_violations[:5])
        raise InvalidArgument(
            f"invalid {message.DESCRIPTOR.name}: {summary}", field_violations=field_violations
        )
