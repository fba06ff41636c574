"""Which reader reads an input file, by its name: CSV (.csv, .csv.gz) in tables.py, Parquet (.parquet) in
parquet.py, anything else as JSON in reading.py; and `iter_records`, every record of a file read in one process."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from product_qa.data.reading import (
    DEFAULT_FIELDS,
    BadInputLog,
    BlockReader,
    Fields,
    Reader,
    Record,
    SourceInfo,
    describe_json,
    strict_error,
)
from product_qa.data.tables import CSV_SUFFIXES, CsvReader, describe_csv

DEFAULT_BLOCK_BYTES = 4 << 20
PARQUET_SUFFIX = ".parquet"


def describe_source(path: str | os.PathLike, fields: Fields = DEFAULT_FIELDS) -> SourceInfo:
    """Check the file can be read as a catalog with these fields (a table's mapped columns are all there), and
    tell its format; else raise one clear UserError."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIX):
        from product_qa.data.parquet import describe_parquet  # pyarrow is loaded only for a Parquet file
        return describe_parquet(path, fields)
    if name.endswith(CSV_SUFFIXES):
        return describe_csv(path, fields)
    return describe_json(path)


def open_reader(source: SourceInfo, fields: Fields = DEFAULT_FIELDS, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Reader:
    """The reader that cuts `source` into tasks of about `block_bytes` of text each."""
    if source.format == "parquet":
        from product_qa.data.parquet import ParquetReader
        return ParquetReader(source, fields, block_bytes)
    if source.format == "csv":
        return CsvReader(source, fields, block_bytes)
    return BlockReader(source, block_bytes)


def iter_records(path: str | os.PathLike, *, fields: Fields = DEFAULT_FIELDS, strict: bool = False,
                 bad_log: BadInputLog | None = None, reader: Reader | None = None) -> Iterator[Record]:
    """Every valid record of a file, in order, in one process. Bad input is skipped and counted in `bad_log`,
    or raises a UserError naming file:line and the reason when `strict`."""
    reader = reader or open_reader(describe_source(path, fields), fields)
    offset = 0  # a task numbers its lines from its start; the lines of the tasks before it come first
    for task in reader.tasks():
        block = task.load()
        for item in block.items(fields):
            item = item._replace(line=item.line + offset)
            if isinstance(item, Record):
                yield item
            elif strict:
                raise strict_error(reader.source.path, item)
            elif bad_log is not None:
                bad_log.add_line(item)
        offset += block.line_count
