"""An audit log kept in memory, chained like the file one."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from v6node.domain.audit import GENESIS, first_break, sealed
from v6node.ports.audit_log import AuditLog, AuditVerdict


class MemoryAuditLog(AuditLog):
    """Test-side: ``lines`` are the JSON lines as the file would hold them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._last = GENESIS

    async def append(self, entry: dict[str, Any]) -> None:
        line = sealed(entry, len(self.lines) + 1, self._last)
        self._last = line["hash"]
        self.lines.append(json.dumps(line, sort_keys=True, separators=(",", ":")))

    def entries_now(self) -> list[dict[str, Any]]:
        """Test-side: the entries so far, without awaiting."""
        return [json.loads(line) for line in self.lines]

    async def verify(self) -> AuditVerdict:
        count, broken, why = first_break(self.lines)
        return AuditVerdict(broken is None, count, broken, why)

    async def entries(self, since: datetime | None = None, run_id: int | None = None) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.lines]
        return [
            entry for entry in found
            if (run_id is None or entry.get("run_id") == run_id)
            and (since is None or datetime.fromisoformat(entry["at"]) >= since)
        ]
