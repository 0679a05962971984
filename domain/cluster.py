"""What the node checks on a cluster before it takes runs (pure)."""
from __future__ import annotations

from v6node.domain.config import DatabaseConfig
from v6node.domain.containers import LABEL_NODE, LABEL_TYPE, ContainerSpec, HostRun, Mount, managed_labels


def shared_folder_check_spec(
    node_name: str, image: str, tasks_dir: str, marker: str, databases: tuple[DatabaseConfig, ...]
) -> ContainerSpec:
    """A one-shot container that prints the marker from the task folder, mounted read-only at
    the same path as on the node's host, with every on-disk database mounted the same way
    (a host without one of them cannot start it, and says which)."""
    mounts = [Mount(source=tasks_dir, target=tasks_dir, read_only=True)]
    mounts += [Mount(source=db.uri, target=db.uri, read_only=True) for db in databases if db.is_file or db.is_folder]
    return ContainerSpec(
        name=f"vantage6-{node_name}-shared-check",
        image=image,
        network="",
        mounts=tuple(mounts),
        labels={LABEL_TYPE: "shared-check", LABEL_NODE: node_name, **managed_labels(node_name)},
        cap_drop=("ALL",),
        security_opt=("no-new-privileges",),
        command=("cat", f"{tasks_dir}/{marker}"),
        pids_limit=64,
        mem_limit=64 * 1024 * 1024,
        log_size=64 * 1024,
        read_only_root=True,
    )


def hosts_without(results: list[HostRun], token: str) -> list[str]:
    """The hosts whose check did not print ``token``, each with what it said instead."""
    return [
        f"{result.host} ({result.output.strip()[:200] or f'exit code {result.exit_code}'})"
        for result in results
        if result.exit_code != 0 or token not in result.output
    ]
