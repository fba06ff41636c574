"""Catalogs as tables: CSV (.csv, gzip .csv.gz) here and Parquet (.parquet) in parquet.py, with their own column
names mapped by data.uid_field, title_field and content_field.

Both stream in bounded memory, like the JSON reader. A CSV file is parsed in the main process by the stdlib csv
module, the one parser that tells each record's line (a quoted field may hold line breaks, so lines are no
record boundaries; pyarrow's CSV reader parses faster but numbers rows, not lines); it sends the workers blocks
of rows already cut to the mapped columns. A CSV record is numbered by the line it starts on (the header is
line 1).
"""
from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple, TextIO

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


@dataclass
class TableReader:
    """A table file's reader: its source, the mapped fields, the size of its blocks and the bytes read so far
    (the progress bar's)."""

    source: SourceInfo
    fields: Fields
    block_bytes: int
    bytes_read: int = 0


class CsvReader(TableReader):
    """Blocks of about `block_bytes` of rows, cut to the mapped columns, parsed here (see the module's doc)."""

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
