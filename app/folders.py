"""Where a node's config, data and logs live: the reference's folder rules (appdirs on Linux).

The reference CLI (``v6 node``) asks ``appdirs`` for its folders with the application name
``vantage6``; on Linux that is the XDG base directory layout:

============  ==============================================  =====================================
              user (default)                                  system (``--system``)
============  ==============================================  =====================================
config file   ``$XDG_CONFIG_HOME/vantage6/node/<name>.yaml``  ``/etc/vantage6/node/<name>.yaml`` (*)
data folder   ``$XDG_DATA_HOME/vantage6/node/<name>``         ``<first of $XDG_DATA_DIRS>/vantage6/node/<name>``
log folder    ``$XDG_CACHE_HOME/vantage6/log/node/<name>``    the data folder
log file      ``node_user.log``                               ``node_system.log``
============  ==============================================  =====================================

(*) the first of ``$XDG_CONFIG_DIRS`` (default ``/etc/xdg``) plus ``vantage6``; the reference
replaces any such folder whose path contains ``xdg`` with ``/etc/vantage6``. Unset or empty
variables take the XDG defaults (``~/.config``, ``~/.local/share``, ``~/.cache``,
``/usr/local/share:/usr/share``). A config's ``directories: {data, log}`` overrides the folders.

In a container (``--dockerized``) the folders are fixed, as in the reference's image:
``/mnt/config``, ``/mnt/data`` and ``/mnt/log``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen

APP = "vantage6"
KIND = "node"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_.-]+$")
CONTAINER_CONFIG_DIR = Path("/mnt/config")
CONTAINER_DATA_DIR = Path("/mnt/data")
CONTAINER_LOG_DIR = Path("/mnt/log")


def scope_name(system: bool) -> str:
    return "system" if system else "user"


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or os.path.expanduser("~"))


def _xdg_home(env: Mapping[str, str], variable: str, default: str) -> Path:
    value = env.get(variable)
    return Path(value) if value else _home(env) / default


def _xdg_first(env: Mapping[str, str], variable: str, default: str) -> Path:
    value = env.get(variable) or default
    first = value.split(os.pathsep)[0].rstrip(os.sep) or default.split(os.pathsep)[0]
    return Path(os.path.expanduser(first))


def config_dir(system: bool, env: Mapping[str, str]) -> Path:
    """The folder of the node config files (``<name>.yaml``) of one scope."""
    if not system:
        return _xdg_home(env, "XDG_CONFIG_HOME", ".config") / APP / KIND
    folder = _xdg_first(env, "XDG_CONFIG_DIRS", "/etc/xdg") / APP
    if "xdg" in str(folder):
        folder = Path("/etc") / APP
    return folder / KIND


def data_root(system: bool, env: Mapping[str, str]) -> Path:
    """The folder that holds the data folders of every node of one scope."""
    if system:
        return _xdg_first(env, "XDG_DATA_DIRS", os.pathsep.join(("/usr/local/share", "/usr/share"))) / APP / KIND
    return _xdg_home(env, "XDG_DATA_HOME", ".local/share") / APP / KIND


def data_dir(name: str, system: bool, env: Mapping[str, str]) -> Path:
    return data_root(system, env) / name


def log_dir(name: str, system: bool, env: Mapping[str, str]) -> Path:
    if system:
        return data_dir(name, system, env)
    return _xdg_home(env, "XDG_CACHE_HOME", ".cache") / APP / "log" / KIND / name


def log_file_name(system: bool) -> str:
    return f"{KIND}_{scope_name(system)}.log"


@frozen
class NodeLocation:
    """A node's name and scope and the default folders that follow from them."""

    name: str
    system: bool
    config_file: Path
    data_dir: Path  # unless the config's directories.data says otherwise
    log_dir: Path  # unless the config's directories.log says otherwise
    dockerized: bool = False

    @property
    def scope(self) -> str:
        return scope_name(self.system)

    @property
    def container_name(self) -> str:
        """The name of the node's own container when it runs as one (the reference's name)."""
        return f"{APP}-{self.name}-{self.scope}"

    @property
    def data_volume_name(self) -> str:
        """The Docker volume that is the data folder of a node container (the reference's name)."""
        return f"{APP}-{self.name}-{self.scope}-vol"


def locate(name: str, system: bool, env: Mapping[str, str]) -> NodeLocation:
    """The node called ``name`` in the config folder of its scope (the file may not exist)."""
    return NodeLocation(
        name=name,
        system=system,
        config_file=config_dir(system, env) / f"{name}.yaml",
        data_dir=data_dir(name, system, env),
        log_dir=log_dir(name, system, env),
    )


def locate_file(config_file: Path, system: bool, env: Mapping[str, str]) -> NodeLocation:
    """A node given by its config file (``-c FILE``): its name is the file's stem."""
    name = config_file.stem
    return NodeLocation(
        name=name,
        system=system,
        config_file=config_file.absolute(),
        data_dir=data_dir(name, system, env),
        log_dir=log_dir(name, system, env),
    )


def locate_in_container(name: str, system: bool, config_file: Path | None = None) -> NodeLocation:
    """A node inside its container: the config in /mnt/config, data in /mnt/data, logs in /mnt/log."""
    return NodeLocation(
        name=name,
        system=system,
        config_file=config_file or CONTAINER_CONFIG_DIR / f"{name}.yaml",
        data_dir=CONTAINER_DATA_DIR,
        log_dir=CONTAINER_LOG_DIR,
        dockerized=True,
    )


def configured_names(system: bool, env: Mapping[str, str]) -> list[str]:
    """The names of the nodes configured in one scope's config folder, sorted."""
    folder = config_dir(system, env)
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob("*.yaml") if path.is_file())


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a node name (it names files, folders and Docker objects), or None."""
    if not NAME_PATTERN.match(name):
        return f"node name {name!r} may only contain letters, digits, '_', '.' and '-'"
    if not name[0].isalnum():
        return f"node name {name!r} must start with a letter or a digit"
    return None
