"""DatabaseCatalog: column names of csv and parquet databases (file adapter and memory adapter)."""
from __future__ import annotations

import json
import logging
import struct
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v6node.adapters.filesystem.file_database_catalog import (
    FileDatabaseCatalog,
    ParquetError,
    parquet_columns,
)
from v6node.adapters.memory.database_catalog import MemoryDatabaseCatalog
from v6node.domain.config import DatabaseConfig
from v6node.ports.database_catalog import DatabaseCatalog


def db(path: Path | str, type: str = "csv", label: str = "default") -> DatabaseConfig:
    return DatabaseConfig(label=label, uri=str(path), type=type)


async def columns_of(path: Path, type: str = "csv") -> list[str]:
    return await FileDatabaseCatalog().columns(db(path, type))


def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def test_both_adapters_are_database_catalogs():
    assert isinstance(FileDatabaseCatalog(), DatabaseCatalog)
    assert isinstance(MemoryDatabaseCatalog({}), DatabaseCatalog)


# --- csv -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
async def test_csv_header_with_each_delimiter(tmp_path, delimiter):
    rows = [["age", "name", "weight kg"], ["30", "p1", "70.5"], ["40", "p2", "80"]]
    path = write(tmp_path, "".join(delimiter.join(row) + "\r\n" for row in rows))
    assert await columns_of(path) == ["age", "name", "weight kg"]


async def test_a_header_only_file_with_semicolons(tmp_path):
    assert await columns_of(write(tmp_path, "a;b;c\n")) == ["a", "b", "c"]


async def test_a_single_column_file(tmp_path):
    assert await columns_of(write(tmp_path, "age\n30\n40\n")) == ["age"]


async def test_quoted_headers_keep_delimiters_quotes_and_newlines(tmp_path):
    text = '"last, first";"say ""hi""";"two\nlines";age\n"Doe, J";x;y;30\n'
    assert await columns_of(write(tmp_path, text)) == ["last, first", 'say "hi"', "two\nlines", "age"]


async def test_a_quoted_delimiter_does_not_fool_the_detection(tmp_path):
    # Counting characters would say ';' (two of them); parsing says ',' with two consistent fields.
    text = '"a;b;c",d\n"1;2;3",4\n'
    assert await columns_of(write(tmp_path, text)) == ["a;b;c", "d"]


async def test_consistent_rows_decide_between_delimiters(tmp_path):
    # The header alone has more ',' fields, but only ';' splits every row alike.
    text = "x,1;y,2;z\n1;2;3\n4;5;6\n"
    assert await columns_of(write(tmp_path, text)) == ["x,1", "y,2", "z"]


async def test_a_byte_order_mark_and_leading_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path, "\ufeff\n\nage,name\n30,x\n".encode("utf-8"))
    assert await columns_of(path) == ["age", "name"]


async def test_empty_and_repeated_names_are_named_as_pandas_names_them(tmp_path):
    path = write(tmp_path, ",a,a,b,a.1\n1,2,3,4,5\n")
    assert await columns_of(path) == ["Unnamed: 0", "a", "a.1", "b", "a.1.1"]


async def test_repeated_names_get_numbered_suffixes(tmp_path):
    path = write(tmp_path, "a,a,a,,b\n1,2,3,4,5\n")
    assert await columns_of(path) == ["a", "a.1", "a.2", "Unnamed: 3", "b"]


async def test_only_the_start_of_a_large_file_is_read(tmp_path):
    path = tmp_path / "big.csv"
    with path.open("w") as handle:
        handle.write("id;value;label\n")
        for i in range(200_000):
            handle.write(f"{i};{i * 0.5};row number {i}\n")
    assert path.stat().st_size > 1_000_000
    assert await columns_of(path) == ["id", "value", "label"]


async def test_a_header_wider_than_the_sample_is_read_whole(tmp_path):
    names = [f"measurement_{i:05d}" for i in range(10_000)]  # ~190 kB of header
    path = write(tmp_path, ";".join(names) + "\n" + ";".join("1" for _ in names) + "\n")
    assert await columns_of(path) == names


@pytest.mark.parametrize("text", ["", "\n\n", "  \n"])
async def test_an_empty_file_has_no_columns(tmp_path, text):
    assert await columns_of(write(tmp_path, text)) == []


async def test_a_missing_file_is_logged_not_raised(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "v6node.databases")
    missing = tmp_path / "gone.csv"
    assert await FileDatabaseCatalog().columns(db(missing, label="patients")) == []
    (record,) = caplog.records
    assert "patients" in record.getMessage() and str(missing) in record.getMessage()


async def test_a_file_that_is_not_utf8_is_logged_not_raised(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "v6node.databases")
    path = write(tmp_path, "caf\xe9,na\xefve\n1,2\n".encode("latin-1"))
    assert await columns_of(path) == []
    assert "default" in caplog.text


async def test_a_folder_given_as_csv_is_logged_not_raised(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "v6node.databases")
    assert await columns_of(tmp_path) == []
    assert caplog.records


@pytest.mark.parametrize("type", ["sql", "sparql", "excel", "folder", "other", "omop"])
async def test_other_database_types_have_no_columns_and_are_not_read(tmp_path, type, caplog):
    caplog.set_level(logging.WARNING, "v6node.databases")
    # Even a readable csv file is not looked at when the type says it is not csv/parquet.
    path = write(tmp_path, "a,b\n1,2\n")
    assert await FileDatabaseCatalog().columns(db(path, type)) == []
    assert await FileDatabaseCatalog().columns(db("postgresql://db.example.org/x", type)) == []
    assert caplog.records == []


# --- parquet -------------------------------------------------------------------------------------------
TABLE = pa.table(
    {
        "age": [30, 40],
        "weight kg": [70.5, 80.0],
        "naïve 名前": ["x", "y"],
        "address": pa.array([{"city": "A", "geo": {"lat": 1.0, "lon": 2.0}}, {"city": "B", "geo": None}]),
        "visits": [[1, 2], []],
        "flags": pa.array([{"k": True}, {"k": False}]),
        "last": [None, "z"],
    }
)
TOP_LEVEL = ["age", "weight kg", "naïve 名前", "address", "visits", "flags", "last"]


@pytest.mark.parametrize("compression", ["snappy", "none", "zstd", "gzip"])
@pytest.mark.parametrize("version", ["1.0", "2.6"])
async def test_parquet_top_level_columns(tmp_path, compression, version):
    path = tmp_path / "data.parquet"
    pq.write_table(TABLE, path, compression=compression, version=version)
    assert await columns_of(path, "parquet") == TOP_LEVEL


async def test_parquet_with_many_row_groups_statistics_and_metadata(tmp_path):
    path = tmp_path / "data.parquet"
    big = pa.table({f"c{i}": list(range(1000)) for i in range(40)})
    big = big.replace_schema_metadata({b"origin": b"x" * 5000, b"note": "ü".encode()})
    pq.write_table(big, path, row_group_size=50, write_statistics=True, use_dictionary=True)
    assert pq.ParquetFile(path).metadata.num_row_groups == 20
    assert await columns_of(path, "parquet") == [f"c{i}" for i in range(40)]


async def test_parquet_without_rows(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.string())}), path)
    assert await columns_of(path, "parquet") == ["a", "b"]


async def test_parquet_index_columns_written_by_pandas_are_not_columns(tmp_path):
    # What pandas.DataFrame.to_parquet writes for a DataFrame with a named index: the
    # index is a column in the file, listed in the "pandas" metadata, and read back as the index.
    table = pa.table({"age": [30, 40], "patient_id": ["p1", "p2"]})
    pandas_meta = {
        "index_columns": ["patient_id"],
        "column_indexes": [],
        "columns": [
            {"name": "age", "field_name": "age", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": "patient_id", "field_name": "patient_id", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "pandas_version": "2.2.0",
    }
    path = tmp_path / "indexed.parquet"
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)
    assert await columns_of(path, "parquet") == ["age"]
    # A RangeIndex is stored as a description, not a column: nothing to drop.
    pandas_meta["index_columns"] = [{"kind": "range", "name": None, "start": 0, "stop": 2, "step": 1}]
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)
    assert await columns_of(path, "parquet") == ["age", "patient_id"]


names = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40), min_size=1, max_size=30, unique=True
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(columns=names)
def test_parquet_column_names_round_trip(tmp_path, columns):
    path = tmp_path / "names.parquet"
    pq.write_table(pa.table({name: [i] for i, name in enumerate(columns)}), path)
    assert parquet_columns(str(path)) == columns


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "too short"),
        (b"age,name\n30,x\n", "not a parquet file"),
        (b"PAR1" + b"\x00" * 8 + b"PAR1", "footer"),
        (b"PAR1" + b"\x15\x00\x00" + struct.pack("<I", 3) + b"PAR1", "no schema"),
        (b"PAR1" + b"\x29\x1c\x15" + struct.pack("<I", 3) + b"PAR1", "footer ends"),
        (b"PAR1" + b"\x00" * 16 + struct.pack("<I", 4) + b"PARE", "encrypted"),
        (b"PAR1" + b"\x00" * 16 + struct.pack("<I", 10_000) + b"PAR1", "does not fit"),
    ],
)
def test_malformed_parquet_files_raise_parquet_error(tmp_path, content, problem):
    path = write(tmp_path, content, "bad.parquet")
    with pytest.raises(ParquetError, match=problem):
        parquet_columns(str(path))


async def test_a_malformed_or_missing_parquet_file_is_logged_not_raised(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "v6node.databases")
    good = tmp_path / "good.parquet"
    pq.write_table(TABLE, good)
    truncated = write(tmp_path, good.read_bytes()[:-40] + good.read_bytes()[-8:], "truncated.parquet")
    assert await columns_of(truncated, "parquet") == []
    assert await columns_of(tmp_path / "missing.parquet", "parquet") == []
    assert await columns_of(write(tmp_path, "a,b\n1,2\n"), "parquet") == []
    assert len(caplog.records) == 3


@settings(max_examples=300, deadline=None)
@given(footer=st.binary(max_size=300))
def test_any_footer_bytes_end_in_names_or_a_parquet_error(footer):
    try:
        names = _columns_from_footer(footer)
    except ParquetError:
        return
    assert all(isinstance(name, str) for name in names)


# --- the Thrift compact reader, on hand-encoded structs -----------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag(n: int) -> bytes:
    return varint((n << 1) ^ (n >> 63))


def field(last: int, fid: int, ctype: int, payload: bytes = b"") -> bytes:
    delta = fid - last
    if 0 < delta <= 15:
        return bytes([(delta << 4) | ctype]) + payload
    return bytes([ctype]) + zigzag(fid) + payload  # long form: the id follows as a zigzag varint


def binary(text: str) -> bytes:
    data = text.encode()
    return varint(len(data)) + data


def list_header(size: int, ctype: int) -> bytes:
    return bytes([(size << 4) | ctype]) if size < 15 else bytes([0xF0 | ctype]) + varint(size)


def schema_element(name: str, children: int | None = None) -> bytes:
    body = field(0, 1, 5, zigzag(1)) + field(1, 4, 8, binary(name))
    if children is not None:
        body += field(4, 5, 5, zigzag(children))
    return body + b"\x00"


def test_the_reader_skips_every_kind_of_unknown_field():
    every_type = (
        field(0, 1, 1)  # bool true (the value is in the type)
        + field(1, 2, 2)  # bool false
        + field(2, 3, 3, b"\x7f")  # byte
        + field(3, 4, 4, zigzag(-300))  # i16
        + field(4, 5, 6, zigzag(2**40))  # i64
        + field(5, 6, 7, struct.pack("<d", 1.5))  # double
        + field(6, 7, 8, binary("skipped"))  # binary
        + field(7, 8, 9, list_header(3, 1) + b"\x01\x02\x01")  # list of bools: one byte each
        + field(8, 9, 10, list_header(2, 5) + zigzag(1) + zigzag(2))  # set of i32
        + field(9, 10, 11, varint(2) + bytes([(8 << 4) | 12]) + binary("k") + b"\x00" + binary("l") + b"\x15\x02\x00")
        + field(10, 11, 11, varint(0))  # empty map: no type byte
        + field(11, 12, 12, field(0, 1, 12, field(0, 3, 8, binary("deep")) + b"\x00") + b"\x00")  # nested structs
        + field(12, 13, 13, b"u" * 16)  # uuid
    )
    schema = [schema_element("root", 2), schema_element("group", 1), schema_element("inner"), schema_element("flat")]
    metadata = (
        every_type
        + field(13, 2, 9, list_header(len(schema), 12) + b"".join(schema))  # schema, long-form id (delta < 0)
        + field(2, 300, 8, binary("unknown field with a large id"))
        + field(300, 5, 9, list_header(1, 12) + field(0, 1, 8, binary("pandas")) + field(1, 2, 8, binary("{}")) + b"\x00")
        + b"\x00"
    )
    assert _columns_from_footer(metadata) == ["group", "flat"]


def test_a_schema_list_in_long_form_and_a_wrongly_typed_field():
    schema = [schema_element("root", 20)] + [schema_element(f"c{i}") for i in range(20)]
    metadata = (
        field(0, 2, 9, list_header(len(schema), 12) + b"".join(schema))
        + field(2, 4, 8, binary("num_rows with the wrong type is skipped, not misread"))
        + b"\x00"
    )
    assert _columns_from_footer(metadata) == [f"c{i}" for i in range(20)]


def test_a_schema_that_promises_more_children_than_it_has():
    metadata = field(0, 2, 9, list_header(2, 12) + schema_element("root", 3) + schema_element("only")) + b"\x00"
    with pytest.raises(ParquetError, match="fewer elements"):
        _columns_from_footer(metadata)


def test_nesting_deeper_than_any_footer_is_refused():
    deep = b""
    for _ in range(100):
        deep = field(0, 1, 12, deep + b"\x00")
    with pytest.raises(ParquetError, match="nests deeper"):
        _columns_from_footer(deep + b"\x00")


def _columns_from_footer(metadata: bytes) -> list[str]:
    with tempfile.NamedTemporaryFile(suffix=".parquet") as handle:
        handle.write(b"PAR1" + metadata + struct.pack("<I", len(metadata)) + b"PAR1")
        handle.flush()
        return parquet_columns(handle.name)


# --- memory adapter ------------------------------------------------------------------------------------
async def test_the_memory_catalog_answers_like_the_file_catalog():
    catalog = MemoryDatabaseCatalog({"default": ["a", "b"], "pq": ["x"], "warehouse": ["ignored"]})
    assert await catalog.columns(db("/data/a.csv")) == ["a", "b"]
    assert await catalog.columns(db("/data/x.parquet", "parquet", "pq")) == ["x"]
    # Only csv and parquet databases have columns, and unknown labels have none.
    assert await catalog.columns(db("postgresql://x", "sql", "warehouse")) == []
    assert await catalog.columns(db("/data/b.csv", label="other")) == []
    assert catalog.asked == ["default", "pq", "warehouse", "other"]
    # The caller cannot change what the catalog holds through the returned list.
    (await catalog.columns(db("/data/a.csv"))).append("c")
    assert await catalog.columns(db("/data/a.csv")) == ["a", "b"]
