"""Policy conditions in CEL, compiled and type-checked once per condition text.

Library: cel-expr-python, Google's CEL C++ runtime with its type checker. Conditions run in
CEL's sandbox (no I/O, no host functions, no Python eval). Measured here on the conditions the
tests use: about 3 µs per evaluation once the variables are bound; the pure-Python cel-python
takes about 1 ms, and the Rust `common-expression-language` bindings (about 1 µs) have no type
checker, so they could neither reject undeclared variables with their position nor refuse a
condition that is not a bool.

The variables are declared as protobuf messages built here at start (so `request.actoin` is a
compile error naming its position); `context` is a map of JSON values.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

_FD = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "agentplane.governance.cel"


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    f = descriptor_pb2.FileDescriptorProto(
        name="agentplane/governance/cel/variables.proto", package=_PACKAGE, syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, int, str | None]]) -> None:
        m = f.message_type.add(name=name)
        for number, (field, kind, type_name) in enumerate(fields, start=1):
            item = m.field.add(name=field, number=number, type=kind, label=_FD.LABEL_OPTIONAL)
            if type_name == "repeated":
                item.label = _FD.LABEL_REPEATED
            elif type_name:
                item.type_name = type_name

    string, double, int64, msg = _FD.TYPE_STRING, _FD.TYPE_DOUBLE, _FD.TYPE_INT64, _FD.TYPE_MESSAGE
    message(
        "Usage",
        [
            ("input_tokens", int64, None),
            ("output_tokens", int64, None),
            ("cost_micros", int64, None),
        ],
    )
    message(
        "Request",
        [
            ("agent_id", string, None),
            ("action", string, None),
            ("resource", string, None),
            ("usage_estimate", msg, f".{_PACKAGE}.Usage"),
            ("content", string, None),
            ("content_type", string, None),
        ],
    )
    labels = f.message_type.add(name="Agent").nested_type.add(name="LabelsEntry")
    labels.options.map_entry = True
    labels.field.add(name="key", number=1, type=string, label=_FD.LABEL_OPTIONAL)
    labels.field.add(name="value", number=2, type=string, label=_FD.LABEL_OPTIONAL)
    agent = f.message_type[-1]
    for number, (name, kind) in enumerate(
        [
            ("agent_id", string),
            ("registered", _FD.TYPE_BOOL),
            ("status", string),
            ("labels", msg),
            ("framework", string),
            ("sdk_language", string),
            ("skill_ids", string),
        ],
        start=1,
    ):
        field = agent.field.add(name=name, number=number, type=kind, label=_FD.LABEL_OPTIONAL)
        if name == "labels":
            field.type_name = f".{_PACKAGE}.Agent.LabelsEntry"
            field.label = _FD.LABEL_REPEATED
        if name == "skill_ids":
            field.label = _FD.LABEL_REPEATED
    message("Trust", [("score", double, None), ("tier", string, None)])
    pool.Add(f)
    return pool


_AST = "agentplane.governance.cel.ast"


def _add_checked_expr(pool: descriptor_pool.DescriptorPool) -> None:
    """The part of cel.expr.CheckedExpr (cel-spec checked.proto and syntax.proto, same field
    numbers) needed to walk a compiled condition's expression tree; the library hands the
    compiled expression out only serialized, and no Python package ships these protos. Fields
    left out here are kept as unknown fields and never read."""
    f = descriptor_pb2.FileDescriptorProto(
        name="agentplane/governance/cel/checked_expr.proto", package=_AST, syntax="proto3"
    )
    expr = f"{_AST}.Expr"

    def message(
        name: str, fields: list[tuple[str, int, int, str | None, bool]], into: Any = f
    ) -> Any:
        m = into.message_type.add(name=name) if into is f else into.nested_type.add(name=name)
        for field, number, kind, type_name, repeated in fields:
            item = m.field.add(name=field, number=number, type=kind, label=_FD.LABEL_OPTIONAL)
            if repeated:
                item.label = _FD.LABEL_REPEATED
            if type_name:
                item.type_name = f".{type_name}"
        return m

    msg, int64, int32 = _FD.TYPE_MESSAGE, _FD.TYPE_INT64, _FD.TYPE_INT32
    message(
        "CheckedExpr",
        [("expr", 4, msg, expr, False), ("source_info", 5, msg, f"{_AST}.SourceInfo", False)],
    )
    source_info = message(
        "SourceInfo", [("positions", 4, msg, f"{_AST}.SourceInfo.PositionsEntry", True)]
    )
    positions = message(
        "PositionsEntry",
        [("key", 1, int64, None, False), ("value", 2, int32, None, False)],
        source_info,
    )
    positions.options.map_entry = True
    node = message(
        "Expr",
        [
            ("id", 2, int64, None, False),
            ("select_expr", 5, msg, f"{expr}.Select", False),
            ("call_expr", 6, msg, f"{expr}.Call", False),
            ("list_expr", 7, msg, f"{expr}.CreateList", False),
            ("struct_expr", 8, msg, f"{expr}.CreateStruct", False),
            ("comprehension_expr", 9, msg, f"{expr}.Comprehension", False),
        ],
    )
    message("Select", [("operand", 1, msg, expr, False)], node)
    message("Call", [("target", 1, msg, expr, False), ("args", 3, msg, expr, True)], node)
    message("CreateList", [("elements", 1, msg, expr, True)], node)
    struct = message(
        "CreateStruct", [("entries", 2, msg, f"{expr}.CreateStruct.Entry", True)], node
    )
    message("Entry", [("map_key", 3, msg, expr, False), ("value", 4, msg, expr, False)], struct)
    message(
        "Comprehension",
        [
            ("iter_range", 2, msg, expr, False),
            ("accu_init", 4, msg, expr, False),
            ("loop_condition", 5, msg, expr, False),
            ("loop_step", 6, msg, expr, False),
            ("result", 7, msg, expr, False),
        ],
        node,
    )
    pool.Add(f)


_POOL = _build_pool()
_add_checked_expr(_POOL)
CheckedExpr = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_AST}.CheckedExpr"))
RequestVar = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Request"))
AgentVar = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Agent"))
TrustVar = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Trust"))

_ENV = cel.NewEnv(
    _POOL,
    variables={
        "request": cel.Type(f"{_PACKAGE}.Request"),
        "agent": cel.Type(f"{_PACKAGE}.Agent"),
        "trust": cel.Type(f"{_PACKAGE}.Trust"),
        "context": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
    },
)
# The C++ environment is shared; compile under a lock (evaluation is re-entrant).
_COMPILE_LOCK = threading.Lock()
_POSITION = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*?)(?:\n|$)")
# Comprehensions nest multiplicatively; the 4 KiB limit bounds everything else, this bounds
# the worst case of nested macros over literal lists. Counted on the compiled expression tree,
# where every macro (all, exists, exists_one, map, filter) is a comprehension node, so comments,
# spacing or line breaks in the text change nothing.
MAX_MACROS = 4


class ConditionError(ValueError):
    """A condition that does not compile; `description` starts with its 1-based position."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True, slots=True)
class Condition:
    source: str
    program: Any

    def evaluate(self, activation: Any) -> bool:
        """True or False; raises EvaluationError when the expression fails at run time."""
        value = self.program.eval(activation)
        if value.type() != cel.Type.BOOL:
            raise EvaluationError(_runtime_message(value))
        return bool(value.value())


class EvaluationError(RuntimeError):
    pass


def _runtime_message(value: Any) -> str:
    if value.type() != cel.Type.ERROR:
        return f"the condition evaluated to a {value.type().name().lower()}, not a bool"
    try:
        text = str(value.value())
    except Exception:
        text = "evaluation error"
    return text.split(" [", 1)[0][:300]


@functools.lru_cache(maxsize=4096)
def compile_condition(source: str) -> Condition:
    """Compile and type-check `source` (cached by text, so each policy version compiles once
    per process). Raises ConditionError naming the position."""
    try:
        with _COMPILE_LOCK:
            program = _ENV.compile(source)
    except RuntimeError as exc:
        found = _POSITION.search(str(exc))
        if found is None:
            raise ConditionError(f"line 1, column 1: {str(exc)[:300]}") from exc
        line, column, message = found.groups()
        message = message.replace(" (in container '')", "")
        raise ConditionError(f"line {line}, column {column}: {message}") from exc
    _check_macros(source, program)
    result = program.return_type()
    if result not in (cel.Type.BOOL, cel.Type.DYN):
        raise ConditionError(
            f"line 1, column 1: the condition must be a bool, but it is {result.name().lower()}"
        )
    return Condition(source, program)


def _check_macros(source: str, program: Any) -> None:
    try:
        checked = CheckedExpr.FromString(any_pb2.Any.FromString(program.serialize()).value)
    except DecodeError as exc:  # nested past protobuf's parse depth
        raise ConditionError("line 1, column 1: the condition is nested too deeply") from exc
    comprehensions = []
    stack = [checked.expr]
    while stack:
        node = stack.pop()
        if node.HasField("comprehension_expr"):
            comprehensions.append(node.id)
        stack.extend(_children(node))
    if len(comprehensions) <= MAX_MACROS:
        return
    # Positions are code point offsets; report the macro that comes after the allowed ones.
    offsets = sorted(checked.source_info.positions.get(i, 0) for i in comprehensions)
    line, column = _line_column(source, offsets[MAX_MACROS] + 1)
    raise ConditionError(
        f"line {line}, column {column}: at most {MAX_MACROS} comprehension macros "
        "(all, exists, exists_one, map, filter) are allowed"
    )


def _children(node: Any) -> list[Any]:
    if node.HasField("select_expr"):
        return [node.select_expr.operand]
    if node.HasField("call_expr"):
        call = node.call_expr
        return [*([call.target] if call.HasField("target") else []), *call.args]
    if node.HasField("list_expr"):
        return list(node.list_expr.elements)
    if node.HasField("struct_expr"):
        return [
            child
            for entry in node.struct_expr.entries
            for child in (entry.map_key, entry.value)
            if child.ByteSize()
        ]
    if node.HasField("comprehension_expr"):
        c = node.comprehension_expr
        return [c.iter_range, c.accu_init, c.loop_condition, c.loop_step, c.result]
    return []


def _line_column(source: str, offset: int) -> tuple[int, int]:
    before = source[:offset]
    line = before.count("\n") + 1
    return line, offset - (before.rfind("\n") + 1)


def activation(request: Any, context: dict, agent: Any, trust: Any) -> Any:
    return _ENV.Activation({"request": request, "context": context, "agent": agent, "trust": trust})
