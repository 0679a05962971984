"""Sidecar containers (Squid, SSH tunnels) on the engine: made, configured, checked, watched.

A sidecar is made on the node's sidecar network (its way out, Docker's default ``bridge``
unless ``sidecar_network`` says otherwise) and joined to the algorithm network under its
alias at a fixed address of the network's service range (see ``networks``). Its
configuration files are copied into a volume of its own before it starts (owned by root,
with the modes asked for), mounted where the reference's images read them, so the
reference's infrastructure images work as they are.

Least privilege: every capability is dropped and only those a plan names are added back;
``no-new-privileges``; pids, memory and log limits; a read-only root file system with
tmpfs mounts where the program writes. Readiness is a TCP connection from the node to the
sidecar's address and port, polled for at most ``ready_timeout`` seconds; the sidecar's
own output is read meanwhile, so that a permanent failure (a wrong host key) is reported
at once with its reason.
"""
from __future__ import annotations

import asyncio
import io
import logging
import socket
import tarfile
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import docker.errors
from attrs import field, frozen
from docker.types import LogConfig
from docker.types import Mount as DockerMount

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.errors import docker_errors
from v6node.adapters.docker.networks import free_service_address, network_named
from v6node.domain.containers import LABEL_NODE, LABEL_TYPE, managed_labels
from v6node.domain.egress import Sidecar, SidecarExit
from v6node.domain.errors import ContainerError, ContainerNotFound, ImageNotFound, SidecarFailed

log = logging.getLogger(__name__)

LOG_TAIL = 16 * 1024
_POLL = 0.25  # seconds between readiness checks while a sidecar starts


@frozen
class SidecarPlan:
    """Everything that makes one sidecar (built by the Squid and SSH adapters)."""

    kind: str
    what: str  # for messages: "squid", "ssh tunnel 'db1'"
    name: str  # container name
    image: str
    alias: str  # its name on the algorithm network
    port: int  # where it listens there
    volume: str
    mount_target: str  # where the volume (its configuration files) is mounted
    files: Callable[[str], dict[str, tuple[bytes, int]]]  # its address -> {name: (content, mode)}
    command: tuple[str, ...] | None = None
    cap_add: tuple[str, ...] = ()
    tmpfs: dict[str, str] = field(factory=dict)
    # Its output -> the reason it can never become ready (None: it may still).
    diagnose: Callable[[str], str | None] = lambda output: None


class SidecarLauncher:
    """Makes and watches sidecars for one node on one engine."""

    def __init__(
        self,
        runtime: DockerContainerRuntime,
        node_name: str,
        sidecar_network: str,
        extra_hosts: tuple[tuple[str, str], ...] = (),
        ready_timeout: float = 60.0,
    ) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.sidecar_network = sidecar_network
        self.extra_hosts = dict(extra_hosts)
        self.ready_timeout = ready_timeout

    async def launch(self, plan: SidecarPlan, network: str, preferred: str | None = None) -> Sidecar:
        await ensure_local_image(self.runtime, plan.image, plan.what)
        container_id, address = await self.runtime.call(self._make, plan, network, preferred)
        sidecar = Sidecar(plan.kind, plan.name, container_id, plan.alias, address, plan.port)
        try:
            await self._until_ready(plan, sidecar)
        except BaseException:
            with suppress(ContainerError):
                await self.runtime.remove(container_id)
                await self.runtime.remove_volume(plan.volume)
            raise
        return sidecar

    async def wait(self, sidecar: Sidecar) -> SidecarExit:
        try:
            exit_ = await self.runtime.wait(sidecar.container_id)
            output = await self.runtime.logs(sidecar.container_id, LOG_TAIL)
        except ContainerNotFound:
            return SidecarExit(-1, "its container is gone")
        return SidecarExit(exit_.exit_code, last_lines(output) or "no output")

    # --- making it -------------------------------------------------------------------------
    def _make(self, plan: SidecarPlan, network: str, preferred: str | None) -> tuple[str, str]:
        api = self.runtime.api
        labels = {LABEL_TYPE: plan.kind, LABEL_NODE: self.node_name, **managed_labels(self.node_name)}
        self._remove_named(plan.name)
        try:
            network_named(api, self.sidecar_network)
        except ContainerNotFound:
            raise SidecarFailed(
                plan.what, f"the sidecar network {self.sidecar_network!r} does not exist (set sidecar_network)"
            ) from None
        address = free_service_address(network_named(api, network), preferred)
        with docker_errors(f"making the {plan.what} container {plan.name}"):
            with suppress(docker.errors.NotFound):
                api.remove_volume(plan.volume, force=True)
            api.create_volume(plan.volume, labels=labels)
            host_config = api.create_host_config(
                mounts=[DockerMount(target=plan.mount_target, source=plan.volume, type="volume")],
                cap_drop=["ALL"],
                cap_add=list(plan.cap_add) or None,
                security_opt=["no-new-privileges"],
                pids_limit=256,
                mem_limit=512 * 1024 * 1024,
                memswap_limit=512 * 1024 * 1024,
                network_mode=self.sidecar_network,
                read_only=True,
                tmpfs=dict(plan.tmpfs) or None,
                extra_hosts=self.extra_hosts or None,
                log_config=LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m", "max-file": "2"}),
            )
            created = api.create_container(
                plan.image,
                command=list(plan.command) if plan.command is not None else None,
                name=plan.name,
                labels=labels,
                host_config=host_config,
                networking_config=api.create_networking_config(
                    {self.sidecar_network: api.create_endpoint_config()}
                ),
            )
            container_id: str = created["Id"]
            try:
                api.connect_container_to_network(container_id, network, aliases=[plan.alias], ipv4_address=address)
                api.put_archive(container_id, plan.mount_target, _tar(plan.files(address)))
                api.start(container_id)
            except BaseException:
                with suppress(docker.errors.DockerException):
                    api.remove_container(container_id, force=True)
                raise
        return container_id, address

    def _remove_named(self, name: str) -> None:
        """A sidecar of an earlier node process (killed, or its clean-up failed)."""
        with docker_errors(f"removing the old container {name}"):
            with suppress(docker.errors.NotFound):
                self.runtime.api.remove_container(name, force=True)

    # --- waiting until it is ready -----------------------------------------------------------
    async def _until_ready(self, plan: SidecarPlan, sidecar: Sidecar) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if await _accepts(sidecar.address, sidecar.port):
                return
            state, output = await self.runtime.call(self._state, sidecar.container_id)
            reason = plan.diagnose(output)
            if reason is not None:
                raise SidecarFailed(plan.what, reason)
            if state.get("Status") != "running":
                raise SidecarFailed(
                    plan.what,
                    f"its container stopped (exit code {state.get('ExitCode')}): {last_lines(output) or 'no output'}",
                )
            if time.monotonic() > deadline:
                raise SidecarFailed(
                    plan.what,
                    f"not ready after {self.ready_timeout:.0f} s (nothing listens at {sidecar.address}:{sidecar.port}); "
                    f"its output: {last_lines(output) or 'none'}",
                )
            await asyncio.sleep(_POLL)

    def _state(self, container_id: str) -> tuple[dict[str, Any], str]:
        api = self.runtime.api
        with docker_errors(f"inspecting sidecar {container_id[:12]}"):
            state = api.inspect_container(container_id)["State"]
            output = api.logs(container_id, stdout=True, stderr=True, tail=200).decode("utf-8", "replace")
        return dict(state), output


async def ensure_local_image(runtime: DockerContainerRuntime, image: str, what: str) -> None:
    """A local image is used as it is; only a missing one is pulled."""
    if await runtime.local_image_id(image) is not None:
        return
    try:
        await runtime.ensure_image(image, require_pull=False)
    except ImageNotFound as exc:
        raise SidecarFailed(what, f"the image {image} is not present locally and could not be pulled ({exc})") from exc


async def _accepts(address: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port, family=socket.AF_INET), 2.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
    return True


def last_lines(output: str, count: int = 5) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(content), mode, 0, 0, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
