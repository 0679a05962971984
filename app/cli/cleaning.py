"""What a stopped node can leave behind, and removing it: labelled containers, networks and
volumes, task folders, a stopped node container."""
from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import click

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.node_containers import DockerNodeContainers
from v6node.app.folders import NodeLocation
from v6node.domain.config import NodeConfig
from v6node.domain.containers import managed_labels
from v6node.domain.errors import CleanupIncomplete, ResourcesLeft

TASKS = "tasks"
_TASK_FOLDER = re.compile(r"^task-\d{9,}$")


def task_folders(data_dir: Path) -> list[Path]:
    folder = data_dir / TASKS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _TASK_FOLDER.match(p.name) and p.is_dir() and not p.is_symlink())


async def _remove_labelled(labels: dict[str, str]) -> None:
    runtime = DockerContainerRuntime()
    try:
        await runtime.remove_labelled(labels)
    finally:
        runtime.close()


def remove_leftovers(
    location: NodeLocation, config: NodeConfig | None, containers: DockerNodeContainers, echo: bool
) -> list[str]:
    """Remove what the (stopped) node left; the names of what was removed. Raises
    ``CleanupIncomplete`` naming what stays."""
    removed: list[str] = []
    state = containers.state(location.container_name)
    if state is not None and not state.running:
        containers.remove(location.container_name)
        removed.append(f"stopped node container {location.container_name}")
    labels = managed_labels(location.name)
    found = containers.leftovers(labels)
    left: list[str] = []
    if found:
        try:
            asyncio.run(_remove_labelled(labels))
        except ResourcesLeft as exc:
            left.extend(exc.left)
        still = containers.leftovers(labels)
        removed += [f"container {n}" for n in found.containers if n not in still.containers]
        removed += [f"network {n}" for n in found.networks if n not in still.networks]
        removed += [f"volume {n}" for n in found.volumes if n not in still.volumes]
    data_dir = Path(config.data_dir) if config is not None else location.data_dir
    for folder in task_folders(data_dir):
        try:
            shutil.rmtree(folder)
            removed.append(f"task folder {folder}")
        except OSError as exc:
            left.append(f"task folder {folder} ({exc.strerror or exc})")
    if echo:
        for item in removed:
            click.echo(f"removed {item}")
    if left:
        raise CleanupIncomplete(f"could not remove: {'; '.join(left)}")
    return removed
