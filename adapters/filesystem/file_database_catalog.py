"""Column names of csv and parquet databases, read from their header or footer (no pandas, no pyarrow)."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import struct
from collections.abc import Callable
from typing import Any

from v6node.domain.config import DatabaseConfig
from v6node.ports.database_catalog import COLUMN_DATABASE_TYPES, DatabaseCatalog

log = logging.getLogger("v6node.databases")

CSV_SAMPLE_CHARS = 64 * 1024
CSV_SAMPLE_ROWS = 20
CSV_MAX_HEADER_CHARS = 16 * 1024 * 1024
CSV_DELIMITERS = (",", ";", "\t")  # in order of preference when they tie
PARQUET_MAGIC = b"PAR1"
PARQUET_ENCRYPTED_MAGIC = b"PARE"
PARQUET_MAX_FOOTER = 64 * 1024 * 1024


class FileDatabaseCatalog(DatabaseCatalog):
    """Reads only what it needs: the first rows of a csv file, the footer of a parquet file.

    The names are those pandas gives the algorithm's DataFrame: csv headers with empty
    names as ``Unnamed: <i>`` and repeated names as ``name.1``; parquet top-level
    columns without the index columns pandas stored there.
    """

    async def columns(self, database: DatabaseConfig) -> list[str]:
        if database.type not in COLUMN_DATABASE_TYPES:
            return []
        try:
            return await asyncio.to_thread(self._read, database)
        except Exception as exc:  # noqa: BLE001 - column names are informational; never stop the node
            log.warning(
                "could not read the column names of database '%s' (%s at %s): %s",
                database.label, database.type, database.uri, exc,
            )
            return []

    @staticmethod
    def _read(database: DatabaseConfig) -> list[str]:
        if database.type == "parquet":
            return parquet_columns(database.uri)
        return csv_columns(database.uri)


# --- csv ---------------------------------------------------------------------------------------------
def csv_columns(path: str) -> list[str]:
    """The header row of a csv file whose delimiter is one of ``, ; <tab>``; [] for an empty file."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        sample = handle.read(CSV_SAMPLE_CHARS)
        # A very wide header may not fit in one sample: read on until its line ends.
        while len(sample) < CSV_MAX_HEADER_CHARS and not _has_line_end(sample):
            more = handle.read(CSV_SAMPLE_CHARS)
            if not more:
                break
            sample += more
        complete = not handle.read(1)
    if not complete:
        # The last line of the sample may be cut short; judge the delimiter on whole lines.
        cut = max(sample.rfind("\n"), sample.rfind("\r"))
        sample = sample[: cut + 1] if cut > 0 else sample
    if not sample.strip():
        return []
    best: tuple[tuple[bool, int], list[str]] | None = None
    for delimiter in CSV_DELIMITERS:
        try:
            rows = _rows(sample, delimiter)
        except csv.Error:  # e.g. a whole wide line as one field, past the csv module's field limit
            continue
        if not rows:
            return []
        header, data = rows[0], rows[1:]
        consistent = len(header) > 1 and all(len(row) == len(header) for row in data)
        score = (consistent, len(header))
        if best is None or score > best[0]:
            best = (score, header)
    if best is None:
        raise ValueError("no header row in any of the delimiters , ; <tab>")
    return _pandas_names(best[1])


def _has_line_end(text: str) -> bool:
    return "\n" in text or "\r" in text


def _rows(sample: str, delimiter: str) -> list[list[str]]:
    rows = []
    for row in csv.reader(io.StringIO(sample), delimiter=delimiter):
        if row and any(cell.strip() for cell in row):  # pandas skips blank lines
            rows.append(row)
            if len(rows) >= CSV_SAMPLE_ROWS:
                break
    return rows


def _pandas_names(header: list[str]) -> list[str]:
    """Empty names become ``Unnamed: <i>`` and repeats get ``.1``, ``.2``, as pandas' read_csv names them."""
    names = [name if name != "" else f"Unnamed: {i}" for i, name in enumerate(header)]
    counts: dict[str, int] = {}
    for i, name in enumerate(names):
        count = counts.get(name, 0)
        while count > 0:
            counts[name] = count + 1
            name = f"{name}.{count}"
            count = counts.get(name, 0)
        names[i] = name
        counts[name] = count + 1
    return names


# --- parquet -----------------------------------------------------------------------------------------
class ParquetError(ValueError):
    """The file is not a parquet file this reader understands."""


def parquet_columns(path: str) -> list[str]:
    """Top-level column names from the parquet footer (FileMetaData, Thrift compact protocol)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < 12:
            raise ParquetError(f"{size} bytes is too short for a parquet file")
        head = handle.read(4)
        handle.seek(size - 8)
        tail = handle.read(8)
        footer_length = struct.unpack("<I", tail[:4])[0]
        magic = tail[4:]
        if magic == PARQUET_ENCRYPTED_MAGIC:
            raise ParquetError("the footer is encrypted (parquet modular encryption)")
        if head != PARQUET_MAGIC or magic != PARQUET_MAGIC:
            raise ParquetError("no PAR1 magic at the start and end: not a parquet file")
        if footer_length > min(size - 12, PARQUET_MAX_FOOTER):
            raise ParquetError(f"footer length {footer_length} does not fit in a file of {size} bytes")
        handle.seek(size - 8 - footer_length)
        footer = handle.read(footer_length)
    schema, metadata = _file_metadata(footer)
    names = _top_level_names(schema)
    index_columns = _pandas_index_columns(metadata)
    return [name for name in names if name not in index_columns]


def _file_metadata(footer: bytes) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """(schema as (name, num_children) in depth-first order, key/value metadata) of FileMetaData."""
    reader = CompactReader(footer)
    fields = reader.read_struct({2: (LIST, list_of(_schema_element)), 5: (LIST, list_of(_key_value))})
    if 2 not in fields:
        raise ParquetError("the footer has no schema")
    metadata = {key: value for key, value in fields.get(5, []) if key is not None}
    return fields[2], metadata


def _schema_element(reader: CompactReader) -> tuple[str, int]:
    fields = reader.read_struct({4: (BINARY, CompactReader.read_string), 5: (I32, CompactReader.read_int)})
    return fields.get(4, ""), fields.get(5, 0)


def _key_value(reader: CompactReader) -> tuple[str | None, str]:
    fields = reader.read_struct({1: (BINARY, CompactReader.read_string), 2: (BINARY, CompactReader.read_string)})
    return fields.get(1), fields.get(2, "")


def _top_level_names(schema: list[tuple[str, int]]) -> list[str]:
    """The root's children; nested groups count as one column, as in a pandas DataFrame."""
    if not schema:
        raise ParquetError("the schema is empty")
    names = []
    i = 1
    for _ in range(schema[0][1]):
        if i >= len(schema):
            raise ParquetError("the schema has fewer elements than its root says")
        names.append(schema[i][0])
        pending = 1
        while pending:  # skip the column and everything nested in it
            if i >= len(schema):
                raise ParquetError("the schema ends inside a nested column")
            pending += schema[i][1] - 1
            i += 1
    return names


def _pandas_index_columns(metadata: dict[str, str]) -> set[str]:
    """Columns pandas wrote for the DataFrame's index; read_parquet turns them back into the index."""
    try:
        described = json.loads(metadata.get("pandas", "{}"))
    except ValueError:
        return set()
    index = described.get("index_columns", []) if isinstance(described, dict) else []
    return {entry for entry in index if isinstance(entry, str)}


# Thrift compact protocol type ids.
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT, UUID = range(14)
_MAX_DEPTH = 64
FieldReader = Callable[["CompactReader"], Any]


def list_of(read_element: FieldReader) -> FieldReader:
    """A reader for a list of structs, each read by ``read_element``."""

    def read(reader: CompactReader) -> list[Any]:
        size, element_type = reader.read_list_header()
        if element_type != STRUCT:
            raise ParquetError(f"expected a list of structs, got element type {element_type}")
        return [reader.nested(read_element) for _ in range(size)]

    return read


class CompactReader:
    """Just enough of the Thrift compact protocol to read a struct and skip whatever is not asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.depth = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ParquetError("the footer ends in the middle of a value")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _byte(self) -> int:
        return self._take(1)[0]

    def read_varint(self) -> int:
        value = shift = 0
        while True:
            byte = self._byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ParquetError("a varint is longer than 10 bytes")

    def read_int(self) -> int:
        """i16, i32 and i64 are all zigzag varints."""
        n = self.read_varint()
        return (n >> 1) ^ -(n & 1)

    def read_binary(self) -> bytes:
        return self._take(self.read_varint())

    def read_string(self) -> str:
        return self.read_binary().decode("utf-8", errors="replace")

    def read_list_header(self) -> tuple[int, int]:
        byte = self._byte()
        size, element_type = byte >> 4, byte & 0x0F
        if size == 15:
            size = self.read_varint()
        return size, element_type

    def nested(self, read: FieldReader) -> Any:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ParquetError("the footer nests deeper than any parquet footer does")
        try:
            return read(self)
        finally:
            self.depth -= 1

    def read_struct(self, wanted: dict[int, tuple[int, FieldReader]]) -> dict[int, Any]:
        """Read one struct: the fields in ``wanted`` (id -> (type, reader)) are returned, others skipped.

        A wanted field of another type than expected is skipped too, not misread.
        """
        values: dict[int, Any] = {}
        last_id = 0
        while True:
            header = self._byte()
            field_type = header & 0x0F
            if field_type == STOP:
                return values
            delta = header >> 4
            field_id = last_id + delta if delta else self.read_int()
            last_id = field_id
            expected = wanted.get(field_id)
            if expected is not None and expected[0] == field_type:
                values[field_id] = expected[1](self)
            else:
                self._skip(field_type, in_field=True)

    def _skip(self, value_type: int, in_field: bool = False) -> None:
        if value_type in (TRUE, FALSE):
            if not in_field:  # in a field the type is the value; in a list it is one byte
                self._take(1)
        elif value_type == BYTE:
            self._take(1)
        elif value_type in (I16, I32, I64):
            self.read_varint()
        elif value_type == DOUBLE:
            self._take(8)
        elif value_type == BINARY:
            self.read_binary()
        elif value_type == UUID:
            self._take(16)
        elif value_type in (LIST, SET):
            size, element_type = self.read_list_header()
            for _ in range(size):
                self.nested(lambda reader: reader._skip(element_type))
        elif value_type == MAP:
            size = self.read_varint()
            if size:
                types = self._byte()
                for _ in range(size):
                    self.nested(lambda reader: reader._skip(types >> 4))
                    self.nested(lambda reader: reader._skip(types & 0x0F))
        elif value_type == STRUCT:
            self.nested(lambda reader: reader.read_struct({}))
        else:
            raise ParquetError(f"unknown Thrift compact type {value_type}")
