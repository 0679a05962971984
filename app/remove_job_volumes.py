"""Use case: remove the temporary volume of each job once the job is finished."""
from __future__ import annotations

import logging

from v6node.app.run_queue import RunQueue
from v6node.domain.config import NodeConfig
from v6node.domain.containers import job_of_tmp_volume, managed_labels, tmp_volume_name
from v6node.domain.errors import NodeError, ServerRejected
from v6node.domain.status import has_finished
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.server_api import ServerApi

log = logging.getLogger("v6node.node")


class RemoveJobVolumes:
    """The one owner of the jobs' temporary volumes (``/mnt/tmp``, shared by a job's runs here).

    Business rules:
    - a volume goes once no run of its job is held here and the job's root task is finished
      on the server (a job the server does not know is finished too);
    - volumes an earlier process left are found at start (``find_leftovers``) and go by the
      same rule; a failed look-up keeps the volume for the next try;
    - ``keep_task_folders`` keeps them all.
    """

    def __init__(self, config: NodeConfig, server: ServerApi, runtime: ContainerRuntime, queue: RunQueue) -> None:
        self.config = config
        self.server = server
        self.runtime = runtime
        self.queue = queue
        self._jobs: set[int] = set()

    def note(self, job_id: int | None) -> None:
        """A run of ``job_id`` used its volume here."""
        if job_id is not None and not self.config.keep_task_folders:
            self._jobs.add(job_id)

    async def find_leftovers(self) -> None:
        for volume in await self.runtime.list_volumes(managed_labels(self.config.name)):
            self.note(job_of_tmp_volume(self.config.name, volume))

    async def __call__(self) -> None:
        for job_id in sorted(self._jobs):
            if job_id in self.queue.jobs() or job_id not in self._jobs:
                continue
            # Out of the set while it is looked at: every executor calls this after each
            # run, and without this they would all ask the server about the same jobs at once.
            self._jobs.discard(job_id)
            try:
                if not await self._finished(job_id):
                    self._jobs.add(job_id)
                    continue
                await self.runtime.remove_volume(tmp_volume_name(self.config.name, job_id, 0))
            except NodeError as exc:
                self._jobs.add(job_id)
                log.debug("temporary volume of job %s stays for now: %s", job_id, exc)
                continue
            log.info("job %s is finished; its temporary volume is removed", job_id)

    async def _finished(self, job_id: int) -> bool:
        try:
            root = await self.server.get_task(job_id)
        except ServerRejected as exc:
            if exc.status != 404:
                raise
            return True  # the server knows no such job: nothing will use the volume again
        return root.status is not None and has_finished(root.status)
