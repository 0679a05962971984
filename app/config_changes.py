"""What changed between two configs of one node, by setting name (for SIGHUP)."""
from __future__ import annotations

from typing import Any

import attrs

from v6node.domain.config import NodeConfig

# Shown as "(changed)": their values must not reach a log.
_SECRETS = frozenset({"api_key", "docker_registries"})


def _flatten(value: Any, prefix: str, into: dict[str, Any]) -> None:
    if attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            _flatten(getattr(value, field.name), f"{prefix}.{field.name}" if prefix else field.name, into)
    elif isinstance(value, dict):
        for key in sorted(value):
            _flatten(value[key], f"{prefix}.{key}", into)
    else:
        into[prefix] = value


def config_changes(old: NodeConfig, new: NodeConfig) -> list[str]:
    """One line per setting that differs, e.g. ``max_concurrent_runs: 8 -> 4``; [] when none."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(old, "", before)
    _flatten(new, "", after)
    lines = []
    for key in sorted(before.keys() | after.keys()):
        if key == "source":
            continue
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        if key.split(".")[0] in _SECRETS:
            lines.append(f"{key}: (changed; not shown)")
        else:
            lines.append(f"{key}: {was!r} -> {now!r}")
    return lines
