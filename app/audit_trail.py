"""What the node writes in its audit log about each run: the decision, the start, the end."""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from v6node.domain.errors import NodeError
from v6node.domain.model import Run
from v6node.domain.policy import PolicyDecision
from v6node.domain.status import RunStatus
from v6node.ports.audit_log import AuditLog
from v6node.ports.clock import Clock

log = logging.getLogger("v6node.audit")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AuditTrail:
    """Shared by the use cases that decide, start and report runs.

    Business rules:
    - one entry when a run's policy is decided (allowed or denied, with the reason), one when
      its container starts, one when its end is reported: who asked (user, organization),
      what ran (the image and its local image id), on which databases, with what input and
      result (their SHA-256 only);
    - never data, keys or tokens;
    - writing the audit log failing never fails a run: it is logged as an ERROR.
    """

    def __init__(self, audit_log: AuditLog, clock: Clock) -> None:
        self.audit_log = audit_log
        self.clock = clock

    async def decided(self, run: Run, decision: PolicyDecision, input_sha256: str, image_id: str | None) -> None:
        task = run.task
        await self._write(
            "decided", run,
            user_id=task.init_user_id, organization_id=task.init_org_id, job_id=task.job_id, image=task.image,
            image_id=image_id, databases=[db.label for db in task.databases], allowed=decision.allowed,
            reason=decision.reason, input_sha256=input_sha256,
        )

    async def started(self, run: Run, container_id: str) -> None:
        await self._write("started", run, container_id=container_id)

    async def finished(
        self, run: Run, status: RunStatus, result_sha256: str | None, *, reported: RunStatus | None = None
    ) -> None:
        """``status`` is the end the server holds; ``reported`` is what the node sent when the
        server kept another end (a run killed on the server before the node's report)."""
        facts: dict[str, Any] = {"status": str(status), "result_sha256": result_sha256}
        if reported is not None and reported != status:
            facts["reported"] = str(reported)
        await self._write("finished", run, **facts)

    async def _write(self, event: str, run: Run, **facts: Any) -> None:
        entry = {"at": self.clock.now().isoformat(), "event": event, "run_id": run.id, "task_id": run.task.id, **facts}
        try:
            await self.audit_log.append(entry)
        except NodeError as exc:
            log.error("the audit log missed the %s entry of run %s: %s", event, run.id, exc)
