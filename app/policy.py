"""Use case: decide whether a task's algorithm may run here, looking up what the rules need."""
from __future__ import annotations

import logging

from v6node.domain.config import PolicyConfig
from v6node.domain.errors import NodeError
from v6node.domain.model import TaskRef
from v6node.domain.policy import PolicyDecision, evaluate_policy, image_without_tag, is_regex
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.server_api import ServerApi

log = logging.getLogger("v6node.policy")


class CheckPolicy:
    """Evaluate ``policies`` for a task.

    Business rules beyond the pure evaluation:
    - organization names in ``allowed_organizations`` are resolved to ids on the server;
    - the task's algorithm store URL is read from the server when stores are restricted;
    - an ``allowed_algorithms`` entry with the image's name but another tag allows the
      image when both are the same local image (the reference asks the registry; here no
      registry needs to be reachable).
    A lookup that fails denies, with the reason: a policy never allows by accident.
    """

    def __init__(self, policy: PolicyConfig, server: ServerApi | None, runtime: ContainerRuntime | None) -> None:
        self.policy = policy
        self.server = server
        self.runtime = runtime

    async def __call__(self, task: TaskRef) -> PolicyDecision:
        try:
            names = await self._organization_names()
            store_url = await self._store_url(task)
            equivalent = await self._same_local_image(task.image)
        except NodeError as exc:
            return PolicyDecision(False, f"the policy could not be checked: {exc}")
        return evaluate_policy(
            self.policy, task.image, task.init_org_id, task.init_user_id,
            store_url=store_url, organization_names=names, equivalent_entries=equivalent,
        )

    async def _organization_names(self) -> dict[str, int]:
        wanted = [entry for entry in self.policy.allowed_organizations if not entry.isdigit()]
        if not wanted or self.server is None:
            return {}
        names = {}
        for name in wanted:
            found = await self.server.find_organizations(name)
            if len(found) == 1:
                names[name] = found[0].id
            else:
                log.warning("allowed_organizations entry %r matches %d organizations on the server", name, len(found))
        return names

    async def _store_url(self, task: TaskRef) -> str | None:
        if not self.policy.allowed_algorithm_stores or task.store_id is None or self.server is None:
            return None
        return await self.server.get_algorithm_store_url(task.store_id)

    async def _same_local_image(self, image: str) -> frozenset[str]:
        if self.runtime is None:
            return frozenset()
        bare = image_without_tag(image)
        candidates = [
            entry for entry in self.policy.allowed_algorithms
            if not is_regex(entry) and entry != image and image_without_tag(entry) == bare and entry != bare
        ]
        if not candidates:
            return frozenset()
        ours = await self.runtime.local_image_id(image)
        if ours is None:
            return frozenset()
        return frozenset([entry for entry in candidates if await self.runtime.local_image_id(entry) == ours])
