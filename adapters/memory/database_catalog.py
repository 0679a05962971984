"""Database column names kept in memory."""
from __future__ import annotations

from v6node.domain.config import DatabaseConfig
from v6node.ports.database_catalog import COLUMN_DATABASE_TYPES, DatabaseCatalog


class MemoryDatabaseCatalog(DatabaseCatalog):
    """Columns per database label; like the file adapter, only csv and parquet ones have any."""

    def __init__(self, columns: dict[str, list[str]] | None = None) -> None:
        self.columns_by_label = {label: list(names) for label, names in (columns or {}).items()}
        self.asked: list[str] = []

    async def columns(self, database: DatabaseConfig) -> list[str]:
        self.asked.append(database.label)
        if database.type not in COLUMN_DATABASE_TYPES:
            return []
        return list(self.columns_by_label.get(database.label, []))
