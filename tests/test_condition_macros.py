"""The limit on comprehension macros per policy condition is counted on the compiled expression,
so comments, spacing and line breaks cannot hide a macro; over the limit, CreatePolicy answers
INVALID_ARGUMENT on `policy.condition` (real server, SQLite and PostgreSQL)."""

from __future__ import annotations

import grpc
import pytest
from rpcutil import expect_error
from test_governance_helpers import Project

from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane.governance.v1 import policy_pb2
from agentplane_server.governance.conditions import MAX_MACROS, ConditionError, compile_condition

ONE = "[1].all(x, true)"
HIDDEN = [
    # a line comment between the macro name and its parenthesis
    " && ".join([ONE] * MAX_MACROS) + " && [1].all // no macro here\n(x, true)",
    # whitespace and line breaks around the dot and the parenthesis
    " && ".join([ONE] * MAX_MACROS) + " && [1] \n . \t exists \n (y, y == 1)",
    # a comment between the receiver and the dot
    " && ".join([ONE] * MAX_MACROS) + " && [1] // list\n.exists_one(z, z == 1)",
    # nested, each written differently
    "[1].all(a, [1].exists(b, [1]//x\n.map(c, c).filter(d, [2] . all (e, true)).size() > 0))",
    # macros inside a map literal and a list literal
    "{'k': [1].map(a, a)}['k'].size() + [[1].filter(b, true)].size() > 0 && "
    "[1].exists(c, true) && [1].all(d, true) && [1].exists_one(e, true)",
]


@pytest.mark.parametrize("source", HIDDEN)
def test_macros_over_the_limit_are_refused_however_written(source: str) -> None:
    with pytest.raises(ConditionError, match=f"at most {MAX_MACROS} comprehension macros"):
        compile_condition(source)


def test_macros_up_to_the_limit_and_look_alikes_compile() -> None:
    compile_condition(" && ".join([ONE] * MAX_MACROS))
    compile_condition("[1] // a comment\n . all(x, x > 0)")
    # the names in strings, in comments and as map keys are not macros
    compile_condition(
        '"all(exists(map(filter(x" != "" && // .all( .exists( .map( .filter( .exists_one(\n'
        "{'all': 1, 'map': 2}['all'] == 1 && context.exists == context.filter && "
        + " && ".join([ONE] * MAX_MACROS)
    )


def test_the_error_names_the_first_macro_over_the_limit() -> None:
    source = " && ".join([ONE] * MAX_MACROS) + " &&\n  [1].exists(y, true)"
    with pytest.raises(ConditionError) as caught:
        compile_condition(source)
    assert caught.value.description.startswith("line 2, column ")


def test_create_policy_refuses_a_hidden_macro(server) -> None:  # type: ignore[no-untyped-def]
    p = Project(server)
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        p.gov.CreatePolicy,
        pb.CreatePolicyRequest(
            policy=policy_pb2.Policy(
                name="hidden", effect=policy_pb2.POLICY_EFFECT_DENY, condition=HIDDEN[0]
            )
        ),
        metadata=p.md,
    )
    assert "comprehension macros" in error.field_violations["policy.condition"]
    listed = p.gov.ListPolicies(pb.ListPoliciesRequest(), metadata=p.md)
    assert list(listed.policies) == []
