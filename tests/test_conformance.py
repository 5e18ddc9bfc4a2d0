"""The shared conformance scenarios (tests/conformance/*.yaml) through Python, against real servers.

The TypeScript SDK runs the same files (sdk-typescript-gen/test/conformance.test.ts), so a
behaviour difference between the languages fails CI. The drivers here:
- ``grpc``: the generated stubs over grpcio, JSON through json_format: the wire as it is;
- ``sdk``: the Python SDK (``agentplane.Client``): its sub-clients, iterators and typed errors;
- ``connect-json``, ``connect-proto``, ``grpc-web``: the HTTP listener, through connectrpc's
  client (Connect with JSON, Connect with binary Protobuf, gRPC-Web binary).
CI time is short, so the full transport matrix runs on SQLite and a slice of it (``grpc``, ``sdk``,
``connect-json``) on PostgreSQL: the transports translate only, so what differs between the
backends is storage, which the slice exercises (SQLITE_ONLY_PARAMS, read by conftest.py).
A scenario whose ``requires`` lists a service that answers UNIMPLEMENTED is skipped (reported),
never passed. The format and the matching rules are in tests/conformance/README.md; ``match``
below and ``match`` in sdk-typescript-gen/test/conformance.ts must stay alike.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from connectrpc.client import ConnectClientSync
from connectrpc.code import Code as ConnectCode
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.protocol import ProtocolType
from google.protobuf import any_pb2, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from serverproc import ServerProcess

from agentplane.contract import contract_services

SCENARIO_DIR = Path(__file__).parent / "conformance"
SERVICES: dict[str, ServiceDescriptor] = {s.name: s.descriptor for s in contract_services()}


class CoreSchemaLoader(yaml.SafeLoader):
    """YAML 1.2 core schema, as the TypeScript runner's `yaml` package reads it by default.

    PyYAML knows only YAML 1.1, where `y`, `no`, `on`, `0755` and `1:30` are not strings; with
    the 1.2 core resolvers both runners see the same data (the TypeScript test compares them).
    """


CoreSchemaLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    CoreSchemaLoader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first)
    )


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


CoreSchemaLoader.add_constructor("tag:yaml.org,2002:int", _core_int)


def load_scenarios() -> list[dict[str, Any]]:
    scenarios = []
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        data = yaml.load(path.read_text(), Loader=CoreSchemaLoader)
        data["file"] = path.name
        scenarios.append(data)
    return scenarios


SCENARIOS = load_scenarios()


# --- matching (keep in step with sdk-typescript-gen/test/conformance.ts) -----------------------


def _is_operator(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k.startswith("$") for k in value)


def _is_default(value: Any) -> bool:
    if value is None or value == "" or value is False:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return True
    return isinstance(value, (list, dict)) and not value


_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _NUMBER.match(value):
        return float(value)
    return None


def _scalar_equal(expected: Any, actual: Any) -> bool:
    if actual is None:
        return _is_default(expected)
    if type(expected) is type(actual) or (
        isinstance(expected, (int, float))
        and isinstance(actual, (int, float))
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
    ):
        return expected == actual
    e, a = _numeric(expected), _numeric(actual)
    return e is not None and a is not None and e == a


def _show(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value)


def _length(value: Any) -> int | None:
    if value is None:
        return 0
    if isinstance(value, (list, str, dict)):
        return len(value)
    return None


def match(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """The mismatches between an expectation and an actual JSON value (empty: it matches)."""
    if _is_operator(expected):
        errors: list[str] = []
        for op, arg in expected.items():
            if op == "$present":
                if _is_default(actual) == bool(arg):
                    errors.append(
                        f"{path}: expected {'a value' if arg else 'no value'}, got {_show(actual)}"
                    )
            elif op == "$len":
                length = _length(actual)
                if length is None:
                    errors.append(f"{path}: expected something with a length, got {_show(actual)}")
                else:
                    errors.extend(match(arg, length, f"{path}.length"))
            elif op == "$regex":
                if not isinstance(actual, str) or not re.search(str(arg), actual):
                    errors.append(f"{path}: expected a match of /{arg}/, got {_show(actual)}")
            elif op == "$contains":
                if isinstance(arg, str):
                    if not isinstance(actual, str) or arg not in actual:
                        errors.append(
                            f"{path}: expected a string containing {_show(arg)}, "
                            f"got {_show(actual)}"
                        )
                    continue
                items = [] if actual is None else actual
                if not isinstance(items, list):
                    errors.append(f"{path}: expected an array, got {_show(actual)}")
                    continue
                for i, wanted in enumerate(arg):
                    if not any(not match(wanted, item) for item in items):
                        errors.append(
                            f"{path}: no element matches $contains[{i}] {_show(wanted)} "
                            f"in {_show(actual)}"
                        )
            elif op == "$ne":
                if not match(arg, actual):
                    errors.append(f"{path}: expected anything but {_show(arg)}")
            elif op in ("$gte", "$lte"):
                value, bound = _numeric(actual), _numeric(arg)
                ok = (
                    value is not None
                    and bound is not None
                    and (value >= bound if op == "$gte" else value <= bound)
                )
                if not ok:
                    sign = ">=" if op == "$gte" else "<="
                    errors.append(f"{path}: expected {sign} {_show(arg)}, got {_show(actual)}")
            else:
                errors.append(f"{path}: unknown matcher {op}")
        return errors
    if isinstance(expected, list):
        items = [] if actual is None else actual
        if not isinstance(items, list):
            return [f"{path}: expected an array, got {_show(actual)}"]
        if len(items) != len(expected):
            return [
                f"{path}: expected {len(expected)} element(s), got {len(items)}: {_show(actual)}"
            ]
        return [e for i, item in enumerate(expected) for e in match(item, items[i], f"{path}[{i}]")]
    if isinstance(expected, dict):
        obj = {} if actual is None else actual
        if not isinstance(obj, dict):
            return [f"{path}: expected an object, got {_show(actual)}"]
        return [e for k, v in expected.items() for e in match(v, obj.get(k), f"{path}.{k}")]
    if _scalar_equal(expected, actual):
        return []
    return [f"{path}: expected {_show(expected)}, got {_show(actual)}"]


# --- variables -----------------------------------------------------------------------------------

_WHOLE = re.compile(r"^\$\{(\w+)\}$")
_PART = re.compile(r"\$\{(\w+)\}")


def interpolate(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole:
            if whole.group(1) not in variables:
                raise KeyError(f"unknown variable ${{{whole.group(1)}}}")
            return variables[whole.group(1)]

        def splice(found: re.Match[str]) -> str:
            if found.group(1) not in variables:
                raise KeyError(f"unknown variable ${{{found.group(1)}}}")
            v = variables[found.group(1)]
            return v if isinstance(v, str) else json.dumps(v)

        return _PART.sub(splice, value)
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    return value


def lookup(root: Any, path: str) -> Any:
    value = root
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit():
            value = value[int(part)] if int(part) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            value = None
        if value is None:
            raise KeyError(f"capture path {path} not found in {_show(root)}")
    return value


# --- drivers -------------------------------------------------------------------------------------


@dataclass
class Failure:
    """An RPC error as the scenarios see it."""

    code: str
    json: dict[str, Any]


def _message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _to_json(message: Message) -> Any:
    return json_format.MessageToDict(message)


def _resolve(call: str) -> tuple[ServiceDescriptor, MethodDescriptor]:
    service_name, _, method_name = call.partition(".")
    service = SERVICES.get(service_name)
    if service is None or method_name not in service.methods_by_name:
        raise ValueError(
            f"unknown call {call}: use Service.Method, e.g. SessionService.CreateSession"
        )
    return service, service.methods_by_name[method_name]


def _items_field(method: MethodDescriptor) -> str:
    for field in method.output_type.fields:
        if field.is_repeated:  # each List response has exactly one repeated field
            return field.name
    raise ValueError(f"{method.name} is not a List method")


class GrpcDriver:
    """The generated stubs' wire format over a plain grpcio channel."""

    name = "grpc"

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(server.address)

    def close(self) -> None:
        self.channel.close()

    def invoke(
        self, step: dict[str, Any], request: Any, api_key: str | None, project: str | None
    ) -> Any:
        service, method = _resolve(step["call"])
        path = f"/{service.full_name}/{method.name}"
        request_class = _message_class(method.input_type)
        response_class = _message_class(method.output_type)
        message = json_format.ParseDict(request, request_class())
        metadata: list[tuple[str, str]] = []
        key = self.server.admin_key if api_key is None else api_key
        if key:
            metadata.append(("authorization", f"Bearer {key}"))
        if project:
            metadata.append(("x-agentplane-project", project))
        timeout = step.get("timeoutMs", 10_000) / 1000
        mode = step.get("mode", "unary")
        try:
            if mode == "stream":
                call = self.channel.unary_stream(
                    path,
                    request_serializer=request_class.SerializeToString,
                    response_deserializer=response_class.FromString,
                )(message, timeout=timeout, metadata=metadata)
                responses = []
                try:
                    for response in call:
                        responses.append(_to_json(response))
                        if len(responses) >= step.get("take", 1):
                            break
                finally:
                    call.cancel()
                return {"responses": responses}
            unary = self.channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            if mode == "pages":
                field = _items_field(method)
                items = []
                while True:
                    page = unary(message, timeout=timeout, metadata=metadata)
                    items.extend(_to_json(item) for item in getattr(page, field))
                    if not page.next_page_token:
                        return {"items": items}
                    message.page_token = page.next_page_token
            return _to_json(unary(message, timeout=timeout, metadata=metadata))
        except grpc.RpcError as error:
            return self._failure(error)

    @staticmethod
    def _failure(error: grpc.RpcError) -> Failure:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        return _failure(
            error.code().name,  # type: ignore[attr-defined]
            error.details() or "",  # type: ignore[attr-defined]
            status.details if status is not None else (),
        )


def _failure(code: str, message: str, details: Any) -> Failure:
    """An error with its google.rpc details (Any messages) as the scenarios see it."""
    found: dict[str, Any] = {
        "code": code,
        "reason": "",
        "domain": "",
        "message": message,
        "metadata": {},
        "fieldViolations": [],
        "requestId": "",
    }
    for packed in details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            found.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            found["fieldViolations"] = [
                {"field": v.field, "description": v.description, "reason": v.reason}
                for v in bad.field_violations
            ]
        elif packed.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            info = error_details_pb2.RequestInfo()
            packed.Unpack(info)
            found["requestId"] = info.request_id
    return Failure(code, found)


class ConnectDriver:
    """The HTTP listener through connectrpc's client: Connect (JSON or binary) or gRPC-Web."""

    PROTOCOLS = {
        "connect-json": (ProtocolType.CONNECT, google_protobuf_json_codec),
        "connect-proto": (ProtocolType.CONNECT, google_protobuf_binary_codec),
        "grpc-web": (ProtocolType.GRPC_WEB, google_protobuf_binary_codec),
    }

    def __init__(self, server: ServerProcess, name: str) -> None:
        self.name = name
        self.server = server
        protocol, codec = self.PROTOCOLS[name]
        self.client = ConnectClientSync(
            server.http_url, protocol=protocol, codec=codec(), send_compression=None
        )

    def close(self) -> None:
        self.client.close()

    def invoke(
        self, step: dict[str, Any], request: Any, api_key: str | None, project: str | None
    ) -> Any:
        service, method = _resolve(step["call"])
        request_class = _message_class(method.input_type)
        info = MethodInfo(
            name=method.name,
            service_name=service.full_name,
            input=request_class,
            output=_message_class(method.output_type),
            idempotency_level=IdempotencyLevel.UNKNOWN,
            stream_type=StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY,
        )
        message = json_format.ParseDict(request, request_class())
        headers: dict[str, str] = {}
        key = self.server.admin_key if api_key is None else api_key
        if key:
            headers["authorization"] = f"Bearer {key}"
        if project:
            headers["x-agentplane-project"] = project
        timeout_ms = step.get("timeoutMs", 10_000)
        mode = step.get("mode", "unary")
        call = {"method": info, "headers": headers, "timeout_ms": timeout_ms}
        try:
            if mode == "stream":
                responses = []
                stream = self.client.execute_server_stream(request=message, **call)
                try:
                    for response in stream:
                        responses.append(_to_json(response))
                        if len(responses) >= step.get("take", 1):
                            break
                finally:
                    getattr(stream, "close", lambda: None)()
                return {"responses": responses}
            if mode == "pages":
                field = _items_field(method)
                items = []
                while True:
                    page = self.client.execute_unary(request=message, **call)
                    items.extend(_to_json(item) for item in getattr(page, field))
                    if not page.next_page_token:
                        return {"items": items}
                    message.page_token = page.next_page_token
            return _to_json(self.client.execute_unary(request=message, **call))
        except ConnectError as error:
            details = []
            for detail in error.details:
                packed = any_pb2.Any(
                    type_url=f"type.googleapis.com/{detail.type_name}", value=detail.message_bytes
                )
                details.append(packed)
            code = "CANCELLED" if error.code is ConnectCode.CANCELED else error.code.name
            return _failure(code, error.message, details)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class SdkDriver:
    """The Python SDK: typed sub-clients, list iterators, streams and typed errors."""

    name = "sdk"

    def __init__(self, server: ServerProcess) -> None:
        try:
            from agentplane import Client
            from agentplane._errors import RpcError
        except ImportError as error:  # the SDK is written beside this suite
            pytest.skip(f"the Python SDK is not importable yet: {error}")
        self.rpc_error = RpcError
        self.client = Client.connect(server.address, api_key=server.admin_key)

    def close(self) -> None:
        self.client.close()

    def _sub_client(self, client: Any, service: ServiceDescriptor) -> Any:
        for value in vars(client).values():
            if getattr(value, "service_name", None) == service.full_name:
                return value
        raise AttributeError(f"the Python SDK client has no sub-client for {service.full_name}")

    def invoke(
        self, step: dict[str, Any], request: Any, api_key: str | None, project: str | None
    ) -> Any:
        service, method = _resolve(step["call"])
        changes: dict[str, Any] = {}
        if api_key is not None:
            changes["api_key"] = api_key
        if project is not None:
            changes["project"] = project
        client = self.client.with_options(**changes) if changes else self.client
        sub = self._sub_client(client, service)
        message = json_format.ParseDict(request, _message_class(method.input_type)())
        timeout = step.get("timeoutMs", 10_000) / 1000
        mode = step.get("mode", "unary")
        name = _snake(method.name)
        try:
            if mode == "pages":
                return {
                    "items": [
                        _to_json(item) for item in getattr(sub, name)(message, timeout=timeout)
                    ]
                }
            if mode == "stream":
                responses = []
                with getattr(sub, name)(message, timeout=timeout) as stream:
                    for response in stream:
                        responses.append(_to_json(response))
                        if len(responses) >= step.get("take", 1):
                            break
                return {"responses": responses}
            if hasattr(sub, f"{name}_page"):
                name = f"{name}_page"
            return _to_json(getattr(sub, name)(message, timeout=timeout))
        except self.rpc_error as error:
            found = {
                "code": error.code.name,
                "reason": error.reason,
                "domain": error.domain,
                "message": error.message,
                "metadata": dict(error.metadata),
                "fieldViolations": [
                    {"field": v.field, "description": v.description, "reason": v.reason}
                    for v in error.field_violations
                ],
                "requestId": error.request_id,
            }
            return Failure(found["code"], found)


# --- running -------------------------------------------------------------------------------------


def _check(step: dict[str, Any], result: Any, variables: dict[str, Any]) -> list[str]:
    expect = interpolate(step.get("expect") or {}, variables)
    if isinstance(result, Failure):
        if "error" not in expect:
            return [f"unexpected error {json.dumps(result.json)}"]
        return match(expect["error"], result.json, "error")
    if "error" in expect:
        return [f"expected error {_show(expect['error'])}, got {_show(result)}"]
    mode = step.get("mode", "unary")
    if mode == "unary" and "response" in expect:
        return match(expect["response"], result, "response")
    if mode == "pages" and "items" in expect:
        return match(expect["items"], result["items"], "items")
    if mode == "stream" and "responses" in expect:
        return match(expect["responses"], result["responses"], "responses")
    return []


def run_scenario(scenario: dict[str, Any], driver: Any, admin_key: str) -> None:
    """Run one scenario; pytest.skip when a required service is not served; fail on mismatch."""
    variables: dict[str, Any] = {"uid": secrets.token_hex(4), "adminKey": admin_key}
    requires = set(scenario.get("requires") or ())
    for index, step in enumerate(scenario["steps"], start=1):
        label = f"{scenario['name']} step {index}"
        if step.get("name"):
            label += f" ({step['name']})"
        label += f": {step['call']}"
        request = interpolate(step.get("request") or {}, variables)
        api_key = None if "as" not in step else str(interpolate(step["as"], variables))
        project = None if "project" not in step else str(interpolate(step["project"], variables))
        deadline = time.monotonic() + step.get("eventually", 0) / 1000
        service_name = step["call"].split(".")[0]
        expected_error = (step.get("expect") or {}).get("error") or {}
        while True:
            result = driver.invoke(step, request, api_key, project)
            if (
                isinstance(result, Failure)
                and result.code == "UNIMPLEMENTED"
                and expected_error.get("code") != "UNIMPLEMENTED"
            ):
                if service_name in requires:
                    pytest.skip(f"{service_name} answers UNIMPLEMENTED (not served yet)")
                pytest.fail(
                    f"{label}: UNIMPLEMENTED from {service_name}, which the scenario does not "
                    "list in requires"
                )
            errors = _check(step, result, variables)
            if not errors or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if errors:
            pytest.fail(f"{label}\n  " + "\n  ".join(errors), pytrace=False)
        for name, path in (step.get("capture") or {}).items():
            if isinstance(result, Failure):
                pytest.fail(f"{label}: cannot capture {name} from an error")
            variables[name] = lookup(result, path)


# conftest.py deselects these on PostgreSQL (see the module docstring).
SQLITE_ONLY_PARAMS = {"driver": ("connect-proto", "grpc-web")}


@pytest.fixture(scope="module", params=["grpc", "sdk", "connect-json", "connect-proto", "grpc-web"])
def driver(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Any]:
    made: Any
    if request.param == "grpc":
        made = GrpcDriver(server)
    elif request.param == "sdk":
        made = SdkDriver(server)
    else:
        made = ConnectDriver(server, request.param)
    yield made
    made.close()


def test_the_suite_has_scenarios() -> None:
    names = [s["name"] for s in SCENARIOS]
    assert len(names) >= 10
    assert len(set(names)) == len(names), "scenario names must be unique"
    for scenario in SCENARIOS:
        assert scenario["file"] == f"{scenario['name']}.yaml"
        for step in scenario["steps"]:
            _resolve(step["call"])
            assert step.get("mode", "unary") in ("unary", "pages", "stream")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_scenario(scenario: dict[str, Any], driver: Any, server: ServerProcess) -> None:
    run_scenario(scenario, driver, server.admin_key)


def test_matcher_rules() -> None:
    """The matching rules of tests/conformance/README.md, as the TypeScript runner has them."""
    assert match({"a": 1}, {"a": "1", "b": 2}) == []
    assert match("", None) == [] and match(0, None) == [] and match(False, None) == []
    assert match([1, 2], ["1"]) != []
    assert match({"$present": True}, "") != [] and match({"$present": False}, None) == []
    assert match({"$len": {"$gte": 2}}, [1, 2, 3]) == []
    assert match({"$contains": [{"x": 1}]}, [{"x": 2}, {"x": 1, "y": 0}]) == []
    assert match({"$contains": "bc"}, "abcd") == []
    assert match({"$regex": "^a.c$"}, "abc") == [] and match({"$regex": "^b"}, "abc") != []
    assert match({"$ne": "x"}, "y") == [] and match({"$ne": "x"}, "x") != []
    assert match({"$lte": 5}, "5") == [] and match({"$gte": 6}, "5") != []
    assert match({"a": 0.75}, {"a": 0.75}) == [] and match({"a": 1}, {"a": 1.0}) == []
    assert interpolate({"k": "${x}", "s": "id-${x}"}, {"x": 7}) == {"k": 7, "s": "id-7"}


class _FakeDriver:
    """Serves GetSession; every other call answers UNIMPLEMENTED."""

    def invoke(self, step: dict[str, Any], request: Any, api_key: Any, project: Any) -> Any:
        if step["call"] == "SessionService.GetSession":
            return {"session": {"sessionId": request["sessionId"]}}
        return Failure("UNIMPLEMENTED", {"code": "UNIMPLEMENTED"})


def _probe(requires: list[str]) -> dict[str, Any]:
    return {
        "name": "probe",
        "requires": requires,
        "steps": [
            {
                "call": "SessionService.GetSession",
                "request": {"sessionId": "s-${uid}"},
                "expect": {"response": {"session": {"sessionId": {"$regex": "^s-[0-9a-f]{8}$"}}}},
            },
            {"call": "RegistryService.GetAgent", "request": {"agentId": "a"}},
        ],
    }


def test_runner_skips_a_scenario_whose_required_service_is_unimplemented() -> None:
    with pytest.raises(pytest.skip.Exception, match="RegistryService answers UNIMPLEMENTED"):
        run_scenario(_probe(["SessionService", "RegistryService"]), _FakeDriver(), "k")


def test_runner_fails_never_passes_when_the_service_is_not_in_requires() -> None:
    with pytest.raises(pytest.fail.Exception, match="UNIMPLEMENTED from RegistryService"):
        run_scenario(_probe(["SessionService"]), _FakeDriver(), "k")


def test_runner_fails_on_a_mismatch() -> None:
    wrong = {
        "name": "wrong",
        "steps": [
            {
                "name": "get",
                "call": "SessionService.GetSession",
                "request": {"sessionId": "x"},
                "expect": {"response": {"session": {"sessionId": "y"}}},
            }
        ],
    }
    with pytest.raises(pytest.fail.Exception, match=r'sessionId: expected "y", got "x"'):
        run_scenario(wrong, _FakeDriver(), "k")


if __name__ == "__main__":
    # The scenarios as this runner reads them; the TypeScript test checks it reads the same.
    print(json.dumps(SCENARIOS, sort_keys=True))
