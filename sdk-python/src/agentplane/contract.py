"""The services of the Agentplane contract, found in the generated modules of the
``agentplane.<name>.v1`` packages: the one list that the server, the SDK generators and the tests
use, so that adding a service to the contract adds it everywhere.

    from agentplane.contract import contract_services
    [s.full_name for s in contract_services()]
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.descriptor import ServiceDescriptor

from agentplane._contract import CONTRACT_DIGEST, CONTRACT_VERSION

__all__ = ["CONTRACT_DIGEST", "CONTRACT_VERSION", "ContractService", "contract_services"]

_ROOT = Path(__file__).parent
# The SDKs name a sub-client after its package, in the plural where the package is named after
# one record of a collection (Client.sessions, Client.traces).
_PLURAL = {"session": "sessions", "trace": "traces"}


@dataclass(frozen=True)
class ContractService:
    """One service of the contract."""

    descriptor: ServiceDescriptor
    module: str  # the generated *_pb2 module that declares it

    @property
    def full_name(self) -> str:
        return self.descriptor.full_name

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def package(self) -> str:
        return self.descriptor.file.package

    @property
    def grpc_module(self) -> str:
        """The generated module with its stub, servicer base class and add_*_to_server."""
        return f"{self.module}_grpc"

    @property
    def client_attribute(self) -> str:
        """The sub-client's name on the SDKs' clients (Client.sessions, client.admin)."""
        short = self.package.split(".")[1]
        return _PLURAL.get(short, short)


@functools.cache
def contract_services() -> tuple[ContractService, ...]:
    """Every service of the contract, ordered by package, file and declaration."""
    found: list[ContractService] = []
    for package in sorted(p.name for p in pkgutil.iter_modules([str(_ROOT)]) if p.ispkg):
        for version_dir in sorted((_ROOT / package).glob("v[0-9]*")):
            for path in sorted(version_dir.glob("*_pb2.py")):
                name = f"agentplane.{package}.{version_dir.name}.{path.stem}"
                module = importlib.import_module(name)
                for service in module.DESCRIPTOR.services_by_name.values():
                    found.append(ContractService(service, name))
    return tuple(found)
