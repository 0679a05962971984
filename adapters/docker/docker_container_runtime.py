"""ContainerRuntime on the Docker Engine, through the docker SDK (blocking calls run in thread pools)."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import docker
import docker.errors
import requests
import urllib3
from docker.types import CancellableStream, DeviceRequest, LogConfig
from docker.types import Mount as DockerMount
from docker.utils import parse_repository_tag

from v6node.domain.containers import ContainerExit, ContainerInfo, ContainerSpec, log_tail
from v6node.ports.container_runtime import DEFAULT_LOG_LIMIT
from v6node.domain.errors import (
    ContainerError,
    ContainerNotFound,
    ContainerStartFailed,
    ImageNotFound,
    ResourcesLeft,
    RuntimeUnavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_EXITED = re.compile(r"^Exited \((-?\d+)\)")
# The node's networks: no route out (internal) and no traffic between containers.
_NO_ICC = "com.docker.network.bridge.enable_icc"
_NETWORK_OPTIONS = {_NO_ICC: "false"}
# How long a network removal waits for the engine to release the endpoints of removed containers.
_NETWORK_RELEASE_SECONDS = 20.0


# The engine did not answer (socket missing, refused, timed out) or broke off an answer
# half-way (it stopped while a wait was open).
_UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    ConnectionError,
)


def _is_unreachable(exc: BaseException) -> bool:
    """The engine did not answer, or stopped answering, anywhere in the cause chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _UNREACHABLE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _translate(
    exc: Exception,
    what: str,
    not_found: type[ContainerError] = ContainerNotFound,
    failed: type[ContainerError] = ContainerError,
) -> ContainerError:
    """The one place where docker SDK and requests exceptions become the node's errors."""
    if _is_unreachable(exc):
        return RuntimeUnavailable(f"{what}: the Docker engine cannot be reached ({exc})")
    if isinstance(exc, docker.errors.NotFound):
        return not_found(f"{what}: {getattr(exc, 'explanation', None) or exc}")
    if isinstance(exc, docker.errors.APIError):
        return failed(f"{what}: {exc.explanation or exc}")
    return failed(f"{what}: {exc}")


@contextmanager
def _docker_errors(
    what: str, not_found: type[ContainerError] = ContainerNotFound, failed: type[ContainerError] = ContainerError
) -> Iterator[None]:
    try:
        yield
    except (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,  # a wait's body read raw, cut off half-way
        ConnectionError,
    ) as exc:
        raise _translate(exc, what, not_found, failed) from exc


def _status_code(exc: docker.errors.APIError) -> int | None:
    return exc.response.status_code if exc.response is not None else None


def _isolated(network: dict[str, Any]) -> bool:
    return bool(network.get("Internal")) and (network.get("Options") or {}).get(_NO_ICC) == "false"


def _log_config(size: int | None) -> LogConfig | None:
    """Two json-files of half ``size`` each: the engine keeps between half of ``size`` and
    ``size`` of the newest output (one file would keep next to nothing right after it rotates)."""
    if size is None:
        return None
    return LogConfig(type=LogConfig.types.JSON, config={"max-size": str(max(size // 2, 1024)), "max-file": "2"})


def _label_filter(labels: dict[str, str]) -> dict[str, list[str]]:
    return {"label": [f"{key}={value}" for key, value in labels.items()]}


class _PendingWait:
    """One blocking wait request; ``abort`` closes its socket so the waiting thread returns at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self.aborted = False

    def attach(self, response: requests.Response) -> None:
        with self._lock:
            self._response = response
            aborted = self.aborted
        if aborted:
            self._close(response)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            response = self._response
        if response is not None:
            self._close(response)

    @staticmethod
    def _close(response: requests.Response) -> None:
        try:
            CancellableStream(None, response).close()
        except Exception:  # noqa: BLE001 - e.g. SSH transports; closing the response is the fallback
            response.close()


class DockerContainerRuntime:
    """The ``ContainerRuntime`` port on a Docker Engine.

    ``base_url`` (e.g. ``unix:///var/run/docker.sock``) or, when None, the usual
    ``DOCKER_HOST`` environment. Nothing connects before the first call. Short calls share
    ``max_calls`` threads and time out after ``timeout`` seconds; every ``wait`` holds one
    of ``max_waits`` threads and has no timeout. The HTTP connection pool is sized for both.
    Call ``close()`` when done.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 60,
        max_calls: int = 16,
        max_waits: int = 256,
    ) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._pool_size = max_calls + max_waits
        self._calls = ThreadPoolExecutor(max_workers=max_calls, thread_name_prefix="docker-call")
        self._waits = ThreadPoolExecutor(max_workers=max_waits, thread_name_prefix="docker-wait")
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._pending: set[_PendingWait] = set()

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
                with _docker_errors("connecting to the Docker engine"):
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

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._calls, functools.partial(fn, *args))

    # --- the port -------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._call(self._ping)

    def _ping(self) -> None:
        with _docker_errors("ping"):
            self._api.ping()

    async def ensure_network(self, name: str, labels: dict[str, str]) -> str:
        return await self._call(self._ensure_network, name, labels)

    def _ensure_network(self, name: str, labels: dict[str, str]) -> str:
        with _docker_errors(f"network {name}"):
            network = self._network_named(name)
            if network is not None and not _isolated(network):
                self._replace_unisolated(name, network)
                network = None
            if network is None:
                try:
                    self._api.create_network(
                        name, driver="bridge", internal=True, labels=labels, options=_NETWORK_OPTIONS,
                        check_duplicate=True,
                    )
                except docker.errors.APIError as exc:
                    if _status_code(exc) != 409:  # 409: created meanwhile by someone else; reuse it
                        raise
                network = self._network_named(name)
            if network is None:
                raise ContainerError(f"network {name} was created but cannot be found")
        if not _isolated(network):
            raise ContainerError(f"network {name} was created by someone else meanwhile and is not isolated")
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Gateway"):
                return config["Gateway"]
        raise ContainerError(f"network {name} has no gateway address in its IPAM configuration")

    def _replace_unisolated(self, name: str, network: dict[str, Any]) -> None:
        """A network of an older node (or made by hand) that lets containers reach each other."""
        if network.get("Containers"):
            raise ContainerError(
                f"network {name} lets algorithm containers reach each other or the internet and "
                "containers still use it; stop them and remove the network, the node re-creates it isolated"
            )
        log.warning("network %s was not isolated (internal, no traffic between containers); re-creating it", name)
        self._api.remove_network(network["Id"])

    def _network_named(self, name: str) -> dict[str, Any] | None:
        # The engine's name filter matches substrings, so compare exactly.
        for summary in self._api.networks(names=[name]):
            if summary["Name"] == name:
                return self._api.inspect_network(summary["Id"])
        return None

    async def login(self, registry: str, username: str, password: str) -> None:
        await self._call(self._login, registry, username, password)

    def _login(self, registry: str, username: str, password: str) -> None:
        with _docker_errors(f"logging in to {registry}"):
            self._docker().login(username=username, password=password, registry=registry)

    async def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        await self._call(self._ensure_volume, name, labels)

    def _ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        with _docker_errors(f"volume {name}"):
            try:
                self._api.inspect_volume(name)
            except docker.errors.NotFound:
                self._api.create_volume(name, labels=labels)

    async def local_image_id(self, image: str) -> str | None:
        return await self._call(self._local_image_id, image)

    def _local_image_id(self, image: str) -> str | None:
        with _docker_errors(f"image {image}"):
            try:
                return str(self._api.inspect_image(image)["Id"])
            except docker.errors.NotFound:
                return None

    async def remove_volume(self, name: str) -> None:
        await self._call(self._remove_volume, name)

    def _remove_volume(self, name: str) -> None:
        with _docker_errors(f"removing volume {name}"):
            try:
                self._api.remove_volume(name, force=True)
            except docker.errors.NotFound:
                pass

    async def list_volumes(self, labels: dict[str, str]) -> list[str]:
        return await self._call(self._list_volumes, labels)

    def _list_volumes(self, labels: dict[str, str]) -> list[str]:
        with _docker_errors("listing volumes"):
            return sorted(v["Name"] for v in self._api.volumes(filters=_label_filter(labels)).get("Volumes") or [])

    async def ensure_image(self, image: str, require_pull: bool) -> str:
        return await self._call(self._ensure_image, image, require_pull)

    def _ensure_image(self, image: str, require_pull: bool) -> str:
        pull_error = self._pull(image)
        if pull_error is None:
            return "pulled"
        with _docker_errors(f"image {image}", not_found=ImageNotFound):
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
        try:
            for message in self._api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if message.get("error"):
                    return str(message.get("errorDetail", {}).get("message") or message["error"])
        except docker.errors.APIError as exc:
            return str(exc.explanation or exc)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _translate(exc, f"pulling {image}", not_found=ImageNotFound) from exc
        return None

    async def run(self, spec: ContainerSpec) -> str:
        return await self._call(self._run, spec)

    def _run(self, spec: ContainerSpec) -> str:
        what = f"starting container {spec.name} ({spec.image})"
        with _docker_errors(what, not_found=ContainerStartFailed, failed=ContainerStartFailed):
            api = self._api
            host_config = api.create_host_config(
                mounts=[
                    DockerMount(target=m.target, source=m.source, type=m.kind, read_only=m.read_only)
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
                tmpfs=dict(spec.tmpfs) or None,
                log_config=_log_config(spec.log_size),
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
        pending = _PendingWait()
        self._pending.add(pending)
        loop = asyncio.get_running_loop()
        try:
            status = await loop.run_in_executor(self._waits, self._blocking_wait, container_id, pending)
        except asyncio.CancelledError:
            pending.abort()
            raise
        finally:
            self._pending.discard(pending)
        return ContainerExit(exit_code=status, oom_killed=await self._call(self._oom_killed, container_id))

    def _blocking_wait(self, container_id: str, pending: _PendingWait) -> int:
        """The engine's wait endpoint, read without a timeout; ``pending.abort()`` ends it early."""
        what = f"waiting for container {container_id[:12]}"
        with _docker_errors(what):
            api = self._api
            # The engine answers with headers as soon as the wait is registered and sends the
            # body when the container stops; stream=True lets us hold the socket to abort it.
            response = api._post(
                api._url("/containers/{0}/wait", container_id),
                params={"condition": "not-running"},
                stream=True,
                timeout=None,
            )
            try:
                api._raise_for_status(response)
                pending.attach(response)
                try:
                    body = response.content
                except (requests.exceptions.RequestException, OSError):
                    if not pending.aborted:
                        raise
            finally:
                response.close()
        if pending.aborted:
            raise RuntimeUnavailable(f"{what}: stopped waiting (cancelled, or the runtime was closed)")
        result = json.loads(body)
        if result.get("Error") and result["Error"].get("Message"):
            raise ContainerError(f"{what}: {result['Error']['Message']}")
        return int(result["StatusCode"])

    def _oom_killed(self, container_id: str) -> bool:
        try:
            with _docker_errors(f"inspecting container {container_id[:12]}"):
                return bool(self._api.inspect_container(container_id)["State"].get("OOMKilled"))
        except ContainerNotFound:
            return False  # removed right after it stopped; the exit code is all there is

    async def logs(self, container_id: str, limit: int = DEFAULT_LOG_LIMIT) -> str:
        return await self._call(self._logs, container_id, limit)

    def _logs(self, container_id: str, limit: int) -> str:
        with _docker_errors(f"logs of container {container_id[:12]}"):
            stream = self._api.logs(container_id, stdout=True, stderr=True, stream=True, follow=False)
            try:
                return log_tail(stream, limit)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()

    async def kill(self, container_id: str) -> None:
        await self._call(self._kill, container_id)

    def _kill(self, container_id: str) -> None:
        with _docker_errors(f"killing container {container_id[:12]}"):
            try:
                self._api.kill(container_id)
            except docker.errors.APIError as exc:
                if _status_code(exc) != 409:  # 409: not running, nothing to kill
                    raise

    async def remove(self, container_id: str) -> None:
        await self._call(self._remove, container_id)

    def _remove(self, container_id: str) -> bool:
        """True when this call removed it."""
        with _docker_errors(f"removing container {container_id[:12]}"):
            try:
                self._api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                if _status_code(exc) != 409:  # 409: removal already in progress
                    raise
                return False
        return True

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return await self._call(self._list_containers, labels)

    def _list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        with _docker_errors("listing containers"):
            summaries = self._api.containers(all=True, filters=_label_filter(labels))
        return [self._info(summary) for summary in summaries]

    @staticmethod
    def _info(summary: dict[str, Any]) -> ContainerInfo:
        exited = _EXITED.match(summary.get("Status") or "")
        names = summary.get("Names") or [""]
        return ContainerInfo(
            id=summary["Id"],
            name=names[0].lstrip("/"),
            labels=dict(summary.get("Labels") or {}),
            running=summary.get("State") == "running",
            exit_code=int(exited.group(1)) if exited else None,
        )

    async def remove_labelled(self, labels: dict[str, str]) -> int:
        if not labels:
            raise ValueError("remove_labelled needs at least one label (it would remove everything)")
        return await self._call(self._remove_labelled, labels)

    def _remove_labelled(self, labels: dict[str, str]) -> int:
        """Containers first (networks and volumes are in use until they are gone), then the rest;
        everything is tried, and what stays is raised together as ``ResourcesLeft``."""
        removed = 0
        left: list[str] = []
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
        with _docker_errors("listing labelled networks"):
            networks = api.networks(filters=_label_filter(labels))
        for summary in networks:
            try:
                removed += self._remove_network(summary["Id"], summary.get("Name") or summary["Id"][:12])
            except RuntimeUnavailable:
                raise
            except ContainerError as exc:
                left.append(f"network {summary.get('Name')} ({exc})")
        with _docker_errors("listing labelled volumes"):
            volumes = api.volumes(filters=_label_filter(labels)).get("Volumes") or []
        for volume in volumes:
            try:
                with _docker_errors(f"removing volume {volume['Name']}"):
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
        with _docker_errors(f"waiting for the removal of container {container_id[:12]}"):
            with suppress(docker.errors.NotFound):
                self._api.wait(container_id, timeout=self._timeout, condition="removed")

    def _remove_network(self, network_id: str, name: str) -> int:
        """Disconnect what is still attached, then remove; the engine may hold an endpoint for a
        moment after its container is gone ("has active endpoints"), so that is tried again
        for a bounded time."""
        api = self._api
        deadline = time.monotonic() + _NETWORK_RELEASE_SECONDS
        with _docker_errors(f"removing network {name}"):
            while True:
                try:
                    attached = api.inspect_network(network_id).get("Containers") or {}
                    for container_id in attached:
                        with suppress(docker.errors.NotFound):
                            api.disconnect_container_from_network(container_id, network_id, force=True)
                    api.remove_network(network_id)
                    return 1
                except docker.errors.NotFound:
                    return 0
                except docker.errors.APIError as exc:
                    if _status_code(exc) not in (403, 409) or time.monotonic() > deadline:
                        raise
                time.sleep(0.2)
