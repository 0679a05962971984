"""AuditLog as a JSON-lines file (``<data folder>/audit.jsonl``), each line fsynced, with a head file."""
from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from v6node.domain.audit import GENESIS, first_break, sealed
from v6node.domain.errors import NodeError
from v6node.ports.audit_log import AuditLog, AuditVerdict


AUDIT_FILE = "audit.jsonl"


def in_data_folder(data_dir: str) -> JsonLinesAuditLog:
    """The audit log of the node whose data folder is ``data_dir``."""
    return JsonLinesAuditLog(os.path.join(data_dir, AUDIT_FILE))


class JsonLinesAuditLog(AuditLog):
    """One JSON object per line, appended with O_APPEND and fsynced (mode 0600).

    ``<file>.head`` holds the count and the last hash, so that deleting the last lines shows
    too (the chain alone cannot tell a shortened file from a short one). Someone who may
    rewrite every line and the head can forge a log; the chain makes casual or partial
    edits evident, it is not a signature.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.head = self.path.with_name(self.path.name + ".head")
        self._lock = threading.Lock()
        self._state: tuple[int, str] | None = None  # (entries, last hash)

    async def append(self, entry: dict[str, Any]) -> None:
        await asyncio.to_thread(self._append, entry)

    def _append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            count, prev = self._state or self._read_head()
            line = sealed(entry, count + 1, prev)
            text = json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n"
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(fd, text.encode("utf-8"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._state = (count + 1, line["hash"])
                self._write_head(*self._state)
            except OSError as exc:
                raise NodeError(f"cannot write the audit log {self.path}: {exc.strerror or exc}") from exc

    def _read_head(self) -> tuple[int, str]:
        try:
            count, last = self.head.read_text(encoding="ascii").split()
            return int(count), last
        except FileNotFoundError:
            return 0, GENESIS
        except (OSError, ValueError) as exc:
            raise NodeError(f"the audit log's head {self.head} is unreadable; run `v6node audit verify`") from exc

    def _write_head(self, count: int, last: str) -> None:
        temporary = self.head.with_name(self.head.name + ".tmp")
        temporary.write_text(f"{count} {last}\n", encoding="ascii")
        os.replace(temporary, self.head)

    async def verify(self) -> AuditVerdict:
        return await asyncio.to_thread(self._verify)

    def _verify(self) -> AuditVerdict:
        try:
            with self.path.open(encoding="utf-8") as lines:
                count, broken, why = first_break(line.rstrip("\n") for line in lines)
        except FileNotFoundError:
            count, broken, why = 0, None, ""
        if broken is not None:
            return AuditVerdict(False, count, broken, why)
        expected, _ = self._read_head()
        if count != expected:
            return AuditVerdict(
                False, count, count + 1, f"the log has {count} lines but recorded {expected}: lines at its end were deleted"
            )
        return AuditVerdict(True, count)

    async def entries(self, since: datetime | None = None, run_id: int | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._entries, since, run_id)

    def _entries(self, since: datetime | None, run_id: int | None) -> list[dict[str, Any]]:
        found = []
        try:
            with self.path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    entry = self._parse(number, line)
                    if run_id is not None and entry.get("run_id") != run_id:
                        continue
                    if since is not None and _aware(datetime.fromisoformat(entry["at"])) < _aware(since):
                        continue
                    found.append(entry)
        except FileNotFoundError:
            return []
        return found

    def _parse(self, number: int, line: str) -> dict[str, Any]:
        try:
            entry = json.loads(line)
            if isinstance(entry, dict) and isinstance(entry.get("at"), str):
                datetime.fromisoformat(entry["at"])
                return entry
        except ValueError:
            pass
        raise NodeError(
            f"line {number} of the audit log {self.path} is not an entry (a JSON object with its time); "
            "run `v6node audit verify`"
        )


def _aware(moment: datetime) -> datetime:
    """Times without a zone are UTC, as the node writes them."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
