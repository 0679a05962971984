"""The node's own container (``v6node start --docker``) and what nodes left in Docker, for the CLI."""
from __future__ import annotations

import signal
from datetime import datetime
from typing import Any

import docker
import docker.errors
import requests
from attrs import field, frozen

from v6node.adapters.docker.errors import docker_errors

# Labels of a node container, as the reference's CLI sets them (its `list` finds nodes by them).
LABEL_TYPE = "vantage6-type"
NODE_TYPE = "node"


@frozen
class NodeContainerState:
    name: str
    running: bool
    status: str  # the engine's: running, exited, created, ...
    pid: int | None
    started_at: datetime | None
    exit_code: int | None
    image: str
    labels: dict[str, str] = field(factory=dict, hash=False)


@frozen
class BindSpec:
    source: str  # a host path, or a volume name when ``volume``
    target: str
    read_only: bool = False
    volume: bool = False


@frozen
class NodeContainerSpec:
    name: str
    image: str
    command: tuple[str, ...]
    binds: tuple[BindSpec, ...]
    environment: dict[str, str] = field(factory=dict, hash=False)
    labels: dict[str, str] = field(factory=dict, hash=False)
    network_mode: str = "host"


@frozen
class Leftovers:
    containers: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.containers or self.networks or self.volumes)


def _started(text: str | None) -> datetime | None:
    if not text or text.startswith("0001-"):
        return None
    # The engine gives nanoseconds; fromisoformat takes at most microseconds.
    head, _, rest = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(rest + '000000')[:6]}+00:00" if rest else f"{head}+00:00")


class DockerNodeContainers:
    """Blocking calls on the Docker engine (``DOCKER_HOST`` or the default socket)."""

    def __init__(self, base_url: str | None = None) -> None:
        self._base_url = base_url
        self._client: docker.DockerClient | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def _api(self) -> docker.APIClient:
        if self._client is None:
            with docker_errors("connecting to the Docker engine"):
                self._client = docker.from_env() if self._base_url is None else docker.DockerClient(base_url=self._base_url)
        return self._client.api

    def state(self, name: str) -> NodeContainerState | None:
        """The container called ``name``, None when there is none."""
        with docker_errors(f"inspecting container {name}"):
            try:
                info: dict[str, Any] = self._api.inspect_container(name)
            except docker.errors.NotFound:
                return None
        state = info.get("State") or {}
        return NodeContainerState(
            name=info["Name"].lstrip("/"),
            running=bool(state.get("Running")),
            status=str(state.get("Status", "")),
            pid=state.get("Pid") or None,
            started_at=_started(state.get("StartedAt")),
            exit_code=None if state.get("Running") else state.get("ExitCode"),
            image=str((info.get("Config") or {}).get("Image", "")),
            labels=dict((info.get("Config") or {}).get("Labels") or {}),
        )

    def image_exists(self, image: str) -> bool:
        with docker_errors(f"inspecting image {image}"):
            try:
                self._api.inspect_image(image)
            except docker.errors.ImageNotFound:
                return False
        return True

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        with docker_errors(f"creating volume {name}"):
            try:
                self._api.inspect_volume(name)
            except docker.errors.NotFound:
                self._api.create_volume(name, labels=labels)

    def volume_exists(self, name: str) -> bool:
        with docker_errors(f"inspecting volume {name}"):
            try:
                self._api.inspect_volume(name)
            except docker.errors.NotFound:
                return False
        return True

    def volume_folder(self, name: str) -> str | None:
        """Where the engine keeps the volume's files on its host (``Mountpoint``); None when there is no such volume."""
        with docker_errors(f"inspecting volume {name}"):
            try:
                return str(self._api.inspect_volume(name)["Mountpoint"])
            except docker.errors.NotFound:
                return None

    def remove_volume(self, name: str) -> bool:
        """True when it was removed, False when there was none."""
        with docker_errors(f"removing volume {name}"):
            try:
                self._api.remove_volume(name)
            except docker.errors.NotFound:
                return False
        return True

    def run(self, spec: NodeContainerSpec) -> str:
        """Create and start the node's container; its id."""
        api = self._api
        with docker_errors(f"starting the node container {spec.name} ({spec.image})"):
            # A list, not a mapping by source: one file may be mounted at two places (two labels).
            binds = [f"{b.source}:{b.target}:{'ro' if b.read_only else 'rw'}" for b in spec.binds]
            host_config = api.create_host_config(binds=binds, network_mode=spec.network_mode)
            created = api.create_container(
                spec.image, command=list(spec.command), name=spec.name, environment=dict(spec.environment),
                labels=dict(spec.labels), host_config=host_config, tty=False,
            )
            api.start(created["Id"])
        return str(created["Id"])

    def stop(self, name: str, timeout: float, force: bool) -> bool:
        """SIGTERM, then wait up to ``timeout`` seconds; with ``force`` SIGKILL after that.
        True when the container has ended."""
        api = self._api
        with docker_errors(f"stopping container {name}"):
            try:
                api.kill(name, signal=int(signal.SIGTERM))
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: it is not running
                    raise
            try:
                api.wait(name, timeout=max(timeout, 1))
                return True
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                if not force:
                    return False
            api.kill(name, signal=int(signal.SIGKILL))
            api.wait(name, timeout=60)
            return True

    def remove(self, name: str) -> None:
        with docker_errors(f"removing container {name}"):
            try:
                self._api.remove_container(name, force=True)
            except docker.errors.NotFound:
                pass

    def logs(self, name: str, tail: int) -> str:
        with docker_errors(f"reading the output of container {name}"):
            data: bytes = self._api.logs(name, tail=tail)
        return data.decode("utf-8", "replace")

    def leftovers(self, labels: dict[str, str]) -> Leftovers:
        """Names of the containers, networks and volumes that carry all of ``labels``."""
        if not labels:
            raise ValueError("leftovers needs at least one label")
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        api = self._api
        with docker_errors("listing labelled containers, networks and volumes"):
            containers = api.containers(all=True, filters=filters)
            networks = api.networks(filters=filters)
            volumes = api.volumes(filters=filters).get("Volumes") or []
        return Leftovers(
            containers=tuple(sorted(c["Names"][0].lstrip("/") for c in containers)),
            networks=tuple(sorted(n["Name"] for n in networks)),
            volumes=tuple(sorted(v["Name"] for v in volumes)),
        )

    def node_containers(self) -> list[NodeContainerState]:
        """Every container labelled as a vantage6 node (ours and the reference's)."""
        with docker_errors("listing node containers"):
            found = self._api.containers(all=True, filters={"label": f"{LABEL_TYPE}={NODE_TYPE}"})
        states = [self.state(c["Id"]) for c in found]
        return [s for s in states if s is not None]

