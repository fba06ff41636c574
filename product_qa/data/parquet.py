"""Parquet catalogs (.parquet): read with pyarrow a batch at a time, only the mapped columns (tables.py maps
them); the workers turn a batch into Python values. A row is numbered by its index, from 0, as pandas and
pyarrow count. Imported only to read a Parquet file: pyarrow costs about 60 MB and a third of a second.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from product_qa.data.reading import Fields, SourceInfo, checked_file
from product_qa.data.tables import Mapped, Rows, TableReader, mapped_columns
from product_qa.errors import UserError

PARQUET_BUFFER_BYTES = 1 << 20  # pages are read through a buffer this size, not a whole row group at once


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


class ParquetReader(TableReader):
    """Batches of about `block_bytes` of text (by the file's own statistics), only the mapped columns read."""

    def tasks(self) -> Iterator[ParquetBatch]:
        file = _open_parquet(self.source.path)
        columns = mapped_columns(self.source.path, file.schema_arrow.names, self.fields)
        wanted = list(dict.fromkeys(name for name in columns if name is not None))
        total, done = file.metadata.num_rows, 0
        # one decoding thread: the workers have the other cores, and each thread's buffers cost about 40 MB
        batches = file.iter_batches(batch_size=self._rows_per_batch(file.metadata, wanted), columns=wanted,
                                    use_threads=False)
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
