"""What happens to a run on this node, as the node tells whoever watches it (an embedding app, a log)."""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from attrs import frozen

from v6node.domain.status import RunStatus


class Stage(StrEnum):
    """The steps of a run on this node that ``RunEvent`` reports."""

    RECEIVED = "received"  # the node took the run (queued to start, re-attach or report)
    STARTED = "started"  # its algorithm's container runs
    FINISHED = "finished"  # its end is reported to the server


@frozen
class RunEvent:
    """One step of one run. ``status`` is set when it finished; ``detail`` says more (the
    container, what a reconciliation decided)."""

    stage: Stage
    run_id: int
    task_id: int
    image: str
    at: datetime
    status: RunStatus | None = None
    detail: str = ""
