"""Streaming reader for trn.json-style files: JSON Lines (.json/.jsonl), gzip, or one JSON array; and what every
reader shares (tables.py reads CSV, parquet.py Parquet, sources.py picks the reader of a file).

Memory stays flat whatever the file size: a reader cuts the file into tasks (blocks of whole lines) that a
worker process of data/scan.py loads and parses: `items` validates each record and sorts it into records or
bad input by reason, numbering them from the block's start (`line_count` says how many lines it spans).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import ijson
import orjson

from product_qa.errors import UserError

if TYPE_CHECKING:
    from config import DataConfig

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
# A line is held whole to be parsed: one past this is no catalog record (the longest real ones are kilobytes),
# and a few kilobytes of gzip can unpack to gigabytes of a single line
MAX_LINE_BYTES = 64 << 20

# Bad-input reasons, in the order the report lists them.
MALFORMED_JSON = "malformed_json"
INVALID_UTF8 = "invalid_utf8"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
BAD_TYPE = "wrong_type"
WRONG_FIELD_COUNT = "wrong_field_count"  # a CSV row with more or fewer fields than its header
BAD_INPUT_REASONS = (MALFORMED_JSON, INVALID_UTF8, NOT_AN_OBJECT, MISSING_FIELD, BAD_TYPE, WRONG_FIELD_COUNT)


class Fields(NamedTuple):
    """The input's names for a record's fields or columns (data.uid_field, title_field, content_field)."""

    uid: str = "uid"  # a table may lack this default column (ids are then hashes), not one the config names
    title: str = "title"
    content: str = "content"

    @classmethod
    def of(cls, data: DataConfig) -> Fields:
        return cls(data.uid_field, data.title_field, data.content_field)

    def setting(self, name: str) -> str:
        """The config setting that maps the field or column `name`."""
        return next(f"data.{kind}_field" for kind, mapped in self._asdict().items() if mapped == name)


DEFAULT_FIELDS = Fields()


class Record(NamedTuple):  # NamedTuple: millions are made, and they are cheap to create
    line: int  # 1-based line number (item number in a JSON array file)
    uid: str
    title: str
    content: str


class BadLine(NamedTuple):
    line: int
    reason: str
    detail: str


class Loaded(Protocol):
    """A task's records, loaded in a worker: numbered from the task's start, `line_count` lines (or rows) long."""

    @property
    def line_count(self) -> int: ...

    def items(self, fields: Fields) -> Iterator[Record | BadLine]: ...


class Task(Protocol):
    """What a reader hands a worker: something small to send, loaded there."""

    def load(self) -> Loaded: ...


class Reader(Protocol):
    source: SourceInfo
    bytes_read: int  # how far the tasks so far reach into the file, for progress bars

    def tasks(self) -> Iterator[Task]: ...


class Block(NamedTuple):
    data: bytes  # whole JSON Lines
    first_line: int

    @property
    def line_count(self) -> int:
        return self.data.count(b"\n") + (not self.data.endswith(b"\n")) if self.data else 0

    def load(self) -> Block:
        """The same lines numbered from 1, as a worker numbers them (ByteRange.load's counterpart)."""
        return self._replace(first_line=1)

    def items(self, fields: Fields) -> Iterator[Record | BadLine]:
        return parse_block(self, fields)


class ByteRange(NamedTuple):
    """A stretch of whole lines of an uncompressed file, for a worker to read itself."""

    path: str
    start: int
    end: int

    def load(self) -> Block:
        """The lines of this range, numbered from 1."""
        with open(self.path, "rb") as handle:
            handle.seek(self.start)
            data = handle.read(self.end - self.start)
        return Block(data.removeprefix(UTF8_BOM) if self.start == 0 else data, 1)


@dataclass
class SourceInfo:
    path: str
    format: str  # "jsonl", "json-array", "csv" or "parquet"
    compressed: bool
    size_bytes: int
    mtime_ns: int


def stable_uid(title: str, content: str) -> str:
    """An id for records without uid: a hash of their content, the same on every run and machine."""
    digest = hashlib.blake2b(f"{title}\x00{content}".encode("utf-8", "surrogatepass"), digest_size=8)
    return "h" + digest.hexdigest()


def check_fields(line: int, uid: object, title: object, content: object, fields: Fields) -> Record | BadLine:
    """A record from one entry's values, whatever the format (`...`: the field is missing): a string title and
    content, and a string or integer uid (a missing or empty one becomes a hash of the content)."""
    for name, value in ((fields.title, title), (fields.content, content)):
        if value is ...:
            return BadLine(line, MISSING_FIELD, f"no {name!r} field")
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            return BadLine(line, BAD_TYPE, f"{name!r} is {kind}, expected a string")
    if uid is None or uid == "":
        uid = stable_uid(title, content)
    elif isinstance(uid, (str, int)) and not isinstance(uid, bool):
        uid = str(uid)
    else:
        return BadLine(line, BAD_TYPE, f"{fields.uid!r} is {type(uid).__name__}, expected a string")
    return Record(line, uid, title, content)


def validate(obj: object, line: int, fields: Fields) -> Record | BadLine:
    """Check one decoded JSON value is an object with the record's fields; tolerate extra fields and no uid."""
    if not isinstance(obj, dict):
        return BadLine(line, NOT_AN_OBJECT, f"expected an object, got {type(obj).__name__}")
    return check_fields(line, obj.get(fields.uid), obj.get(fields.title, ...), obj.get(fields.content, ...), fields)


def parse_line(raw: bytes, line: int, fields: Fields) -> Record | BadLine | None:
    """Decode one JSON line; None for a blank line."""
    if not raw.strip():
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        message = str(err)
        if "utf-8" in message.lower() or "surrogate" in message.lower():
            return BadLine(line, INVALID_UTF8, "not valid UTF-8")
        return BadLine(line, MALFORMED_JSON, message.split(": line")[0])
    return validate(obj, line, fields)


def parse_block(block: Block, fields: Fields) -> Iterator[Record | BadLine]:
    """Records and bad lines of a block, in file order; blank lines are skipped."""
    line = block.first_line
    for raw in io.BytesIO(block.data):  # iterating frees each line as it goes: faster than split() on big blocks
        parsed = parse_line(raw, line, fields)
        if parsed is not None:
            yield parsed
        line += 1


def checked_file(path: Path) -> tuple[os.stat_result, bool]:
    """The stat of an existing, readable, non-empty file, and whether it is gzip; else one clear UserError."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a catalog file")
    try:
        with path.open("rb") as handle:
            compressed = handle.read(2) == GZIP_MAGIC
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    stat = path.stat()
    if stat.st_size == 0:
        raise UserError(f"{path}: file is empty")
    return stat, compressed


def describe_json(path: Path) -> SourceInfo:
    """Check the file is readable, non-empty JSON, and tell its format; else raise one clear UserError."""
    stat, compressed = checked_file(path)
    with open_binary(path, compressed) as handle:
        try:
            head = handle.read(65536)
        except (OSError, EOFError) as err:
            raise UserError(f"{path}: cannot decompress ({err})") from None
    first = head.removeprefix(UTF8_BOM).lstrip()[:1]
    if not first:
        raise UserError(f"{path}: file holds no data (only whitespace)")
    if first == b"{":
        fmt = "jsonl"
    elif first == b"[":
        fmt = "json-array"
    else:
        raise UserError(f"{path}: not JSON: expected JSON Lines (one object per line) or a JSON array, "
                        f"found {head[:40]!r} at the start (CSV and Parquet are read by their name: .csv, .csv.gz, "
                        ".parquet)")
    return SourceInfo(str(path), fmt, compressed, stat.st_size, stat.st_mtime_ns)


def open_binary(path: Path, compressed: bool) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if compressed else path.open("rb")


class BlockReader:
    """Iterate over blocks of whole lines; `bytes_read` follows the (compressed) file position for progress bars."""

    def __init__(self, source: SourceInfo, block_bytes: int = 4 << 20):
        self.source = source
        self.block_bytes = block_bytes
        self.bytes_read = 0

    def __iter__(self) -> Iterator[Block]:
        with open(self.source.path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if self.source.compressed else raw
            blocks = self._array_blocks(stream) if self.source.format == "json-array" else self._line_blocks(stream)
            for block in blocks:
                self.bytes_read = raw.tell()
                yield block

    def tasks(self) -> Iterator[Block | ByteRange]:
        plain = self.source.format == "jsonl" and not self.source.compressed
        return self.ranges() if plain else iter(self)

    def ranges(self) -> Iterator[ByteRange]:
        """Byte ranges of whole lines, for workers that read the file themselves (uncompressed JSON Lines only:
        the main process then reads a few bytes per block instead of the whole file)."""
        assert self.source.format == "jsonl" and not self.source.compressed
        with open(self.source.path, "rb") as handle:
            start = 0
            while start < self.source.size_bytes:
                handle.seek(start + self.block_bytes)
                rest = handle.readline(MAX_LINE_BYTES + 1)  # to the end of the line the block boundary falls in
                if len(rest) > MAX_LINE_BYTES:
                    raise UserError(self._too_long(f"the line at byte {start + self.block_bytes:,}"))
                end = min(handle.tell(), self.source.size_bytes)
                self.bytes_read = end
                yield ByteRange(self.source.path, start, end)
                start = end

    def _too_long(self, where: str) -> str:
        return (f"{self.source.path}: {where} is over {MAX_LINE_BYTES >> 20} MiB without a line break: not one "
                "record per line")

    def _line_blocks(self, stream: io.BufferedIOBase) -> Iterator[Block]:
        line, carry, first = 1, [], True  # carry: the chunks of a line not ended yet (joined once it ends)
        while True:
            try:
                chunk = stream.read(self.block_bytes)
            except (OSError, EOFError) as err:
                raise UserError(f"{self.source.path}: cannot read past line {line} ({err})") from None
            if first:
                chunk, first = chunk.removeprefix(UTF8_BOM), False
            if not chunk:
                break
            cut = chunk.rfind(b"\n")
            if cut < 0:
                carry.append(chunk)
                if sum(map(len, carry)) > MAX_LINE_BYTES:
                    raise UserError(self._too_long(f"line {line}"))
                continue
            data = b"".join([*carry, chunk[:cut]])
            carry = [chunk[cut + 1:]]
            block = Block(data, line)
            line += block.data.count(b"\n") + 1
            yield block
        if (rest := b"".join(carry)).strip():
            yield Block(rest, line)

    def _array_blocks(self, stream: io.BufferedIOBase) -> Iterator[Block]:
        """Re-encode the array's items as JSON Lines so the same parser handles both formats."""
        lines: list[bytes] = []
        size, item = 0, 0
        first_item = 1
        if stream.read(len(UTF8_BOM)) != UTF8_BOM:  # a BOM is skipped, as in JSON Lines
            stream.seek(0)
        try:
            for item, obj in enumerate(ijson.items(stream, "item", use_float=True), start=1):
                encoded = orjson.dumps(obj)
                lines.append(encoded)
                size += len(encoded)
                if size >= self.block_bytes:
                    yield Block(b"\n".join(lines), first_item)
                    lines, size, first_item = [], 0, item + 1
        except (ijson.JSONError, UnicodeDecodeError) as err:  # the parser's first line: the rest is a caret drawing
            reason = " ".join(str(err).split("\n")[0].split())
            raise UserError(f"{self.source.path}: item {item + 1}: malformed JSON array ({reason})") from None
        except (orjson.JSONEncodeError, RecursionError):
            raise UserError(f"{self.source.path}: item {item}: nested too deeply to be a record") from None
        if lines:
            yield Block(b"\n".join(lines), first_item)


@dataclass
class Tally:
    """Counts per reason, with the first `keep` examples of each: dicts holding the "line" they come from."""

    keep: int = 5
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict]] = field(default_factory=dict)

    def add(self, reason: str, example: Callable[[], dict]) -> None:
        """Count one more; `example` is called only while the reason still wants examples (some are costly)."""
        count = self.counts.get(reason, 0)
        if count < self.keep:
            self.examples.setdefault(reason, []).append(example())
        self.counts[reason] = count + 1

    def merge(self, other: Tally, line_offset: int = 0) -> None:
        """Add the tally of a later stretch of the file, whose lines count from `line_offset` + 1."""
        for reason, examples in other.examples.items():
            kept = self.examples.setdefault(reason, [])
            kept.extend({**example, "line": example["line"] + line_offset}
                        for example in examples[:self.keep - len(kept)])
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class BadInputLog(Tally):
    """Bad input lines per reason, with the line numbers and the message of the first few."""

    def add_line(self, bad: BadLine) -> None:
        self.add(bad.reason, lambda: {"line": bad.line, "detail": bad.detail})

    def first(self) -> BadLine | None:
        """The earliest bad line among the examples (the first of each reason is always kept, if any is)."""
        firsts = [BadLine(examples[0]["line"], reason, examples[0]["detail"])
                  for reason, examples in self.examples.items() if examples]
        return min(firsts, default=None)

    def as_dict(self) -> dict:
        return {
            reason: {"count": self.counts[reason], "first_lines": [e["line"] for e in self.examples.get(reason, [])],
                     "example": next((e["detail"] for e in self.examples.get(reason, [])), "")}
            for reason in BAD_INPUT_REASONS
            if reason in self.counts
        }


def strict_error(path: str, bad: BadLine) -> UserError:
    return UserError(f"{path}:{bad.line}: {bad.reason.replace('_', ' ')}: {bad.detail}")
