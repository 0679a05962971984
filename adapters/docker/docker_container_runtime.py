"""ContainerRuntime on the Docker Engine, through the docker SDK (blocking calls run in thread pools)."""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

import docker
import docker.errors
import requests
from docker.types import DeviceRequest
from docker.types import Mount as DockerMount
from docker.utils import parse_repository_tag

from v6node.adapters.docker.errors import docker_errors, status_code, translate
from v6node.adapters.docker.logs import follow, log_config, read_tail
from v6node.adapters.docker.host_paths import mount_source, of_own_container
from v6node.adapters.docker.networks import ensure_network, remove_network
from v6node.adapters.docker.pulls import PullProgress
from v6node.adapters.docker.waits import PendingWait, blocking_wait
from v6node.domain.containers import ContainerExit, ContainerInfo, ContainerSpec, HostRun
from v6node.domain.errors import (
    ContainerError,
    ContainerNotFound,
    ContainerStartFailed,
    ImageNotFound,
    ResourcesLeft,
    RuntimeUnavailable,
)
from v6node.ports.container_runtime import DEFAULT_LOG_LIMIT, ContainerRuntime

log = logging.getLogger(__name__)

T = TypeVar("T")

_EXITED = re.compile(r"^Exited \((-?\d+)\)")


def _label_filter(labels: dict[str, str]) -> dict[str, list[str]]:
    return {"label": [f"{key}={value}" for key, value in labels.items()]}


def _container_info(summary: dict[str, Any]) -> ContainerInfo:
    exited = _EXITED.match(summary.get("Status") or "")
    names = summary.get("Names") or [""]
    return ContainerInfo(
        id=summary["Id"], name=names[0].lstrip("/"), labels=dict(summary.get("Labels") or {}),
        running=summary.get("State") == "running", exit_code=int(exited.group(1)) if exited else None,
    )


class DockerContainerRuntime(ContainerRuntime):
    """The ``ContainerRuntime`` port on a Docker Engine.

    ``base_url`` (e.g. ``unix:///var/run/docker.sock``) or, when None, the usual
    ``DOCKER_HOST`` environment. Nothing connects before the first call. Short calls share
    ``max_calls`` threads and time out after ``timeout`` seconds; every ``wait`` holds one
    of ``max_waits`` threads and has no timeout. The HTTP connection pool is sized for both.
    ``own_container`` (a node that runs in a container: that container's name) makes bind
    mounts name the host's paths (``HostPaths``). Call ``close()`` when done.
    """

    def __init__(
        self, base_url: str | None = None, *, timeout: float = 60, max_calls: int = 16, max_waits: int = 256,
        own_container: str | None = None,
    ) -> None:
        self._base_url = base_url
        self._host_paths = of_own_container(lambda name: self._api.inspect_container(name), own_container)
        self._timeout = timeout
        self._pool_size = max_calls + max_waits
        self._calls = ThreadPoolExecutor(max_workers=max_calls, thread_name_prefix="docker-call")
        self._waits = ThreadPoolExecutor(max_workers=max_waits, thread_name_prefix="docker-wait")
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._pending: set[PendingWait] = set()

    def close(self) -> None:
        """Stop pending waits, the thread pools and the HTTP connections (idempotent)."""
        for pending in list(self._pending):
            pending.abort()
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._waits.shutdown(wait=False, cancel_futures=True)
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- plumbing -------------------------------------------------------------------------
    def _docker(self) -> docker.DockerClient:
        """The client, created on first use (creating it asks the engine for its API version)."""
        with self._client_lock:
            if self._client is None:
                with docker_errors("connecting to the Docker engine"):
                    if self._base_url is None:
                        self._client = docker.from_env(timeout=self._timeout, max_pool_size=self._pool_size)
                    else:
                        self._client = docker.DockerClient(
                            base_url=self._base_url, timeout=self._timeout, max_pool_size=self._pool_size
                        )
            return self._client

    @property
    def _api(self) -> docker.APIClient:
        return self._docker().api

    @property
    def api(self) -> docker.APIClient:
        """The engine's client, for the other Docker adapters (sidecars, firewall, links)."""
        return self._api

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._calls, functools.partial(fn, *args))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking engine call on this runtime's threads (for the other Docker adapters)."""
        return await self._call(fn, *args)

    # --- the port -------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._call(self._ping)

    def _ping(self) -> None:
        with docker_errors("ping"):
            self._api.ping()

    async def ensure_network(self, name: str, labels: dict[str, str]) -> str:
        return await self._call(self._ensure_network, name, labels)

    def _ensure_network(self, name: str, labels: dict[str, str]) -> str:
        return ensure_network(self._api, name, labels)

    async def expose_proxy(self, network: str, host: str, port: int, labels: dict[str, str]) -> tuple[str, int]:
        return host, port  # the proxy listens on the network's gateway: nothing in between

    async def run_on_every_host(self, spec: ContainerSpec) -> list[HostRun]:
        container_id = await self.run(spec)
        try:
            exit_ = await self.wait(container_id)
            return [HostRun("local", exit_.exit_code, await self.logs(container_id))]
        finally:
            await self.remove(container_id)

    async def login(self, registry: str, username: str, password: str) -> None:
        await self._call(self._login, registry, username, password)

    def _login(self, registry: str, username: str, password: str) -> None:
        with docker_errors(f"logging in to {registry}"):
            self._docker().login(username=username, password=password, registry=registry)

    async def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        await self._call(self._ensure_volume, name, labels)

    def _ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        with docker_errors(f"volume {name}"):
            try:
                self._api.inspect_volume(name)
            except docker.errors.NotFound:
                self._api.create_volume(name, labels=labels)

    async def local_image_id(self, image: str) -> str | None:
        return await self._call(self._local_image_id, image)

    def _local_image_id(self, image: str) -> str | None:
        with docker_errors(f"image {image}"):
            try:
                return str(self._api.inspect_image(image)["Id"])
            except docker.errors.NotFound:
                return None

    async def remove_volume(self, name: str) -> None:
        await self._call(self._remove_volume, name)

    def _remove_volume(self, name: str) -> None:
        with docker_errors(f"removing volume {name}"):
            try:
                self._api.remove_volume(name, force=True)
            except docker.errors.NotFound:
                pass

    async def list_volumes(self, labels: dict[str, str]) -> list[str]:
        return await self._call(self._list_volumes, labels)

    def _list_volumes(self, labels: dict[str, str]) -> list[str]:
        with docker_errors("listing volumes"):
            return sorted(v["Name"] for v in self._api.volumes(filters=_label_filter(labels)).get("Volumes") or [])

    async def ensure_image(self, image: str, require_pull: bool) -> str:
        return await self._call(self._ensure_image, image, require_pull)

    def _ensure_image(self, image: str, require_pull: bool) -> str:
        pull_error = self._pull(image)
        if pull_error is None:
            return "pulled"
        with docker_errors(f"image {image}", not_found=ImageNotFound):
            try:
                self._api.inspect_image(image)
            except docker.errors.NotFound:
                raise ImageNotFound(
                    f"{image} could not be pulled ({pull_error}) and there is no local copy"
                ) from None
        if require_pull:
            raise ImageNotFound(
                f"{image} could not be pulled ({pull_error}); a local copy exists, but "
                "require_algorithm_pull is true, which forbids using it"
            )
        log.info("pulling %s failed (%s); using the local copy", image, pull_error)
        return "local"

    def _pull(self, image: str) -> str | None:
        """None on success, else why the pull failed (the engine also reports errors mid-stream)."""
        repository, tag = parse_repository_tag(image)
        progress = PullProgress(image)
        log.debug("pulling %s", image)
        try:
            for message in self._api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if message.get("error"):
                    return str(message.get("errorDetail", {}).get("message") or message["error"])
                progress.update(message)
        except docker.errors.APIError as exc:
            return str(exc.explanation or exc)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise translate(exc, f"pulling {image}", not_found=ImageNotFound) from exc
        log.info("pulled %s (%s)", image, progress.summary())
        return None

    async def run(self, spec: ContainerSpec) -> str:
        return await self._call(self._run, spec)

    def _run(self, spec: ContainerSpec) -> str:
        what = f"starting container {spec.name} ({spec.image})"
        with docker_errors(what, not_found=ContainerStartFailed, failed=ContainerStartFailed):
            api = self._api
            host_config = api.create_host_config(
                mounts=[
                    DockerMount(target=m.target, source=mount_source(self._host_paths, m), type=m.kind, read_only=m.read_only)
                    for m in spec.mounts
                ],
                cap_drop=list(spec.cap_drop) or None,
                security_opt=list(spec.security_opt) or None,
                pids_limit=spec.pids_limit,
                mem_limit=spec.mem_limit,
                # Without this the container may use as much swap again as its memory limit.
                memswap_limit=spec.mem_limit,
                nano_cpus=spec.nano_cpus,
                device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if spec.gpu else None,
                network_mode=spec.network,
                read_only=spec.read_only_root or None,
                tmpfs=dict(spec.tmpfs) or None, extra_hosts=dict(spec.extra_hosts) or None,
                log_config=log_config(spec.log_size),
            )
            networking = None
            if not spec.network.startswith("container:"):
                networking = api.create_networking_config({spec.network: api.create_endpoint_config()})
            created = api.create_container(
                spec.image,
                command=list(spec.command) if spec.command is not None else None,
                user=spec.user,
                name=spec.name,
                environment=dict(spec.environment),
                labels=dict(spec.labels),
                host_config=host_config,
                networking_config=networking,
            )
            container_id: str = created["Id"]
            try:
                api.start(container_id)
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                # Leave no half-made container behind: its name would block a retry.
                with suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                    api.remove_container(container_id, force=True)
                raise
        return container_id

    async def wait(self, container_id: str) -> ContainerExit:
        pending = PendingWait()
        self._pending.add(pending)
        loop = asyncio.get_running_loop()
        try:
            status = await loop.run_in_executor(self._waits, blocking_wait, self._api, container_id, pending)
        except asyncio.CancelledError:
            pending.abort()
            raise
        finally:
            self._pending.discard(pending)
        return ContainerExit(exit_code=status, oom_killed=await self._call(self._oom_killed, container_id))

    def _oom_killed(self, container_id: str) -> bool:
        try:
            with docker_errors(f"inspecting container {container_id[:12]}"):
                return bool(self._api.inspect_container(container_id)["State"].get("OOMKilled"))
        except ContainerNotFound:
            return False  # removed right after it stopped; the exit code is all there is

    async def logs(self, container_id: str, limit: int = DEFAULT_LOG_LIMIT) -> str:
        return await self._call(self._logs, container_id, limit)

    def _logs(self, container_id: str, limit: int) -> str:
        return read_tail(self._api, container_id, limit)

    def follow_logs(self, container_id: str) -> AsyncIterator[str]:
        # Each read holds a thread of the wait pool: a quiet algorithm sends nothing for long.
        return follow(self._waits, lambda: self._api, container_id)

    async def kill(self, container_id: str) -> None:
        await self._call(self._kill, container_id)

    def _kill(self, container_id: str) -> None:
        with docker_errors(f"killing container {container_id[:12]}"):
            try:
                self._api.kill(container_id)
            except docker.errors.APIError as exc:
                if status_code(exc) != 409:  # 409: not running, nothing to kill
                    raise

    async def remove(self, container_id: str) -> None:
        await self._call(self._remove, container_id)

    def _remove(self, container_id: str) -> bool:
        """True when this call removed it."""
        with docker_errors(f"removing container {container_id[:12]}"):
            try:
                self._api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                if status_code(exc) != 409:  # 409: removal already in progress
                    raise
                return False
        return True

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return await self._call(self._list_containers, labels)

    def _list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        with docker_errors("listing containers"):
            return [_container_info(summary) for summary in self._api.containers(all=True, filters=_label_filter(labels))]

    async def remove_labelled(self, labels: dict[str, str]) -> int:
        if not labels:
            raise ValueError("remove_labelled needs at least one label (it would remove everything)")
        return await self._call(self._remove_labelled, labels)

    def _remove_labelled(self, labels: dict[str, str]) -> int:
        """Containers first (networks and volumes are in use until they are gone), then the rest;
        everything is tried, and what stays is raised together as ``ResourcesLeft``."""
        removed, left = 0, list[str]()
        for info in self._list_containers(labels):
            try:
                if self._remove(info.id):
                    removed += 1
                else:
                    # Another call (a run's own clean-up) may be removing it right now; until it
                    # is gone its network endpoint and volumes are in use.
                    self._wait_removed(info.id)
            except RuntimeUnavailable:
                raise
            except ContainerError as exc:
                left.append(f"container {info.name} ({exc})")
        api = self._api
        with docker_errors("listing labelled networks"):
            networks = api.networks(filters=_label_filter(labels))
        for summary in networks:
            try:
                removed += remove_network(self._api, summary["Id"], summary.get("Name") or summary["Id"][:12])
            except RuntimeUnavailable:
                raise
            except ContainerError as exc:
                left.append(f"network {summary.get('Name')} ({exc})")
        with docker_errors("listing labelled volumes"):
            volumes = api.volumes(filters=_label_filter(labels)).get("Volumes") or []
        for volume in volumes:
            try:
                with docker_errors(f"removing volume {volume['Name']}"):
                    api.remove_volume(volume["Name"])
                removed += 1
            except ContainerNotFound:
                continue
            except RuntimeUnavailable:
                raise
            except ContainerError as exc:
                left.append(f"volume {volume['Name']} ({exc})")
        if left:
            raise ResourcesLeft(left, removed)
        return removed

    def _wait_removed(self, container_id: str) -> None:
        with docker_errors(f"waiting for the removal of container {container_id[:12]}"):
            with suppress(docker.errors.NotFound):
                self._api.wait(container_id, timeout=self._timeout, condition="removed")
