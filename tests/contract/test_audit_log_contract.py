"""AuditLog: the JSON-lines file and the memory twin keep one chain; tampering shows at its line."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from v6node.adapters.filesystem.json_lines_audit_log import JsonLinesAuditLog
from v6node.adapters.memory.audit_log import MemoryAuditLog
from v6node.ports.audit_log import AuditLog

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["memory", "file"])
def audit(request: pytest.FixtureRequest, tmp_path: Path) -> AuditLog:
    return MemoryAuditLog() if request.param == "memory" else JsonLinesAuditLog(str(tmp_path / "audit.jsonl"))


async def fill(audit: AuditLog, count: int = 4) -> None:
    for i in range(count):
        await audit.append({"at": (T0 + timedelta(minutes=i)).isoformat(), "event": "finished", "run_id": 10 + i % 2})


def lines_of(audit: AuditLog) -> list[str]:
    if isinstance(audit, MemoryAuditLog):
        return audit.lines
    assert isinstance(audit, JsonLinesAuditLog)
    return audit.path.read_text().splitlines()


def rewrite(audit: AuditLog, lines: list[str]) -> None:
    if isinstance(audit, MemoryAuditLog):
        audit.lines[:] = lines
    else:
        assert isinstance(audit, JsonLinesAuditLog)
        audit.path.write_text("".join(line + "\n" for line in lines))


async def test_an_untouched_log_verifies_and_is_read_back_filtered(audit: AuditLog) -> None:
    assert isinstance(audit, AuditLog)
    await fill(audit)
    verdict = await audit.verify()
    assert (verdict.ok, verdict.lines) == (True, 4)
    assert [e["seq"] for e in await audit.entries(run_id=11)] == [2, 4]
    assert [e["seq"] for e in await audit.entries(since=T0 + timedelta(minutes=2))] == [3, 4]


async def test_an_edited_line_breaks_the_chain_at_that_line(audit: AuditLog) -> None:
    await fill(audit)
    lines = lines_of(audit)
    edited = json.loads(lines[1])
    edited["run_id"] = 99
    rewrite(audit, [lines[0], json.dumps(edited), *lines[2:]])
    verdict = await audit.verify()
    assert (verdict.ok, verdict.broken_at) == (False, 2)
    assert "changed" in verdict.why


async def test_a_deleted_line_breaks_the_chain_at_the_next_one(audit: AuditLog) -> None:
    await fill(audit)
    lines = lines_of(audit)
    rewrite(audit, [lines[0], *lines[2:]])
    verdict = await audit.verify()
    assert (verdict.ok, verdict.broken_at) == (False, 2)


async def test_deleting_the_last_lines_shows_in_the_file_log(tmp_path: Path) -> None:
    audit = JsonLinesAuditLog(str(tmp_path / "audit.jsonl"))
    await fill(audit)
    rewrite(audit, lines_of(audit)[:-1])
    verdict = await audit.verify()
    assert (verdict.ok, verdict.broken_at) == (False, 4)
    assert "deleted" in verdict.why


async def test_the_file_log_carries_on_after_a_restart_and_is_private(tmp_path: Path) -> None:
    first = JsonLinesAuditLog(str(tmp_path / "audit.jsonl"))
    await fill(first, 2)
    second = JsonLinesAuditLog(str(tmp_path / "audit.jsonl"))
    await fill(second, 2)
    assert (await second.verify()).ok and (await second.verify()).lines == 4
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600
