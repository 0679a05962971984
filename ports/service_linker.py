"""The operator's own containers, made reachable to algorithms by name (``docker_services``)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from v6node.domain.egress import LinkedService, ServiceLink


@runtime_checkable
class ServiceLinker(Protocol):
    """Connects an existing container to the algorithm network under its aliases, and
    disconnects it again. The container belongs to the operator: it is never created,
    stopped or removed.

    Errors: ``ContainerNotFound`` (no container of that name), ``ContainerError``,
    ``RuntimeUnavailable``. Both calls are idempotent: linking a container that is already
    linked with those aliases keeps it as it is; unlinking one that is not linked (or gone)
    does nothing.
    """

    async def link(self, service: ServiceLink, network: str) -> LinkedService: ...

    async def unlink(self, service: ServiceLink, network: str) -> None: ...
