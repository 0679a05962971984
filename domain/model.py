"""Value objects for what the node learns from the server: identity, tasks and runs."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from attrs import field, frozen, validators

from v6node.domain.status import RunStatus


def _positive(_instance: object, attribute: Any, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be a positive id, got {value!r}")


def _aware(_instance: object, attribute: Any, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{attribute.name} must be timezone-aware, got {value!r}")


@frozen
class NodeIdentity:
    """Who this node is on the server (the reference's "whoami")."""

    node_id: int = field(validator=_positive)
    node_name: str
    organization_id: int = field(validator=_positive)
    organization_name: str
    collaboration_id: int = field(validator=_positive)


@frozen
class Organization:
    id: int = field(validator=_positive)
    name: str
    # base64 of the PEM text of the organization's public key; "" when none is set.
    public_key: str = ""


@frozen
class Collaboration:
    id: int = field(validator=_positive)
    name: str
    encrypted: bool


@frozen
class RequestedDatabase:
    """A database label a task asks for, with its per-request parameters."""

    label: str
    parameters: dict[str, Any] = field(factory=dict, hash=False)


@frozen
class TaskRef:
    """The parts of a server task that a node needs to run one of its runs."""

    id: int = field(validator=_positive)
    image: str = field(validator=validators.min_len(1))
    collaboration_id: int = field(validator=_positive)
    name: str = ""
    job_id: int | None = None
    parent_id: int | None = None
    init_org_id: int | None = None
    init_user_id: int | None = None
    store_id: int | None = None
    databases: tuple[RequestedDatabase, ...] = ()
    # The server's status of the whole task (derived from its runs), when it said it.
    status: str | None = None


@frozen
class Run:
    """One organization's share of a task, as listed by ``GET /run?include=task``."""

    id: int = field(validator=_positive)
    task: TaskRef
    # As stored on the server: ciphertext, base64 plaintext, or a blob UUID.
    input: str
    status: RunStatus = RunStatus.PENDING
    organization_id: int | None = None
    blob_storage_used: bool = False
    started_at: datetime | None = field(default=None, validator=_aware)
    finished_at: datetime | None = field(default=None, validator=_aware)
    # When the server created the run (with the task).
    assigned_at: datetime | None = field(default=None, validator=_aware)


@frozen
class StreamedResult:
    """A result sent without holding it: ``length`` bytes of ASCII text (ciphertext or
    base64 in the string form), produced anew by every call of ``chunks`` so that a
    PATCH can be sent again."""

    length: int = field(validator=validators.ge(0))
    chunks: Callable[[], AsyncIterator[bytes]] = field(eq=False, repr=False)


@frozen
class RunUpdate:
    """One PATCH of a run.

    The server's PATCH is not partial: an absent ``finished_at``, ``result`` or
    ``log`` becomes NULL. So an update always carries everything it means to keep;
    the constructors below are the updates the node sends.
    """

    status: RunStatus | None = None
    started_at: datetime | None = field(default=None, validator=_aware)
    finished_at: datetime | None = field(default=None, validator=_aware)
    result: str | StreamedResult | None = None
    log: str | None = None

    @classmethod
    def started(cls, at: datetime) -> RunUpdate:
        return cls(started_at=at)

    @classmethod
    def status_change(cls, status: RunStatus) -> RunUpdate:
        return cls(status=status)

    @classmethod
    def finished(
        cls, status: RunStatus, at: datetime, log: str, result: str | StreamedResult = ""
    ) -> RunUpdate:
        if not status.is_final:
            raise ValueError(f"a finished run needs a final status, not {status!r}")
        return cls(status=status, finished_at=at, log=log, result=result)


@frozen
class StatusChange:
    """Payload of the ``algorithm_status_change`` event the node emits."""

    node_id: int
    organization_id: int
    collaboration_id: int
    run_id: int
    task_id: int
    parent_id: int | None
    status: RunStatus

    def as_payload(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "status": str(self.status),
            "run_id": self.run_id,
            "task_id": self.task_id,
            "collaboration_id": self.collaboration_id,
            "organization_id": self.organization_id,
            "parent_id": self.parent_id,
        }
