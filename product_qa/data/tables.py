"""Catalogs as tables: CSV (.csv, gzip .csv.gz) and Parquet (.parquet), with their own column names mapped by
data.uid_field, title_field and content_field.

Both stream in bounded memory, like the JSON reader. A CSV file is parsed in the main process by the stdlib csv
module, the one parser here that tells each record's line (a quoted field may hold line breaks, so lines are
no record boundaries); it sends the workers blocks of rows already cut to the mapped columns. A Parquet file is
read with pyarrow a batch at a time, only the mapped columns; the workers turn a batch into Python values.
A CSV record is numbered by the line it starts on (the header is line 1), a Parquet row by its index from 0.
"""
from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from product_qa.data.reading import (
    DEFAULT_FIELDS,
    INVALID_UTF8,
    MAX_LINE_BYTES,
    WRONG_FIELD_COUNT,
    BadLine,
    Fields,
    Record,
    SourceInfo,
    check_fields,
    checked_file,
)
from product_qa.errors import UserError

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIX = ".parquet"
PARQUET_BUFFER_BYTES = 1 << 20  # pages are read through a buffer this size, not a whole row group at once
_CUT_CHECK_ROWS = 256  # a CSV block's size is looked at every this many rows (a tell() per row costs)

Mapped = tuple[str | None, str, str]  # the uid (None: ids are hashes), title and content columns


def mapped_columns(path: Path | str, columns: list[str], fields: Fields) -> Mapped:
    """The columns the fields map to; one that is missing stops with a UserError naming the file, the column
    and the columns there are (the default uid column may be missing: records then get hash ids)."""
    def present(name: str, optional: bool) -> str | None:
        if name in columns or optional:
            return name if name in columns else None
        shown = ", ".join(map(repr, columns[:30])) + (f" and {len(columns) - 30} more" if len(columns) > 30 else "")
        raise UserError(f"{path}: no column {name!r} ({fields.setting(name)}); its columns: {shown}")

    uid = present(fields.uid, optional=fields.uid == DEFAULT_FIELDS.uid)
    return uid, present(fields.title, optional=False), present(fields.content, optional=False)


class Rows(NamedTuple):
    """Rows of a table as (line, uid, title, content), or already bad, numbered from the task's start."""

    rows: list[tuple[int, object, object, object] | BadLine]
    line_count: int

    def load(self) -> Rows:
        return self

    def items(self, fields: Fields) -> Iterator[Record | BadLine]:
        for row in self.rows:
            if isinstance(row, BadLine):
                yield row
            elif _undecodable(row[1:]):
                yield BadLine(row[0], INVALID_UTF8, "not valid UTF-8")
            else:
                yield check_fields(*row, fields)


def _undecodable(values: tuple) -> bool:
    """Whether a value holds bytes that were not UTF-8 (decoded as lone surrogates by "surrogateescape")."""
    for value in values:
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


# --- CSV ---------------------------------------------------------------------------------------------------------

@contextmanager
def _csv_text(path: str | Path, compressed: bool) -> Iterator[tuple[BinaryIO, BinaryIO, TextIO]]:
    """The file (for progress), its uncompressed bytes (for block sizes) and its text: a UTF-8 BOM skipped, bytes
    that are not UTF-8 kept as surrogates so that only their records are bad, line breaks left to the csv module."""
    with open(path, "rb") as raw:
        binary = gzip.GzipFile(fileobj=raw) if compressed else raw
        yield raw, binary, io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _csv_records(path: str | Path, text: TextIO) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, fields) of each record; blank lines are skipped (but counted)."""
    csv.field_size_limit(MAX_LINE_BYTES)  # process-wide: the default 128 KiB refuses long descriptions
    reader = csv.reader(text)
    end = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise UserError(f"{path}:{end + 1}: malformed CSV ({err})") from None
        except (OSError, EOFError) as err:
            raise UserError(f"{path}: cannot read past line {end} ({err})") from None
        start, end = end + 1, reader.line_num
        if row:
            yield start, end, row


def describe_csv(path: Path, fields: Fields) -> SourceInfo:
    """Check the file has a header row naming the mapped columns; else raise one clear UserError."""
    stat, compressed = checked_file(path)
    with _csv_text(path, compressed) as (_, _, text):
        first_record = next(_csv_records(path, text), None)
    if first_record is None:
        raise UserError(f"{path}: file holds no data (only blank lines)")
    mapped_columns(path, first_record[2], fields)
    return SourceInfo(str(path), "csv", compressed, stat.st_size, stat.st_mtime_ns)


class CsvReader:
    """Blocks of about `block_bytes` of rows, cut to the mapped columns, parsed here (see the module's doc)."""

    def __init__(self, source: SourceInfo, fields: Fields, block_bytes: int):
        self.source = source
        self.fields = fields
        self.block_bytes = block_bytes
        self.bytes_read = 0

    def tasks(self) -> Iterator[Rows]:
        with _csv_text(self.source.path, self.source.compressed) as (raw, binary, text):
            records = _csv_records(self.source.path, text)
            _, end, header = next(records)
            uid, title, content = (None if name is None else header.index(name)
                                   for name in mapped_columns(self.source.path, header, self.fields))
            width = len(header)
            first, rows, cut = 1, [], binary.tell() + self.block_bytes  # first: the block's first line
            for start, end, row in records:
                line = start - first + 1
                if len(row) != width:
                    rows.append(BadLine(line, WRONG_FIELD_COUNT, f"{len(row)} fields, the header has {width}"))
                else:
                    rows.append((line, None if uid is None else row[uid], row[title], row[content]))
                if len(rows) % _CUT_CHECK_ROWS == 0 and binary.tell() >= cut:
                    self.bytes_read = raw.tell()
                    yield Rows(rows, end - first + 1)
                    first, rows, cut = end + 1, [], binary.tell() + self.block_bytes
            self.bytes_read = raw.tell()
            if rows:
                yield Rows(rows, end - first + 1)


# --- Parquet -----------------------------------------------------------------------------------------------------

def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _open_parquet(path: str | Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: not a readable Parquet file ({err})") from None


def describe_parquet(path: Path, fields: Fields) -> SourceInfo:
    """Check the schema has the mapped columns, text (an integer uid too); else raise one clear UserError."""
    stat, _ = checked_file(path)
    schema = _open_parquet(path).schema_arrow
    uid, title, content = mapped_columns(path, schema.names, fields)
    for name, integer_too in ((uid, True), (title, False), (content, False)):
        kind = schema.field(name).type if name is not None else pa.string()
        if not (_is_text(kind) or (integer_too and pa.types.is_integer(kind))):
            raise UserError(f"{path}: column {name!r} ({fields.setting(name)}) holds {kind}, expected text")
    return SourceInfo(str(path), "parquet", False, stat.st_size, stat.st_mtime_ns)


class ParquetBatch(NamedTuple):
    batch: pa.RecordBatch  # only the mapped columns
    columns: Mapped

    def load(self) -> Rows:
        """The batch's rows as Python values, numbered from 0."""
        count = self.batch.num_rows
        uid, title, content = (self.batch.column(name).to_pylist() if name is not None else [None] * count
                               for name in self.columns)
        return Rows(list(zip(range(count), uid, title, content, strict=True)), count)


class ParquetReader:
    """Batches of about `block_bytes` of text (by the file's own statistics), only the mapped columns read."""

    def __init__(self, source: SourceInfo, fields: Fields, block_bytes: int):
        self.source = source
        self.fields = fields
        self.block_bytes = block_bytes
        self.bytes_read = 0

    def tasks(self) -> Iterator[ParquetBatch]:
        file = _open_parquet(self.source.path)
        columns = mapped_columns(self.source.path, file.schema_arrow.names, self.fields)
        wanted = list(dict.fromkeys(name for name in columns if name is not None))
        total, done = file.metadata.num_rows, 0
        batches = file.iter_batches(batch_size=self._rows_per_batch(file.metadata, wanted), columns=wanted)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as err:
                raise UserError(f"{self.source.path}: cannot read past row {done:,} ({err})") from None
            if batch is None:
                return
            done += batch.num_rows
            self.bytes_read = self.source.size_bytes * done // max(total, 1)
            yield ParquetBatch(batch, columns)

    def _rows_per_batch(self, metadata: pq.FileMetaData, wanted: list[str]) -> int:
        text_bytes = sum(group.column(index).total_uncompressed_size
                         for group in map(metadata.row_group, range(metadata.num_row_groups))
                         for index in range(group.num_columns) if group.column(index).path_in_schema in wanted)
        return max(1, self.block_bytes * metadata.num_rows // max(text_bytes, 1))
