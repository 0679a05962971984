"""Bind-mount sources for a node that runs in a container: its paths, as the engine's host sees them.

A bind mount names a path on the engine's host. A node in a container writes task folders
under ``/mnt/data`` (its data volume) and reads databases under ``/mnt/<label>`` (bind
mounts); those paths mean nothing to the engine. The node's own container knows where they
come from: each of its mounts has a ``Destination`` inside and a ``Source`` on the host (a
volume's ``Source`` is the folder where the engine keeps it). A path under a destination
maps to the same relative path under its source.
"""
from __future__ import annotations

import logging
import posixpath
import re
import threading
from collections.abc import Callable
from typing import Any

import docker.errors

from v6node.domain.containers import Mount
from v6node.domain.errors import ContainerStartFailed

log = logging.getLogger(__name__)

_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")


def own_container_id(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The id of the container this process runs in, from the engine's files mounted into it
    (``/etc/hostname``, ``/etc/hosts``: ``.../containers/<id>/...``); None outside a container."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 4 and fields[4] in ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"):
                    match = _CONTAINER_ID.search(fields[3])
                    if match:
                        return match.group(1)
    except OSError:
        return None
    return None


class HostPaths:
    """Maps paths of this process to the engine host's paths, from its own container's mounts.

    ``inspect`` is the engine's container inspection (``APIClient.inspect_container``);
    ``containers`` are the names or ids to try for our own container, in order. The mounts
    are read once, at the first translation.
    """

    def __init__(self, inspect: Callable[[str], dict[str, Any]], containers: tuple[str, ...]) -> None:
        self._inspect = inspect
        self._containers = containers
        self._mounts: list[tuple[str, str]] | None = None
        self._lock = threading.Lock()

    def _load(self) -> list[tuple[str, str]]:
        with self._lock:
            if self._mounts is None:
                self._mounts = self._read_mounts()
            return self._mounts

    def _read_mounts(self) -> list[tuple[str, str]]:
        for name in self._containers:
            try:
                info = self._inspect(name)
            except docker.errors.NotFound:
                continue
            mounts = [
                (posixpath.normpath(m["Destination"]), m["Source"])
                for m in info.get("Mounts") or []
                if m.get("Destination") and m.get("Source")
            ]
            mounts.sort(key=lambda pair: len(pair[0]), reverse=True)
            log.info(
                "the node runs in container %s; bind mounts are translated: %s",
                info.get("Name", name).lstrip("/"),
                ", ".join(f"{dest} -> {source}" for dest, source in mounts) or "(it has no mounts)",
            )
            return mounts
        raise ContainerStartFailed(
            "the node runs in a container, but the engine knows none of "
            + ", ".join(self._containers)
            + ": give the node's container the name the CLI expects (vantage6-<name>-<user|system>)"
        )

    def host_path(self, path: str) -> str:
        """The host's path for ``path``; ``ContainerStartFailed`` when no mount holds it."""
        normal = posixpath.normpath(path)
        for destination, source in self._load():
            if normal == destination:
                return source
            if normal.startswith(destination.rstrip("/") + "/"):
                return posixpath.join(source, posixpath.relpath(normal, destination))
        raise ContainerStartFailed(
            f"{path} is in the node container's own file system, which the engine cannot mount into an "
            "algorithm container: keep task folders on the data volume (/mnt/data) and databases on mounts"
        )


def of_own_container(inspect: Callable[[str], dict[str, Any]], own_container: str | None) -> HostPaths | None:
    """The translation for a node in the container ``own_container`` (tried after the id this
    process finds for itself); None for a node on the host."""
    if own_container is None:
        return None
    return HostPaths(inspect, tuple(name for name in (own_container_id(), own_container) if name))


def mount_source(paths: HostPaths | None, mount: Mount) -> str:
    """A mount's source as the engine should see it: a bind's path translated, a volume's name as it is."""
    if paths is None or mount.kind != "bind":
        return mount.source
    return paths.host_path(mount.source)
