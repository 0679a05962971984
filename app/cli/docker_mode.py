"""The node as a container: ``v6node start --docker`` on the host, ``v6node start --dockerized`` inside it.

As the reference's ``v6 node start``: the config at ``/mnt/config/<name>.yaml`` (read-only), the
host's log folder at ``/mnt/log``, the data volume ``vantage6-<name>-<scope>-vol`` at
``/mnt/data``, the Docker socket, the private key at ``/mnt/private_key.pem`` and each file or
folder database at ``/mnt/<label><suffix>``; the environment says where (``DATA_VOLUME_NAME``,
``PRIVATE_KEY``, ``<LABEL>_DATABASE_URI``). One deviation: the container shares the host's
network namespace, so the algorithm proxy listens on the algorithm network's gateway exactly
as on the host (README, "The node in a container").
"""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click
import yaml

from v6node.adapters.docker.node_containers import BindSpec, DockerNodeContainers, NodeContainerSpec
from v6node.adapters.system.data_folder_lock import DataFolderLock
from v6node.app.cli.common import ENV, NotOnline, describe, fail, load_node, node_args, node_options, package_version, pick_node
from v6node.app.cli.files import file_size, last_lines, private_folder, read_yaml, show_log_tail
from v6node.app.config import parse_config
from v6node.app.folders import CONTAINER_CONFIG_DIR, CONTAINER_DATA_DIR, CONTAINER_LOG_DIR, NodeLocation, log_file_name
from v6node.domain.config import FILE_DATABASE_TYPES, FOLDER_DATABASE_TYPES, NodeConfig
from v6node.domain.errors import ConfigError, NodeAlreadyRunning, NodeError

READY_MARK = "ready; algorithm proxy at "
CONTAINER_KEY = "/mnt/private_key.pem"
DOCKER_SOCKET = "/var/run/docker.sock"
LABEL_DATA_VOLUME = "v6node.data-volume"


def default_image() -> str:
    return f"v6node:{package_version()}"


def node_image(location: NodeLocation, option: str | None) -> str:
    """``--image``, else the config's ``images.node``, else ``v6node:<this version>``."""
    if option:
        return option
    images = read_yaml(location.config_file).get("images")
    node = images.get("node") if isinstance(images, dict) else None
    return str(node) if node else default_image()


def _docker_socket(env: Mapping[str, str]) -> str:
    host = env.get("DOCKER_HOST", "")
    if not host:
        return DOCKER_SOCKET
    if host.startswith("unix://"):
        return host[len("unix://"):]
    raise NodeError(f"--docker needs the engine on a unix socket to hand to the node's container; DOCKER_HOST is {host}")


def _database_mounts(config: NodeConfig) -> tuple[list[BindSpec], dict[str, str]]:
    binds, env = [], {}
    for db in config.databases:
        path = Path(db.uri)
        if (db.type in FILE_DATABASE_TYPES | FOLDER_DATABASE_TYPES) or path.exists():
            name = f"{db.label}{path.suffix}"
            binds.append(BindSpec(str(path), f"/mnt/{name}", read_only=True))
            env[f"{db.label.upper()}_DATABASE_URI"] = name
        else:
            env[f"{db.label.upper()}_DATABASE_URI"] = db.uri
    return binds, env


def _extra(file: str, raw: dict[str, Any], env: dict[str, str]) -> tuple[list[BindSpec], dict[str, str]]:
    """``node_extra_mounts`` (docker ``-v`` specs) and ``node_extra_env``, checked as the reference does."""
    binds = []
    for spec in raw.get("node_extra_mounts") or []:
        parts = str(spec).split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(file, "node_extra_mounts", f"expected 'source:target[:ro]', got {spec!r}")
        binds.append(BindSpec(parts[0], parts[1], read_only=len(parts) == 3 and parts[2] == "ro"))
    extra = {str(k): str(v) for k, v in (raw.get("node_extra_env") or {}).items()}
    bad = sorted(k for k in extra if not k.isidentifier() or k in env)
    if bad:
        raise ConfigError(file, "node_extra_env", f"{', '.join(bad)} cannot be set (not identifiers, or set by v6node)")
    return binds, extra


def container_spec(location: NodeLocation, config: NodeConfig, image: str) -> NodeContainerSpec:
    raw = read_yaml(location.config_file)
    volume = location.data_volume_name
    binds = [
        BindSpec(_docker_socket(ENV), DOCKER_SOCKET),
        BindSpec(str(location.config_file), f"{CONTAINER_CONFIG_DIR}/{location.name}.yaml", read_only=True),
        BindSpec(str(config.log_dir), str(CONTAINER_LOG_DIR)),
        BindSpec(volume, str(CONTAINER_DATA_DIR), volume=True),
    ]
    env = {"DATA_VOLUME_NAME": volume}
    if config.private_key:
        key = Path(config.private_key if os.path.isabs(config.private_key) else Path(config.data_dir) / config.private_key)
        if not key.is_file():
            raise ConfigError(config.source, "encryption.private_key", f"no private key at {key}")
        binds.append(BindSpec(str(key), CONTAINER_KEY, read_only=True))
        env["PRIVATE_KEY"] = CONTAINER_KEY
    db_binds, db_env = _database_mounts(config)
    env.update(db_env)
    extra_binds, extra_env = _extra(config.source, raw, env)
    env.update(extra_env)
    return NodeContainerSpec(
        name=location.container_name,
        image=image,
        command=("start", "--dockerized", "--name", location.name, *(["--system"] if location.system else [])),
        binds=tuple(binds + db_binds + extra_binds),
        environment=env,
        labels={"vantage6-type": "node", "system": str(location.system), "name": location.config_file.name},
    )


def start_in_docker(location: NodeLocation, config: NodeConfig, image: str, timeout: float) -> None:
    """Run the node's container and wait until the node in it is online or has ended."""
    containers = DockerNodeContainers()
    try:
        name = location.container_name
        state = containers.state(name)
        if state is not None and state.running:
            raise NodeAlreadyRunning(f"{describe(location)} is already running in container {name}")
        holder = DataFolderLock(config.data_dir).holder()
        if holder is not None:
            raise NodeAlreadyRunning(f"{describe(location)} is already running on this host (PID {holder})")
        if not containers.image_exists(image):
            raise NodeError(
                f"the node image {image} is not on this Docker engine: build it with scripts/build-node-image "
                "(or name another with --image or the config's images.node)"
            )
        spec = container_spec(location, config, image)
        if state is not None:
            containers.remove(name)  # a stopped one from before: its output is in the log folder
        containers.ensure_volume(location.data_volume_name, {LABEL_DATA_VOLUME: location.name})
        private_folder(Path(config.log_dir))
        log_file = Path(config.log_dir) / log_file_name(location.system)
        offset = file_size(log_file)
        containers.run(spec)
        click.echo(f"starting {describe(location)} in container {name} ({image}); waiting until it is online")
        _wait_online(containers, location, log_file, offset, timeout)
    finally:
        containers.close()


def _wait_online(containers: DockerNodeContainers, location: NodeLocation, log_file: Path, offset: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = [line for line in last_lines(log_file, 200, offset) if READY_MARK in line]
        if ready:
            # The checklist's line "<log prefix>[ok] ready      <details>": the details.
            details = ready[-1].split("[ok] ready", 1)[-1].strip()
            click.echo(f"{describe(location)} is online in container {location.container_name}: {details}")
            click.echo(f"  log: {log_file}  (follow it: v6node attach {' '.join(node_args(location))})")
            return
        state = containers.state(location.container_name)
        if state is None or not state.running:
            code = state.exit_code if state is not None else None
            show_log_tail("the last lines of its log", log_file, offset)
            output = containers.logs(location.container_name, 15) if state is not None else ""
            for line in output.splitlines():
                click.echo(f"  | {line}", err=True)
            raise NodeError(f"{describe(location)} did not start in its container (exit code {code})")
        if time.monotonic() >= deadline:
            show_log_tail("its log so far", log_file, offset)
            raise NotOnline(f"{describe(location)} is not online after {timeout:g} s; its container goes on trying")
        time.sleep(0.25)


def load_in_container(location: NodeLocation, env: Mapping[str, str]) -> NodeConfig:
    """The config as the node in its container sees it: databases and key where the
    environment says they are, folders fixed to ``/mnt/data`` and ``/mnt/log``."""
    file = location.config_file
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(file), "", f"cannot read the file: {exc}") from exc
    if isinstance(data, dict):
        data.pop("directories", None)
        logging_section = data.get("logging")
        if isinstance(logging_section, dict) and os.sep in str(logging_section.get("file") or ""):
            logging_section.pop("file")
        for db in data.get("databases") or []:
            value = env.get(f"{str(db.get('label', '')).upper()}_DATABASE_URI") if isinstance(db, dict) else None
            if value:
                mounted = Path("/mnt") / value
                db["uri"] = str(mounted) if not os.path.isabs(value) and mounted.exists() else value
        key = env.get("PRIVATE_KEY")
        if key and os.path.isfile(key) and isinstance(data.get("encryption"), dict):
            data["encryption"]["private_key"] = key
    return parse_config(
        data, file=str(file), name=location.name, default_data_dir=str(CONTAINER_DATA_DIR),
        default_log_dir=str(CONTAINER_LOG_DIR),
    )


@attrs.frozen
class AuditedNode:
    """The node an ``audit`` command reads: ``in_container`` reads the data volume of ``start --docker``."""

    location: NodeLocation
    in_container: bool


F = TypeVar("F", bound=Callable[..., Any])


def audited_node_option(command: F) -> F:
    """``--name``/``-c``/``--system`` and ``--docker`` for ``audit``, handed to ``load_audited_node``."""

    @functools.wraps(command)
    def wrapper(*args: Any, name: str | None, config_file: str | None, system: bool, docker: bool, **kwargs: Any) -> Any:
        try:
            location = pick_node(name, config_file, system)
        except NodeError as exc:
            fail(exc)
        return command(*args, config_file=AuditedNode(location, docker), **kwargs)

    flag = click.option("--docker", is_flag=True, help="The node run with `start --docker`: its audit log is in its data volume.")
    return node_options(flag(wrapper))  # type: ignore[return-value]


def load_audited_node(node: AuditedNode) -> NodeConfig:
    """The node's config with the data folder its audit log is in: the host's, or the data volume's
    folder on the engine's host (readable as root); a hint when the host's has none and the volume exists."""
    location = node.location
    try:
        config = load_node(location)
        if node.in_container:
            folder = _volume_folder(location.data_volume_name)
            if folder is None:
                raise NodeError(f"{describe(location)} has no data volume {location.data_volume_name}: it never ran in its container")
            if not os.access(folder, os.R_OK | os.X_OK):
                raise NodeError(f"data volume {location.data_volume_name} is at {folder}, which this user cannot read (run it as root)")
            return attrs.evolve(config, data_dir=folder)
    except NodeError as exc:
        fail(exc)
    if not (Path(config.data_dir) / "audit.jsonl").exists() and _volume_folder(location.data_volume_name, quiet=True):
        click.echo(f"note: no audit log in {config.data_dir}; when {describe(location)} runs in its container "
                   f"it keeps it in data volume {location.data_volume_name}: add --docker", err=True)
    return config


def _volume_folder(volume: str, quiet: bool = False) -> str | None:
    containers = DockerNodeContainers()
    try:
        return containers.volume_folder(volume)
    except NodeError:  # no engine, or it answered an error
        if quiet:
            return None
        raise
    finally:
        containers.close()
