"""Use case: on a cluster, check that every host sees the task folder (and the file databases)."""
from __future__ import annotations

import logging
import secrets

from v6node.domain.cluster import hosts_without, shared_folder_check_spec
from v6node.domain.config import NodeConfig
from v6node.domain.errors import NodeError
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.node")


class CheckSharedFolder:
    """Write a marker with a random token beside the task folders and have a one-shot
    container on every host print it.

    Business rules:
    - an algorithm may run on any host of the cluster, and its task folder is bind-mounted
      from the same path there: a host that does not see the token (no shared storage there,
      or another one mounted at that path) or lacks a file database stops the node, naming
      each such host and what it said;
    - the marker is removed afterwards, whatever the outcome.
    """

    def __init__(self, config: NodeConfig, runtime: ContainerRuntime, workspace: TaskWorkspace) -> None:
        self.config = config
        self.runtime = runtime
        self.workspace = workspace

    async def __call__(self) -> str:
        image = self.config.proxy_check_image
        if image is None:
            raise NodeError("checking the shared task folder needs proxy_check_image (an image with cat)")
        token = secrets.token_hex(16)
        marker = f".v6node-shared-check-{token[:8]}"
        tasks_dir = self.workspace.tasks_dir()
        await self.workspace.write_marker(marker, token.encode())
        try:
            spec = shared_folder_check_spec(self.config.name, image, tasks_dir, marker, self.config.databases)
            results = await self.runtime.run_on_every_host(spec)
        finally:
            await self.workspace.remove_marker(marker)
        missing = hosts_without(results, token)
        if missing or not results:
            raise NodeError(
                f"the task folder {tasks_dir} (and every file database) must be at the same path on every host that "
                "may run algorithms (shared storage such as NFS), but these hosts do not see it: "
                + ("; ".join(missing) or "none answered")
                + ". Mount it there, or keep algorithms off those hosts with runtime.constraints"
            )
        hosts = ", ".join(result.host for result in results)
        log.info("the task folder %s is shared with every host: %s", tasks_dir, hosts)
        return f"{len(results)} host(s) see the task folder: {hosts}"
