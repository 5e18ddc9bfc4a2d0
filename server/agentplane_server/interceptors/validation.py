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


def wire_safety_violations(message: Message) -> list[FieldViolation]:
    """Checks every request needs beyond its contract rules, in one walk of the message:
    no NUL characters in strings (PostgreSQL text cannot hold them, so both databases refuse
    them alike), Timestamps in the well-known type's range, and finite numbers in Structs."""
    found: list[FieldViolation] = []
    _walk(message, (), found)
    return found


# Where a value sits, as ((field name, map key or list index or None), ...): the path string is
# only formatted for a violation, not for every field of every request.
_Location = tuple[tuple[str, object], ...]
_NUL = "must not contain NUL characters"
# How a field is walked, by field descriptor: decided once per field, not once per call.
_STRING, _STRINGS, _MESSAGE, _MESSAGES, _MAP = range(5)
_KINDS: dict[object, int | None] = {}


def _kind(field) -> int | None:  # type: ignore[no-untyped-def]
    try:
        return _KINDS[field]
    except KeyError:
        pass
    kind: int | None = None
    if field.type == field.TYPE_STRING:
        kind = _STRINGS if _is_repeated(field) else _STRING
    elif field.type == field.TYPE_MESSAGE:
        if _is_map(field):
            kind = _MAP
        else:
            kind = _MESSAGES if _is_repeated(field) else _MESSAGE
    _KINDS[field] = kind
    return kind


def _walk(message: Message, where: _Location, found: list[FieldViolation]) -> None:
    for field, value in message.ListFields():
        kind = _kind(field)
        if kind is None:
            continue
        name = field.name
        if kind == _STRING:
            if "\x00" in value:
                found.append(FieldViolation(_path((*where, (name, None))), _NUL, "string.no_nul"))
        elif kind == _STRINGS:
            for index, text in enumerate(value):
                if "\x00" in text:
                    at = _path((*where, (name, index)))
                    found.append(FieldViolation(at, _NUL, "string.no_nul"))
        elif kind == _MESSAGE:
            _item(value, (*where, (name, None)), found)
        elif kind == _MESSAGES:
            for index, item in enumerate(value):
                _item(item, (*where, (name, index)), found)
        else:  # a map: message values are walked, string keys and values checked
            for key, item in value.items():
                if isinstance(item, Message):
                    _item(item, (*where, (name, key)), found)
                elif any(isinstance(t, str) and "\x00" in t for t in (key, item)):
                    at = _path((*where, (name, key)))
                    found.append(FieldViolation(at, _NUL, "string.no_nul"))


def _item(item: Message, where: _Location, found: list[FieldViolation]) -> None:
    name = item.DESCRIPTOR.full_name
    if name == "google.protobuf.Value":  # most of a Struct: one kind set, no generic walk
        kind = item.WhichOneof("kind")
        if kind == "number_value" or kind == "string_value":
            found += _special(item, where)
            if kind == "string_value" and "\x00" in item.string_value:  # type: ignore[attr-defined]
                at = _path((*where, ("string_value", None)))
                found.append(FieldViolation(at, _NUL, "string.no_nul"))
        elif kind == "struct_value" or kind == "list_value":
            _item(getattr(item, kind), (*where, (kind, None)), found)
        return
    if name in _SPECIAL:
        found += _special(item, where)
    _walk(item, where, found)


def _path(where: _Location) -> str:
    return ".".join(_sub(name, key) for name, key in where)


_SPECIAL = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.Value"}
)


def _special(item: Message, where: _Location) -> list[FieldViolation]:
    name = item.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        seconds, nanos = item.seconds, item.nanos  # type: ignore[attr-defined]
        if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos <= 999_999_999):
            return [
                FieldViolation(
                    _path(where), "must be a valid timestamp (years 1 to 9999)", "timestamp.valid"
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
                    _path(where),
                    "must be a valid duration (at most 315,576,000,000 seconds either way)",
                    "duration.valid",
                )
            ]
    elif name == "google.protobuf.Value":
        number = getattr(item, "number_value", 0.0)
        if item.WhichOneof("kind") == "number_value" and not math.isfinite(number):
            return [
                FieldViolation(
                    _path(where),
                    "must be a finite number (JSON has no NaN or Infinity)",
                    "struct.finite",
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
