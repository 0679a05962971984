"""The node's own record of what ran on its data: append-only, each line chained to the one before."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from attrs import frozen


@frozen
class AuditVerdict:
    """``ok`` when every line and the chain hold; else ``broken_at`` (1-based line) and ``why``."""

    ok: bool
    lines: int
    broken_at: int | None = None
    why: str = ""


@runtime_checkable
class AuditLog(Protocol):
    """Entries are JSON objects of plain values; the log adds ``seq``, ``at``, ``prev`` and
    ``hash`` (SHA-256 over the entry with ``prev``, the hash of the line before). An edited,
    deleted or inserted line breaks the chain at that line. ``append`` is durable when it
    returns; it never holds data, keys or tokens (the caller's duty)."""

    async def append(self, entry: dict[str, Any]) -> None: ...

    async def verify(self) -> AuditVerdict: ...

    async def entries(self, since: datetime | None = None, run_id: int | None = None) -> list[dict[str, Any]]:
        """Entries at or after ``since``, of one run when ``run_id`` is given, in order."""
