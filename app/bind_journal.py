"""Use case: make the run journal this server's and this node's, before any of its records is used."""
from __future__ import annotations

import logging

from v6node.app.session import NodeSession
from v6node.domain.config import NodeConfig
from v6node.domain.containers import managed_labels
from v6node.domain.journal import JournalIdentity
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.run_journal import RunJournal
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.node")


class BindJournal:
    """Bind the journal to the identity the node just logged in as; returns that identity.

    Business rules:
    - a re-installed server, a reset one or another collaboration reuse run ids: a journal
      written for another identity is set aside whole (kept, never deleted) and never
      reconciled against this server, with one WARNING naming both identities;
    - the containers, volumes and task folders of the node are then leftovers of the other
      identity, and are removed.
    """

    def __init__(
        self,
        config: NodeConfig,
        journal: RunJournal,
        runtime: ContainerRuntime,
        workspace: TaskWorkspace,
        session: NodeSession,
    ) -> None:
        self.config = config
        self.journal = journal
        self.runtime = runtime
        self.workspace = workspace
        self.session = session

    async def __call__(self) -> JournalIdentity:
        me = self.session.me()
        identity = JournalIdentity.of(self.config.api_base, me.node_id, me.organization_id, me.collaboration_id)
        binding = await self.journal.bind(identity)
        if binding.set_aside is None:
            return identity
        before = binding.previous.describe() if binding.previous else "an unknown server and node (an older v6node)"
        log.warning(
            "the run journal was written for %s, but this node is %s: it is kept as %s and a fresh journal is "
            "used; none of its %d record(s) is reported to this server, and this node's containers, volumes and "
            "task folders are removed as leftovers",
            before, identity.describe(), binding.set_aside, binding.entries_set_aside,
        )
        await self.runtime.remove_labelled(managed_labels(self.config.name))
        for run_id in await self.workspace.run_ids():
            await self.workspace.remove(run_id)
        return identity
