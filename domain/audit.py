"""The hash chain of the audit log (pure)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

GENESIS = "0" * 64


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of the entry without its own ``hash``, in a canonical JSON form."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def sealed(entry: dict[str, Any], seq: int, prev: str) -> dict[str, Any]:
    """The entry as it is written: numbered, chained to ``prev``, hashed."""
    line = {**entry, "seq": seq, "prev": prev}
    return {**line, "hash": entry_hash(line)}


def first_break(lines: Iterable[str]) -> tuple[int, int | None, str]:
    """(lines read, the first line that breaks the chain or None, why)."""
    prev, expected_seq, count = GENESIS, 1, 0
    for count, text in enumerate(lines, start=1):
        try:
            entry = json.loads(text)
        except ValueError:
            return count, count, "not a JSON line"
        if not isinstance(entry, dict):
            return count, count, "not a JSON object"
        if entry.get("prev") != prev:
            return count, count, "its link to the line before does not match (a line before it was deleted or changed)"
        if entry.get("seq") != expected_seq:
            return count, count, f"it is entry {entry.get('seq')}, expected {expected_seq}"
        if entry.get("hash") != entry_hash(entry):
            return count, count, "its content does not match its hash (it was changed)"
        prev, expected_seq = entry["hash"], expected_seq + 1
    return count, None, ""
