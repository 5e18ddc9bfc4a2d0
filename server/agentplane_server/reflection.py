"""Server reflection, v1alpha and v1, so `grpcurl list` and `describe` work with any client.

grpcio-reflection ships only v1alpha. grpc.reflection.v1 is the same protocol under a new
package name (identical messages and field numbers), so the v1 service is served by the same
servicer, and its descriptor is registered by renaming a copy of the v1alpha file.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE = "grpc.reflection.v1.ServerReflection"


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1_SERVICE)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = "grpc/reflection/v1/reflection.proto"
    file.package = "grpc.reflection.v1"
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # proto2: assigning "" would mark it present
                field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    pool.Add(file)


class _ReflectionServicer(reflection.aio.ReflectionServicer):
    """Also resolves method symbols (`pkg.Service.Method`), which the upb descriptor pool does
    not find by name, so `grpcurl describe pkg.Service.Method` works."""

    def _file_containing_symbol(self, request, fully_qualified_name):  # type: ignore[no-untyped-def]
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if response.HasField("error_response") and "." in fully_qualified_name:
            service, _, method = fully_qualified_name.rpartition(".")
            try:
                if self._pool.FindServiceByName(service).FindMethodByName(method) is not None:
                    return super()._file_containing_symbol(request, service)
            except KeyError:
                pass
        return response


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    _register_v1_descriptor()
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    servicer = _ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (reflection.SERVICE_NAME, V1_SERVICE):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
