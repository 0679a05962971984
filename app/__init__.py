"""v6node's public library API (semantic versioning applies to the names in ``__all__``).

- ``load_config`` / ``config_from_dict``: a node config from a vantage6 node YAML file or
  from a mapping of the same keys, checked (``ConfigError`` names the key);
- ``EmbeddedNode``: run a node inside your asyncio program, through the same container as
  ``v6node start``, with any adapter replaced; ``events()`` streams ``RunEvent``s;
- ``MemoryNodeHarness`` (in ``v6node.adapters.memory.harness``): the same node on in-memory
  adapters, for tests.

Everything else in ``v6node`` is internal and may change in any release.
"""
from __future__ import annotations

from v6node.app.config import load_config
from v6node.app.embedded import EmbeddedNode, config_from_dict
from v6node.app.node import Node
from v6node.app.node_parts import NodeTimings
from v6node.app.run_events import RunEventStream
from v6node.domain.config import NodeConfig
from v6node.domain.errors import ConfigError, NodeError
from v6node.domain.run_events import RunEvent, Stage
from v6node.domain.status import RunStatus

__all__ = [
    "ConfigError",
    "EmbeddedNode",
    "Node",
    "NodeConfig",
    "NodeError",
    "NodeTimings",
    "RunEvent",
    "RunEventStream",
    "RunStatus",
    "Stage",
    "config_from_dict",
    "load_config",
]
