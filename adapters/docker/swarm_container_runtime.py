"""ContainerRuntime on a Docker Swarm: each container is a service of one task that never restarts."""
from __future__ import annotations

import asyncio
import codecs
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

import docker
import docker.errors
from docker.utils import parse_repository_tag

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime, _label_filter
from v6node.adapters.docker.errors import docker_errors
from v6node.adapters.docker.logs import _close
from v6node.adapters.docker.networks import remove_network
from v6node.adapters.docker.swarm_specs import (
    ENDPOINT_SPEC,
    Placement,
    killed_template,
    on_every_host,
    one_task,
    task_template,
    was_killed,
)
from v6node.adapters.docker.swarm_support import (
    RELAY_TYPE,
    SharedVolumes,
    ensure_overlay,
    ensure_relay,
    ensure_relay_network,
)
from v6node.adapters.docker.swarm_tasks import KILLED, TaskView, TaskWatcher, tasks_of, the_run
from v6node.domain.containers import LABEL_TYPE, ContainerExit, ContainerInfo, ContainerSpec, HostRun, log_tail
from v6node.domain.errors import ContainerError, ContainerStartFailed, ImageNotFound, ResourcesLeft, RuntimeUnavailable
from v6node.ports.container_runtime import DEFAULT_LOG_LIMIT, FOLLOW_LINE_LIMIT

log = logging.getLogger(__name__)

# An entrypoint no image has: a host with the image fails to start it, one without rejects the task.
IMAGE_CHECK_ENTRYPOINT = "/v6node-image-check-does-not-exist"


def _shut_down(response: Any) -> None:
    """End a streamed response, also a read blocked on it in another thread (closing alone does not)."""
    with suppress(Exception):
        raw = response.raw._fp.fp.raw
        getattr(raw, "_sock", raw).shutdown(socket.SHUT_RDWR)
    with suppress(Exception):
        response.close()


class SwarmContainerRuntime(DockerContainerRuntime):
    """The ``ContainerRuntime`` port on a Swarm, through the API of one of its managers.

    ``base_url`` as for ``DockerContainerRuntime``. ``placement``: the operator's constraints
    and reservations for every job. ``proxy_address``: where the node's proxy listens, as the
    relay on the manager reaches it (None: the gateway of the relay's bridge, i.e. the
    manager host itself, where the node runs). ``relay_image``: any image with busybox
    ``nc`` (present on the manager). ``volumes_dir``: a folder on the shared storage for the
    jobs' volumes. Differences from one engine, within the port's contract: ``wait`` can
    end ``lost`` (the host went down); ``oom_killed`` is never known (Swarm does not report
    it); a kill updates the job so that its task is shut down (exit 137) and kept, with its
    logs, until ``remove``; ``no-new-privileges`` cannot be set (see ``swarm_specs``). A job
    is a ``replicated`` service of one replica with restart condition ``none``, not a
    ``replicated-job``, whose tasks and exited containers Engine 20.10 keeps after its
    removal (``swarm_specs.one_task``): ``remove`` leaves nothing on any host that is up
    (a host that is down removes the container when it is back).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        placement: Placement = Placement(),
        proxy_address: str | None = None,
        relay_image: str,
        volumes_dir: str,
        timeout: float = 60,
        max_calls: int = 16,
        max_waits: int = 64,
    ) -> None:
        super().__init__(base_url, timeout=timeout, max_calls=max_calls, max_waits=max_waits)
        self._placement = placement
        self._proxy_address = proxy_address
        self._relay_image = relay_image
        self._volumes = SharedVolumes(volumes_dir)
        self._streams = ThreadPoolExecutor(max_workers=max_waits, thread_name_prefix="swarm-stream")
        self._watcher = TaskWatcher(lambda: self._api, self._calls, self._streams)
        self._pins: dict[str, str] = {}  # image -> image@digest the hosts pull
        self._image_locks: dict[str, asyncio.Lock] = {}
        self._images_on: dict[str, frozenset[str]] = {}  # image -> ready nodes known to have it
        self._manager_checked = False

    def close(self) -> None:
        self._watcher.close()
        self._streams.shutdown(wait=False, cancel_futures=True)
        super().close()

    # --- engine and networks ------------------------------------------------------------
    def _ping(self) -> None:
        super()._ping()
        if not self._manager_checked:
            with docker_errors("asking the engine about its swarm"):
                swarm = self._api.info().get("Swarm") or {}
            if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
                raise ContainerError(
                    "runtime.kind is swarm, but this Docker engine is not a manager of an active swarm "
                    f"(state {swarm.get('LocalNodeState')!r}); point DOCKER_HOST at a manager"
                )
            self._manager_checked = True

    def _ensure_network(self, name: str, labels: dict[str, str]) -> str:
        ensure_overlay(self._api, name, labels)
        if self._proxy_address is not None:
            return self._proxy_address
        return ensure_relay_network(self._api, f"{name}-relay", labels)

    async def expose_proxy(self, network: str, host: str, port: int, labels: dict[str, str]) -> tuple[str, int]:
        return await self._call(self._expose_proxy, network, host, port, labels)

    def _expose_proxy(self, network: str, host: str, port: int, labels: dict[str, str]) -> tuple[str, int]:
        bridge = f"{network}-relay"
        ensure_relay_network(self._api, bridge, labels)
        return ensure_relay(self._api, network, bridge, (host, port), labels, self._relay_image)

    # --- volumes on the shared storage ----------------------------------------------------
    def _ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        self._volumes.ensure(name, labels)

    def _remove_volume(self, name: str) -> None:
        self._volumes.remove(name)

    def _list_volumes(self, labels: dict[str, str]) -> list[str]:
        return self._volumes.names(labels)

    # --- images: pulled by the hosts, or checked on every host ------------------------------
    async def ensure_image(self, image: str, require_pull: bool) -> str:
        why = await self._call(self._resolve, image)
        if why is None:
            return "pulled"
        if require_pull:
            raise ImageNotFound(
                f"{image} could not be found in its registry ({why}); require_algorithm_pull is true, so the "
                "swarm hosts' local copies are not used"
            )
        lacking = await self._hosts_lacking(image)
        if lacking:
            raise ImageNotFound(
                f"{image} could not be pulled ({why}) and these swarm hosts have no local copy: {', '.join(lacking)}"
            )
        return "local"

    def _resolve(self, image: str) -> str | None:
        """Pin ``image`` to its registry digest, which every host then pulls; else why not."""
        try:
            with docker_errors(f"looking up {image} in its registry", not_found=ImageNotFound, failed=ImageNotFound):
                digest = self._api.inspect_distribution(image)["Descriptor"]["digest"]
        except RuntimeUnavailable:
            raise
        except ContainerError as exc:
            return str(exc)
        repository, tag = parse_repository_tag(image)
        self._pins[image] = f"{repository}:{tag or 'latest'}@{digest}" if "@" not in image else image
        return None

    async def _hosts_lacking(self, image: str) -> list[str]:
        lock = self._image_locks.setdefault(image, asyncio.Lock())
        async with lock:
            ready = await self._call(self._ready_nodes)
            if ready <= self._images_on.get(image, frozenset()):
                return []
            spec = ContainerSpec(
                name=f"v6node-image-check-{uuid.uuid4().hex[:12]}", image=image, network="", command=None,
                labels={"v6node.probe": "image"},
            )
            results = await self._global_job(spec, entrypoint=[IMAGE_CHECK_ENTRYPOINT], with_logs=False)
            lacking = sorted(host for host, task, _ in results if "No such image" in task.err)
            if not lacking:
                self._images_on[image] = ready
            return lacking

    def _ready_nodes(self) -> frozenset[str]:
        with docker_errors("listing swarm nodes"):
            return frozenset(n["ID"] for n in self._api.nodes() if n.get("Status", {}).get("State") == "ready")

    # --- jobs -------------------------------------------------------------------------------
    def _create(self, spec: ContainerSpec, mode: dict[str, Any], entrypoint: list[str] | None = None) -> str:
        template = task_template(spec, self._pins.get(spec.image, spec.image), self._placement, self._volumes.source)
        if not spec.network:
            del template["Networks"]
        if entrypoint is not None:
            template["ContainerSpec"]["Command"] = entrypoint
        what = f"starting job {spec.name} ({spec.image})"
        with docker_errors(what, not_found=ContainerStartFailed, failed=ContainerStartFailed):
            created = self._api.create_service(
                template, name=spec.name, labels=dict(spec.labels), mode=mode, endpoint_spec=ENDPOINT_SPEC
            )
        return str(created["ID"])

    async def run(self, spec: ContainerSpec) -> str:
        service_id = await self._call(self._create, spec, one_task())
        try:
            host = await self._watcher.until(service_id, "started")
        except ContainerStartFailed:
            await self._call(self._remove, service_id)
            raise
        except asyncio.CancelledError:
            await asyncio.shield(self._call(self._remove, service_id))
            raise
        log.info("job %s (%s) runs on swarm host %s", spec.name, service_id[:12], host)
        return service_id

    async def _global_job(
        self, spec: ContainerSpec, entrypoint: list[str] | None = None, with_logs: bool = True
    ) -> list[tuple[str, TaskView, str]]:
        """One task of ``spec`` on every eligible host; (host name, task, output) of each, then removed."""
        service_id = await self._call(self._create, spec, on_every_host(), entrypoint)
        try:
            tasks: list[TaskView] = await self._watcher.until(service_id, "all")
            hosts = await self._call(self._host_names)
            results = []
            for task in tasks:
                output = await self._call(self._task_logs, task.id) if with_logs else ""
                results.append((hosts.get(task.node_id, task.node_id[:12]), task, output))
            return results
        finally:
            await asyncio.shield(self._call(self._remove, service_id))

    async def run_on_every_host(self, spec: ContainerSpec) -> list[HostRun]:
        results = await self._global_job(spec)
        return [HostRun(host, task.exit().exit_code if not task.never_ran else -1, output or task.err)
                for host, task, output in sorted(results, key=lambda r: r[0])]

    def _host_names(self) -> dict[str, str]:
        with docker_errors("listing swarm nodes"):
            return {n["ID"]: n.get("Description", {}).get("Hostname", n["ID"][:12]) for n in self._api.nodes()}

    def _task_logs(self, task_id: str) -> str:
        api = self._api
        with docker_errors(f"logs of task {task_id[:12]}"):
            response = api._get(api._url("/tasks/{0}/logs", task_id), params={"stdout": 1, "stderr": 1}, stream=True)
            return log_tail(api._get_result_tty(True, response, False), DEFAULT_LOG_LIMIT)

    async def wait(self, container_id: str) -> ContainerExit:
        await self._call(self._inspect, container_id)
        exit_: ContainerExit = await self._watcher.until(container_id, "ended")
        return exit_

    def _inspect(self, service_id: str) -> dict[str, Any]:
        with docker_errors(f"job {service_id[:12]}"):
            return dict(self._api.inspect_service(service_id))

    def _logs(self, container_id: str, limit: int) -> str:
        self._inspect(container_id)
        with docker_errors(f"logs of job {container_id[:12]}"):
            stream = self._api.service_logs(container_id, stdout=True, stderr=True, follow=False)
            try:
                return log_tail(stream, limit)
            finally:
                _close(stream)

    async def follow_logs(self, container_id: str) -> AsyncIterator[str]:
        """The job's lines until its task ends. The engine's follow stream of a service does not
        end with its task, so when the task has ended the stream's socket is shut down, which
        ends the read in progress; lines not streamed by then are in ``logs`` (the result)."""
        loop = asyncio.get_running_loop()
        what = f"following the logs of job {container_id[:12]}"
        api = self._api

        def open_stream() -> Any:
            with docker_errors(what):
                url = api._url("/services/{0}/logs", container_id)
                response = api._get(url, params={"stdout": 1, "stderr": 1, "follow": 1}, stream=True)
                return response, api._get_result_tty(True, response, False)

        def next_chunk(stream: Any) -> bytes | None:
            with suppress(Exception):  # the socket shut down under it when the task ended
                return next(stream, None)
            return None

        response, stream = await loop.run_in_executor(self._streams, open_stream)
        ended = asyncio.ensure_future(self._watcher.until(container_id, "ended"))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        try:
            while True:
                chunk = asyncio.ensure_future(loop.run_in_executor(self._streams, next_chunk, stream))
                await asyncio.wait({chunk, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not chunk.done():
                    _shut_down(response)
                data = await chunk
                if data is None:
                    break
                pending += decoder.decode(data)
                *lines, pending = pending.split("\n")
                for line in lines:
                    for start in range(0, max(len(line), 1), FOLLOW_LINE_LIMIT):
                        yield line[start : start + FOLLOW_LINE_LIMIT]
            pending += decoder.decode(b"", final=True)
            if pending:
                yield pending[:FOLLOW_LINE_LIMIT]
        finally:
            ended.cancel()
            _shut_down(response)

    def _kill(self, container_id: str) -> None:
        service = self._inspect(container_id)
        if was_killed(service):
            return
        with docker_errors(f"tasks of job {container_id[:12]}"):
            task = the_run([TaskView.of(t) for t in self._api.tasks(filters={"service": container_id})])
        if task is not None and task.final:
            return  # ended already: nothing to kill
        spec = service["Spec"]
        with docker_errors(f"killing job {container_id[:12]}"):
            self._api.update_service(
                container_id, version=service["Version"]["Index"], task_template=killed_template(spec["TaskTemplate"]),
                name=spec["Name"], labels=spec.get("Labels"), mode=spec["Mode"], endpoint_spec=ENDPOINT_SPEC,
                fetch_current_spec=False,
            )

    def _remove(self, container_id: str) -> bool:
        with docker_errors(f"removing job {container_id[:12]}"):
            try:
                self._api.remove_service(container_id)
            except docker.errors.NotFound:
                return False
        return True

    def _list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        api = self._api
        with docker_errors("listing jobs"):
            services = api.services(filters=_label_filter(labels))
            raw, gone = tasks_of(api, [s["ID"] for s in services])
        services = [s for s in services if s["ID"] not in gone]
        tasks: dict[str, list[TaskView]] = {}
        for item in raw:
            view = TaskView.of(item)
            tasks.setdefault(view.service_id, []).append(view)
        infos = []
        for service in services:
            task = the_run(tasks.get(service["ID"], []))
            ended = task is not None and task.final
            exit_code = task.exit().exit_code if task is not None and ended else None
            if was_killed(service) and (task is None or not (task.node_id or task.final)):
                ended, exit_code = True, KILLED  # killed before its task had a host
            infos.append(ContainerInfo(
                id=service["ID"], name=service["Spec"]["Name"], labels=dict(service["Spec"].get("Labels") or {}),
                running=not ended, exit_code=exit_code,
            ))
        return infos

    def _remove_labelled(self, labels: dict[str, str]) -> int:
        """Jobs, then the relay (a container of the manager), networks and volumes."""
        removed, left = 0, []
        api = self._api
        for info in self._list_containers(labels):
            try:
                removed += self._remove(info.id)
            except RuntimeUnavailable:
                raise
            except ContainerError as exc:
                left.append(f"job {info.name} ({exc})")
        relays = []
        if labels.get(LABEL_TYPE, RELAY_TYPE) == RELAY_TYPE:  # not when asked for, say, the proxy checks only
            with docker_errors("listing labelled containers"):
                relays = api.containers(all=True, filters=_label_filter({**labels, LABEL_TYPE: RELAY_TYPE}))
        for relay in relays:
            with docker_errors("removing the proxy relay"), suppress(docker.errors.NotFound):
                api.remove_container(relay["Id"], force=True)
                removed += 1
        with docker_errors("listing labelled networks"):
            networks = api.networks(filters=_label_filter(labels))
        for summary in networks:
            try:
                removed += remove_network(api, summary["Id"], summary.get("Name") or summary["Id"][:12])
            except RuntimeUnavailable:
                raise
            except ContainerError as exc:
                # A manager lists an overlay for a moment after its removal (measured: by an
                # earlier call) and answers another removal then with a 500 "not found".
                if "not found" not in str(exc):
                    left.append(f"network {summary.get('Name')} ({exc})")
        for name in self._volumes.names(labels):
            removed += self._volumes.remove(name)
        if left:
            raise ResourcesLeft(left, removed)
        return removed
