"""Generate ``agentplane/_services.py``: one typed sub-client per service, sync and async; and
the TypeScript SDK's list of services, ``sdk-typescript-gen/src/gen/services.ts``.

    python sdk-python/scripts/gen_services.py          # rewrite the files
    python sdk-python/scripts/gen_services.py --check  # exit 1 if one is stale

Why a generator and not methods built at import time: the per-RPC layer is 66 RPCs x 2 (sync and
async) of pure repetition, which we do not want to hand-write; generating it from the
descriptors at import time would avoid a file, but then editors, type checkers and readers see
nothing (no signatures, no docstrings, no go-to-definition). A committed, generated module has
real keyword-argument signatures typed from the messages, the contract's comments as
docstrings, and reviewable diffs when the contract changes — the same choice temporalio's
``scripts/gen_bridge_client.py`` -> ``services_generated.py`` makes. tests/sdk checks that the
file is fresh, so a contract change that is not regenerated fails the suite.

Inputs: the contract's services (``agentplane.contract.contract_services``, from the generated
modules: structure) and ``proto/`` (comments).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor
from google.protobuf.descriptor_pb2 import MethodOptions

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "sdk-python/src/agentplane/_services.py"
TS_OUT = ROOT / "sdk-typescript-gen/src/gen/services.ts"
PROTO = ROOT / "proto"
sys.path.insert(0, str(ROOT / "sdk-python/src"))

from agentplane.contract import ContractService, contract_services  # noqa: E402

# Server streams that are not watches (token generation) get this deadline by default.
STREAM_TIMEOUT = 300.0
RESERVED = {"request", "timeout", "retry", "headers", "self"}
WELL_KNOWN = {
    "google.protobuf.Struct": ("Mapping[str, Any] | struct_pb2.Struct", "struct_pb2"),
    "google.protobuf.Timestamp": ("datetime.datetime | timestamp_pb2.Timestamp", "timestamp_pb2"),
    "google.protobuf.Duration": ("datetime.timedelta | duration_pb2.Duration", "duration_pb2"),
    "google.protobuf.FieldMask": ("Iterable[str] | field_mask_pb2.FieldMask", "field_mask_pb2"),
}
SCALARS = {
    descriptor.FieldDescriptor.TYPE_STRING: "str",
    descriptor.FieldDescriptor.TYPE_BYTES: "bytes",
    descriptor.FieldDescriptor.TYPE_BOOL: "bool",
    descriptor.FieldDescriptor.TYPE_DOUBLE: "float",
    descriptor.FieldDescriptor.TYPE_FLOAT: "float",
}


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


# --- comments from proto/ --------------------------------------------------------------------


def proto_comments(path: Path) -> dict[str, str]:
    """Leading comments of services ("Service") and RPCs ("Service.Method")."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    service = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            pending.append(stripped[2:].removeprefix(" "))
            continue
        if match := re.match(r"service (\w+)", stripped):
            service = match.group(1)
            comments[service] = "\n".join(pending)
        elif match := re.match(r"rpc (\w+)\s*\(", stripped):
            comments[f"{service}.{match.group(1)}"] = "\n".join(pending)
        pending = []
    return comments


def docstring(text: str, indent: str) -> list[str]:
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip()
    if not text:
        return []
    paragraphs = re.split(r"\n(?=Errors:)|\n\s*\n", text)
    width = 100 - len(indent)
    lines: list[str] = []
    for i, paragraph in enumerate(paragraphs):
        if i:
            lines.append("")
        first = width - 3 if not i else width  # the first line starts with the quotes
        lines.extend(textwrap.wrap(" ".join(paragraph.split()), width=first))
    lines[0] = '"""' + lines[0]
    if len(lines) == 1 and len(indent) + len(lines[0]) + 3 <= 100:
        return [f'{indent}{lines[0]}"""']
    return [f"{indent}{line}" if line else "" for line in lines] + [f'{indent}"""']


# --- types -----------------------------------------------------------------------------------


class Modules:
    """Python module aliases for the .proto files whose types the signatures name."""

    def __init__(self) -> None:
        self.aliases: dict[str, tuple[str, str]] = {}  # file name -> (package, module)
        self.wkt: set[str] = set()

    def alias(self, file: descriptor.FileDescriptor) -> str:
        package = file.package
        module = Path(file.name).stem + "_pb2"
        known = self.aliases.get(file.name)
        if known is None:
            for other_package, other_module in self.aliases.values():
                if other_module == module and other_package != package:
                    raise SystemExit(f"two generated modules are called {module}")
            self.aliases[file.name] = (package, module)
        return module

    def message(self, message: descriptor.Descriptor) -> str:
        if message.full_name in WELL_KNOWN:
            annotation, module = WELL_KNOWN[message.full_name]
            self.wkt.add(module)
            return annotation
        return f"{self.qualified(message)} | Mapping[str, Any]"

    def qualified(self, item: descriptor.Descriptor | descriptor.EnumDescriptor) -> str:
        relative = item.full_name.removeprefix(item.file.package + ".")
        return f"{self.alias(item.file)}.{relative}"

    def field(self, field: descriptor.FieldDescriptor) -> str:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key = self.single(field.message_type.fields_by_name["key"])
            value = self.single(field.message_type.fields_by_name["value"])
            return f"Mapping[{key}, {value}]"
        single = self.single(field)
        if field.is_repeated:
            return f"Iterable[{single}]"
        return single

    def single(self, field: descriptor.FieldDescriptor) -> str:
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return f"{self.qualified(field.enum_type)}.ValueType | str"
        return SCALARS.get(field.type, "int")


# --- the generated module ---------------------------------------------------------------------


@dataclass
class Rpc:
    service: descriptor.ServiceDescriptor
    method: descriptor.MethodDescriptor
    comment: str

    @property
    def spec_name(self) -> str:
        return f"_{snake(self.service.name).upper()}_{snake(self.method.name).upper()}"

    @property
    def items_field(self) -> descriptor.FieldDescriptor | None:
        inputs, outputs = self.method.input_type.fields_by_name, self.method.output_type
        if "page_token" not in inputs or "next_page_token" not in outputs.fields_by_name:
            return None
        repeated = [f for f in outputs.fields if f.is_repeated and f.message_type is not None]
        return repeated[0] if len(repeated) == 1 else None


def spec_source(rpc: Rpc, modules: Modules) -> list[str]:
    method = rpc.method
    level = method.GetOptions().idempotency_level
    idempotent = level in (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)
    items = rpc.items_field
    lines = [
        f"{rpc.spec_name} = MethodSpec(",
        f'    path="/{rpc.service.full_name}/{method.name}",',
        f"    request_type={modules.qualified(method.input_type)},",
        f"    response_type={modules.qualified(method.output_type)},",
        f"    idempotent={idempotent},",
        f"    has_request_id={'request_id' in method.input_type.fields_by_name},",
    ]
    if method.server_streaming:
        lines.append("    streaming=True,")
        if method.name.startswith("Watch"):
            lines.append("    long_lived=True,")
        else:
            lines += [f"    default_timeout={STREAM_TIMEOUT},", "    long_lived=True,"]
    if items is not None:
        lines.append(f'    items_field="{items.name}",')
    lines.append(")")
    return lines


def method_source(rpc: Rpc, modules: Modules, *, is_async: bool, page: bool) -> list[str]:
    method = rpc.method
    items = rpc.items_field
    listing = items is not None and not page
    name = snake(method.name) + ("_page" if page else "")
    request_type = modules.qualified(method.input_type)
    response_type = modules.qualified(method.output_type)
    fields = [f for f in method.input_type.fields if not (listing and f.name == "page_token")]
    for f in fields:
        if f.name in RESERVED:
            raise SystemExit(f"{method.full_name}: field {f.name} collides with a call option")
    if method.server_streaming:
        stream = "AsyncStream" if is_async else "SyncStream"
        returns, call, prefix = f"{stream}[{response_type}]", "stream", "def"
    elif listing:
        assert items is not None
        item_type = modules.qualified(items.message_type)
        iterator = "AsyncIterator" if is_async else "Iterator"
        returns, call, prefix = f"{iterator}[{item_type}]", "paginate", "def"
    else:
        returns, call = response_type, "unary"
        prefix = "async def" if is_async else "def"
    lines = [
        f"    {prefix} {name}(",
        "        self,",
        f"        request: {request_type} | None = None,",
        "        /,",
        "        *,",
    ]
    for f in fields:
        lines.append(f"        {f.name}: {modules.field(f)} | None = None,")
    lines += [
        "        timeout: float | None = None,",
        "        retry: RetryPolicy | bool | None = None,",
        "        headers: Headers | None = None,",
        f"    ) -> {returns}:",
    ]
    comment = rpc.comment
    if listing:
        comment += (
            "\n\nReturns an iterator over the items of every page; it sends no request until "
            f"the first item is read. {snake(method.name)}_page returns one page."
        )
    elif page:
        comment += "\n\nReturns one page: pass its next_page_token as page_token for the next."
    lines += docstring(comment, "        ")
    arguments = []
    for f in fields:
        value = f.name
        if f.message_type is not None and f.message_type.full_name == "google.protobuf.FieldMask":
            value = f"_mask({f.name})"
        arguments.append(f"            {f.name}={value},")
    if arguments:
        lines += [
            "        message, owned = _request(",
            f"            {request_type},",
            "            request,",
            *arguments,
            "        )",
        ]
    else:
        lines.append(f"        message, owned = _request({request_type}, request)")
    awaited = "await " if is_async and call == "unary" else ""
    lines += [
        f"        return {awaited}self._transport.{call}(",
        f"            {rpc.spec_name},",
        "            message,",
        "            owned=owned,",
        "            timeout=timeout,",
        "            retry=retry,",
        "            headers=headers,",
        "        )",
    ]
    return lines


def generate() -> str:
    modules = Modules()
    specs: list[str] = []
    classes: list[str] = []
    registry: list[str] = []
    grpc_modules: list[tuple[str, str]] = []
    for contract_service in contract_services():
        attribute, package = contract_service.client_attribute, contract_service.package
        service_file = contract_service.module.rsplit(".", 1)[1].removesuffix("_pb2")
        pb2 = importlib.import_module(contract_service.module)
        comments = proto_comments(PROTO / package.replace(".", "/") / f"{service_file}.proto")
        service = contract_service.descriptor
        modules.alias(pb2.DESCRIPTOR)
        grpc_modules.append((package, f"{service_file}_pb2_grpc"))
        rpcs = [
            Rpc(service, m, comments.get(f"{service.name}.{m.name}", "")) for m in service.methods
        ]
        specs.append(f"# --- {service.full_name}")
        for rpc in rpcs:
            specs += spec_source(rpc, modules)
        for is_async in (False, True):
            class_name = ("Async" if is_async else "") + f"{service.name}Client"
            transport = "AsyncTransport" if is_async else "SyncTransport"
            body = [
                "",
                "",
                f"class {class_name}:",
                *docstring(
                    comments.get(service.name, "")
                    + f"\n\nReached as Client.{attribute}"
                    + (" on an AsyncClient" if is_async else "")
                    + "; the generated stub is .stub.",
                    "    ",
                ),
                "",
                f'    service_name = "{service.full_name}"',
                "",
                f"    def __init__(self, transport: {transport} | NullTransport) -> None:",
                "        self._transport = transport",
                f"        self.stub: {service_file}_pb2_grpc.{service.name}Stub | None = (",
                f"            {service_file}_pb2_grpc.{service.name}Stub(transport.channel)",
                "            if transport.channel is not None",
                "            else None",
                "        )",
            ]
            for rpc in rpcs:
                body.append("")
                body += method_source(rpc, modules, is_async=is_async, page=False)
                if rpc.items_field is not None:
                    body.append("")
                    body += method_source(rpc, modules, is_async=is_async, page=True)
            classes += body
        registry.append(f'    ("{attribute}", {service.name}Client, Async{service.name}Client),')
    imports: dict[str, list[str]] = {}
    for package, module in [*modules.aliases.values(), *grpc_modules]:
        imports.setdefault(package, []).append(module)
    message_imports = []
    for package in sorted(imports):
        names = sorted(set(imports[package]))
        joined = ", ".join(names)
        if len(f"from {package} import {joined}") <= 100:
            message_imports.append(f"from {package} import {joined}")
        else:
            message_imports += [f"from {package} import (", *(f"    {n}," for n in names), ")"]
    wkt = ", ".join(sorted(modules.wkt))
    header = f'''# Generated by sdk-python/scripts/gen_services.py from the contract. DO NOT EDIT.
# ruff: noqa: ASYNC109 - `timeout` is the gRPC deadline sent to the server, not a local wait.
"""Typed sub-clients, one per Agentplane service, sync and async.

Every method takes either a request message or its fields as keyword arguments, plus
``timeout`` (seconds, one deadline for all attempts), ``retry`` (a RetryPolicy, or False) and
``headers`` (extra call metadata). List RPCs return iterators that hide page tokens
(``*_page`` methods return one page); server streams return SyncStream/AsyncStream.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from google.protobuf import {wkt}
from google.protobuf.message import Message

from agentplane._retry import RetryPolicy
from agentplane._transport import (
    AsyncStream,
    AsyncTransport,
    Headers,
    MethodSpec,
    NullTransport,
    SyncStream,
    SyncTransport,
)'''
    helpers = '''
M = TypeVar("M", bound=Message)

__all__ = ["SERVICE_CLIENTS"]


def _request(message_type: type[M], request: M | None, **fields: Any) -> tuple[M, bool]:
    """The request to send, and whether the SDK owns it (may fill its request_id)."""
    given = {name: value for name, value in fields.items() if value is not None}
    if request is not None:
        if given:
            raise TypeError(f"pass a {message_type.__name__} or keyword arguments, not both")
        return request, False
    return message_type(**given), True


def _mask(paths: Iterable[str] | field_mask_pb2.FieldMask | None) -> Any:
    if paths is None or isinstance(paths, (field_mask_pb2.FieldMask, Mapping)):
        return paths
    if isinstance(paths, str):
        paths = paths.split(",")
    return field_mask_pb2.FieldMask(paths=list(paths))


'''
    parts = [
        header,
        *message_imports,
        helpers,
        *specs,
        *classes,
        "",
        "",
        "# (attribute on Client, sync sub-client, async sub-client), in contract order.",
        "SERVICE_CLIENTS = (",
        *registry,
        ")",
        "",
    ]
    source = "\n".join(parts)
    source = re.sub(r"\n{3,}(?=[A-Z_#])", "\n\n\n", source)
    return source


def typescript_services(services: tuple[ContractService, ...]) -> str:
    """The TypeScript SDK's SERVICES: each service's descriptor under its client's name."""
    lines = [
        "// Generated by sdk-python/scripts/gen_services.py from the contract. DO NOT EDIT.",
        "",
    ]
    for service in sorted(services, key=lambda s: s.name):
        path = service.module.replace(".", "/").removesuffix("_pb2")
        lines.append(f'import {{ {service.name} }} from "./{path}_pb.js";')
    lines += [
        "",
        "/** Each service, under its client's name on AgentplaneClient (as in the Python SDK). */",
        "export const SERVICES = {",
        *(f"  {s.client_attribute}: {s.name}," for s in services),
        "} as const;",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args()
    outputs = {OUT: generate(), TS_OUT: typescript_services(contract_services())}
    if args.check:
        stale = [
            path
            for path, source in outputs.items()
            if not path.exists() or path.read_text() != source
        ]
        for path in stale:
            print(f"{path} is stale: run python sdk-python/scripts/gen_services.py")
        return 1 if stale else 0
    for path, source in outputs.items():
        path.write_text(source)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
