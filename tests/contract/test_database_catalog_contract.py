"""DatabaseCatalog: one suite held by the memory catalog and the file catalog alike."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from v6node.adapters.filesystem.file_database_catalog import FileDatabaseCatalog
from v6node.adapters.memory.database_catalog import MemoryDatabaseCatalog
from v6node.domain.config import DatabaseConfig
from v6node.ports.database_catalog import DatabaseCatalog

COLUMNS = ["age", "weight", "name"]


@pytest.fixture(params=["memory", "file"])
def catalog_and_databases(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[DatabaseCatalog, dict[str, DatabaseConfig]]:
    """A catalog and databases of every kind it must answer for, made for that catalog."""
    csv = tmp_path / "data.csv"
    csv.write_text(",".join(COLUMNS) + "\n1,2,x\n", encoding="utf-8")
    parquet = tmp_path / "data.parquet"
    pq.write_table(pa.table({name: [1] for name in COLUMNS}), parquet)
    databases = {
        "csv": DatabaseConfig(label="tab", uri=str(csv), type="csv"),
        "parquet": DatabaseConfig(label="par", uri=str(parquet), type="parquet"),
        "sql": DatabaseConfig(label="warehouse", uri="postgresql://db.invalid/x", type="sql"),
        "missing": DatabaseConfig(label="gone", uri=str(tmp_path / "gone.csv"), type="csv"),
    }
    if request.param == "memory":
        return MemoryDatabaseCatalog({"tab": COLUMNS, "par": COLUMNS, "warehouse": ["should", "not", "show"]}), databases
    return FileDatabaseCatalog(), databases


def test_both_catalogs_keep_to_the_port(catalog_and_databases) -> None:
    assert isinstance(catalog_and_databases[0], DatabaseCatalog)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
async def test_csv_and_parquet_databases_have_their_columns_in_order(catalog_and_databases, kind: str) -> None:
    catalog, databases = catalog_and_databases
    assert await catalog.columns(databases[kind]) == COLUMNS


async def test_other_types_have_no_columns(catalog_and_databases) -> None:
    catalog, databases = catalog_and_databases
    assert await catalog.columns(databases["sql"]) == []


async def test_a_database_that_cannot_be_read_has_no_columns_and_raises_nothing(catalog_and_databases) -> None:
    catalog, databases = catalog_and_databases
    assert await catalog.columns(databases["missing"]) == []


async def test_asking_twice_gives_the_same_answer(catalog_and_databases) -> None:
    catalog, databases = catalog_and_databases
    assert await catalog.columns(databases["csv"]) == await catalog.columns(databases["csv"])
