"""What the node can tell the server about its databases (``node_info_update``)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from v6node.domain.config import DatabaseConfig

# Databases whose column names are shared (spec §4.4; the reference refuses parquet, we read it).
COLUMN_DATABASE_TYPES = frozenset({"csv", "parquet"})


@runtime_checkable
class DatabaseCatalog(Protocol):
    """Column names of the node's configured databases.

    ``columns`` returns the names an algorithm's ``@data`` DataFrame would have, in file
    order, for ``csv`` and ``parquet`` databases; ``[]`` for every other type. It never
    raises for a database it cannot read (missing, unreadable, malformed): it logs why
    and returns ``[]``, because column names are informational and must not stop the
    node. Idempotent, read-only; cancelling it leaves nothing behind.
    """

    async def columns(self, database: DatabaseConfig) -> list[str]: ...
