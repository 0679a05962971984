"""A ``ContainerSpec`` as the Engine API's body for a one-task Swarm service (API 1.41, Engine 20.10)."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from attrs import frozen

from v6node.domain.containers import ContainerSpec
from v6node.domain.errors import ContainerStartFailed

_SIZE = re.compile(r"(?:^|,)size=(\d+)([kmg]?)", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# The kernel of the test machines has no IPVS, and a job needs no virtual IP: DNS round robin.
ENDPOINT_SPEC = {"Mode": "dnsrr"}


@frozen
class Placement:
    """Where and with what a job may run: the operator's ``runtime`` settings."""

    constraints: tuple[str, ...] = ()
    reserve_cpus: float | None = None
    reserve_memory: int | None = None  # bytes
    gpu_resource: str = "NVIDIA-GPU"  # the generic resource a GPU job reserves one of


def _tmpfs_bytes(options: str) -> int | None:
    match = _SIZE.search(options)
    return None if match is None else int(match.group(1)) * _UNITS[match.group(2).lower()]


def _mounts(spec: ContainerSpec, volume_source: Callable[[str], str]) -> list[dict[str, Any]]:
    """Binds as they are; a named volume becomes a bind of its folder on the shared storage
    (a Swarm volume would be local to whichever host runs the task); tmpfs with its size."""
    mounts: list[dict[str, Any]] = []
    for mount in spec.mounts:
        source = volume_source(mount.source) if mount.kind == "volume" else mount.source
        mounts.append({"Type": "bind", "Source": source, "Target": mount.target, "ReadOnly": mount.read_only})
    for target, options in spec.tmpfs.items():
        tmpfs: dict[str, Any] = {"Mode": 0o1777}
        size = _tmpfs_bytes(options)
        if size is not None:
            tmpfs["SizeBytes"] = size
        mounts.append({"Type": "tmpfs", "Target": target, "TmpfsOptions": tmpfs})
    return mounts


def _resources(spec: ContainerSpec, placement: Placement) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if spec.nano_cpus is not None:
        limits["NanoCPUs"] = spec.nano_cpus
    if spec.mem_limit is not None:
        limits["MemoryBytes"] = spec.mem_limit
    if spec.pids_limit is not None:
        limits["Pids"] = spec.pids_limit
    reservations: dict[str, Any] = {}
    if placement.reserve_cpus is not None:
        reservations["NanoCPUs"] = int(placement.reserve_cpus * 1_000_000_000)
    if placement.reserve_memory is not None:
        reservations["MemoryBytes"] = placement.reserve_memory
    if spec.gpu:
        reservations["GenericResources"] = [{"DiscreteResourceSpec": {"Kind": placement.gpu_resource, "Value": 1}}]
    return {"Limits": limits, "Reservations": reservations}


def task_template(
    spec: ContainerSpec, image: str, placement: Placement, volume_source: Callable[[str], str]
) -> dict[str, Any]:
    """The job's one task: the same labels, env, mounts, limits and confinement as on one engine.

    Not expressible on Engine 20.10 (API 1.41) and so not set: ``no-new-privileges`` (its
    ``Privileges.NoNewPrivileges`` came with API 1.46) and other ``security_opt``; with every
    capability dropped a setuid binary still gains no capability.
    """
    if spec.network.startswith("container:"):
        raise ContainerStartFailed(f"{spec.name}: a Swarm job cannot share another container's network ({spec.network})")
    container: dict[str, Any] = {
        "Image": image,
        "Env": [f"{key}={value}" for key, value in spec.environment.items()],
        "Labels": dict(spec.labels),
        "Mounts": _mounts(spec, volume_source),
        "ReadOnly": spec.read_only_root,
        # A kill (an update that shuts the task down) ends it at once, as SIGKILL does on one engine.
        "StopSignal": "SIGKILL",
        "StopGracePeriod": 0,
    }
    if spec.cap_drop:
        container["CapabilityDrop"] = list(spec.cap_drop)
    if spec.command is not None:
        container["Args"] = list(spec.command)
    if spec.user is not None:
        container["User"] = spec.user
    if spec.extra_hosts:
        container["Hosts"] = [f"{address} {name}" for name, address in spec.extra_hosts.items()]
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": _resources(spec, placement),
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": {"Constraints": list(placement.constraints)},
        "Networks": [{"Target": spec.network}],
    }
    if spec.log_size is not None:
        template["LogDriver"] = {
            "Name": "json-file", "Options": {"max-size": str(max(spec.log_size // 2, 1024)), "max-file": "2"},
        }
    return template


def one_task() -> dict[str, Any]:
    """One replica, which with restart condition ``none`` is one task, never started again.

    Not a ``replicated-job``: Engine 20.10 keeps the tasks of a removed job, and their exited
    containers on the hosts, for good (moby/moby#42789, #44312; fixed in swarmkit in 2023).
    The tasks of a removed service are removed with their containers (measured on the rig:
    within 0.5 s), and a manager that restarts does not start a completed task again.
    """
    return {"Replicated": {"Replicas": 1}}


def on_every_host() -> dict[str, Any]:
    """One task per eligible host, never started again (restart ``none``; measured: also not a
    failed or rejected one), removed with the service as for ``one_task``."""
    return {"Global": {}}


# A constraint no node meets (node ids are 25 random characters): what a kill adds.
KILL_CONSTRAINT = "node.id==v6node-killed"


def killed_template(template: dict[str, Any]) -> dict[str, Any]:
    """The task template a kill updates the service to. The update shuts the running task down
    (stop-first, with the job's SIGKILL: exit 137) and keeps its container and logs until the
    service is removed; the task it starts instead waits for a node no host is, for good.
    (Scaling to 0 replicas would remove the container, and its logs, at once.)"""
    placement = dict(template.get("Placement") or {})
    placement["Constraints"] = [*(placement.get("Constraints") or []), KILL_CONSTRAINT]
    return {**template, "Placement": placement}


def was_killed(service: dict[str, Any]) -> bool:
    placement = (service.get("Spec", {}).get("TaskTemplate") or {}).get("Placement") or {}
    return KILL_CONSTRAINT in (placement.get("Constraints") or [])
