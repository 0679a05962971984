"""v6node's public library API (semantic versioning applies to the names in ``__all__``).

- ``load_config`` / ``config_from_dict``: a node config from a vantage6 node YAML file or
  from a mapping of the same keys, checked (``ConfigError`` names the key);
- ``EmbeddedNode``: run a node inside your asyncio program, through the same container as
  ``v6node start``, with any adapter replaced; ``events()`` streams ``RunEvent``s;
- ``run_locally`` / ``RunLocal``: run an algorithm image through the node's own code path on
  simulated organizations against a server in memory (``v6node run-local``); it returns a
  ``LocalRunReport`` of ``TaskReport``s and ``RunReport``s;
- ``MemoryNodeHarness`` (in ``v6node.adapters.memory.harness``): the same node on in-memory
  adapters, for tests.

Everything else in ``v6node`` is internal and may change in any release. The names load
when first used: importing a module of ``v6node.app`` does not build the container.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # "x as x": explicit re-exports, so that users' mypy --strict sees the names (__all__ is computed).
    from v6node.app.config import load_config as load_config
    from v6node.app.embedded import EmbeddedNode as EmbeddedNode, config_from_dict as config_from_dict
    from v6node.app.node import Node as Node
    from v6node.app.node_parts import NodeTimings as NodeTimings
    from v6node.app.run_events import RunEventStream as RunEventStream
    from v6node.app.run_local import RunLocal as RunLocal, run_locally as run_locally
    from v6node.domain.config import NodeConfig as NodeConfig
    from v6node.domain.errors import ConfigError as ConfigError, NodeError as NodeError
    from v6node.domain.local_run import (
        LocalRunReport as LocalRunReport,
        RunReport as RunReport,
        TaskReport as TaskReport,
    )
    from v6node.domain.run_events import RunEvent as RunEvent, Stage as Stage
    from v6node.domain.status import RunStatus as RunStatus

_WHERE = {
    "ConfigError": "v6node.domain.errors",
    "EmbeddedNode": "v6node.app.embedded",
    "LocalRunReport": "v6node.domain.local_run",
    "Node": "v6node.app.node",
    "NodeConfig": "v6node.domain.config",
    "NodeError": "v6node.domain.errors",
    "NodeTimings": "v6node.app.node_parts",
    "RunEvent": "v6node.domain.run_events",
    "RunEventStream": "v6node.app.run_events",
    "RunLocal": "v6node.app.run_local",
    "RunReport": "v6node.domain.local_run",
    "RunStatus": "v6node.domain.status",
    "Stage": "v6node.domain.run_events",
    "TaskReport": "v6node.domain.local_run",
    "config_from_dict": "v6node.app.embedded",
    "load_config": "v6node.app.config",
    "run_locally": "v6node.app.run_local",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'v6node.app' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
