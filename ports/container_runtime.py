"""The container engine."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from v6node.domain.containers import ContainerExit, ContainerInfo, ContainerSpec, HostRun

# Bytes of a container's output read back when the caller names no limit.
DEFAULT_LOG_LIMIT = 10 * 1024 * 1024
# Characters of one followed log line; a longer one is handed on in pieces.
FOLLOW_LINE_LIMIT = 16 * 1024


@runtime_checkable
class ContainerRuntime(Protocol):
    """Containers, networks and volumes, all labelled so they can be found again.

    Errors: ``RuntimeUnavailable`` (engine unreachable, retryable), ``ImageNotFound``,
    ``ContainerStartFailed``, ``ContainerNotFound``. ``ensure_*`` and ``remove*`` are
    idempotent. Cancelling ``wait`` stops waiting, not the container.

    A "container" is what runs one spec: a container on one engine, or a one-task job on a
    cluster (Docker Swarm: a service of one task that never restarts, whose id is the
    "container id").
    What a cluster cannot give that one engine does, each implementation states; callers
    rely only on what is said here:

    - ``wait`` may end with ``ContainerExit.lost`` set (exit code -1) when the host that ran
      the container went away, so nobody can tell how it ended;
    - ``oom_killed`` may be unknown (False) where the engine does not report it;
    - ``kill`` ends the container with exit code 137 as seen by ``wait``; its output up to
      then stays readable with ``logs`` until ``remove``;
    - volumes are only guaranteed to be visible to the containers of this runtime, not
      to the host; bind-mount sources must exist, at the same path, wherever a container
      may run (``run_on_every_host`` lets the caller check that);
    - ``ensure_network``'s address is where the node's proxy listens, and
      ``expose_proxy`` says where the containers on the network find it.
    """

    async def ping(self) -> None:
        """Raises ``RuntimeUnavailable`` when the engine does not answer."""

    async def login(self, registry: str, username: str, password: str) -> None:
        """Log in to a registry for later pulls; raises ``ContainerError`` when refused or unreachable."""

    async def ensure_network(self, name: str, labels: dict[str, str]) -> str:
        """Create (or reuse) an internal network on which containers cannot reach each
        other, only the host's gateway address; returns that gateway IP address.

        An existing network with other settings is replaced when nothing uses it, else
        ``ContainerError``.
        """

    async def expose_proxy(self, network: str, host: str, port: int, labels: dict[str, str]) -> tuple[str, int]:
        """Make a proxy listening at ``host:port`` (the address ``ensure_network`` gave) reachable
        from containers on ``network``; returns the host and port they use. Idempotent: a
        relay made for another address is replaced."""

    async def run_on_every_host(self, spec: ContainerSpec) -> list[HostRun]:
        """Run ``spec`` once on every host that may run containers (one, for a single engine)
        and wait for all; returns each host's exit code and output. Nothing is left behind."""

    async def ensure_volume(self, name: str, labels: dict[str, str]) -> None: ...

    async def remove_volume(self, name: str) -> None:
        """Remove a volume; a volume that is already gone is not an error."""

    async def list_volumes(self, labels: dict[str, str]) -> list[str]:
        """Names of the volumes carrying all of ``labels``."""

    async def ensure_image(self, image: str, require_pull: bool) -> str:
        """Pull ``image``; fall back to a local copy when ``require_pull`` is false.

        Returns "pulled" or "local"; raises ``ImageNotFound`` with the reason otherwise.
        """

    async def local_image_id(self, image: str) -> str | None:
        """The id of the local image ``image`` refers to, None when there is none (no pull)."""

    async def run(self, spec: ContainerSpec) -> str:
        """Create and start a container; returns its id."""

    async def wait(self, container_id: str) -> ContainerExit:
        """Until the container exits; event-driven, no polling loop."""

    async def logs(self, container_id: str, limit: int = DEFAULT_LOG_LIMIT) -> str:
        """The last ``limit`` bytes of stdout and stderr so far, decoded as UTF-8
        (undecodable bytes replaced), after a line saying how much was left out, if any.
        Memory stays bounded by ``limit`` whatever the container printed."""

    def follow_logs(self, container_id: str) -> AsyncIterator[str]:
        """stdout and stderr as they are written, one line at a time (a very long line comes in
        pieces of at most ``FOLLOW_LINE_LIMIT`` characters), from the container's start until it
        stops; closing the iterator stops following. Held in memory: one line."""

    async def kill(self, container_id: str) -> None: ...

    async def remove(self, container_id: str) -> None:
        """Force-remove; a container that is already gone is not an error."""

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        """Containers (running or not) carrying all of ``labels``."""

    async def remove_labelled(self, labels: dict[str, str]) -> int:
        """Remove every container, then network and volume with ``labels``; returns how many.

        A network is removed only once the containers on it are gone. Everything is tried;
        what could not be removed is raised at the end as ``ResourcesLeft`` (``left`` names
        each item and why). ``RuntimeUnavailable`` when the engine cannot be reached.
        """
