"""OTLP attribute values as JSON (google.protobuf.Struct), as trace.proto's Span documents:
strings, booleans and doubles as themselves; integers as numbers, or as decimal strings beyond
+/-2^53 (where JSON numbers stop being exact); arrays as lists; key/value lists as objects;
bytes as base64 strings. Keys stay flat. Doubles that JSON cannot hold (NaN, +/-Infinity) become
the strings "NaN", "Infinity" and "-Infinity", as in the protobuf JSON mapping.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from typing import Any

from google.protobuf import struct_pb2
from opentelemetry.proto.common.v1 import common_pb2

_EXACT = 2**53


def any_value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        number = value.int_value
        return number if -_EXACT <= number <= _EXACT else str(number)
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        if math.isfinite(number):
            return number
        return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return key_values(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None  # unset, or a dictionary index (profiles only): no value to show


def key_values(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    """KeyValues as a dict; a repeated key keeps its last value."""
    return {pair.key: any_value(pair.value) for pair in pairs}


def to_struct(pairs: Iterable[common_pb2.KeyValue]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(key_values(pairs))
    return struct
