"""What each setting of config.py means, read from config.py itself, for every stage script's --help and for the
parameter tables of README_FINE_TUNING.md:

    python -m product_qa.settings_doc --write    # rewrite the README's tables from config.py (make docs)
    python -m product_qa.settings_doc --check    # exit 1 when they differ

A setting's meaning is its trailing comment in config.py, after the comment lines just above it (when there are
any); a section's is its class docstring. The meanings stay comments (not `field(metadata=...)` or docstrings
beside each field) so that config.py remains the plain file of `name: type = value  # why` lines a user reads and
edits, and its comments are the one copy of the documentation, which --help and the README repeat word for word.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import io
import re
import shutil
import sys
import textwrap
import tokenize
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from product_qa.errors import UserError, run_cli
from product_qa.io_utils import atomic_outputs
from product_qa.settings import literal_choices

README = Path(__file__).resolve().parents[1] / "README_FINE_TUNING.md"
FIX_COMMAND = "python -m product_qa.settings_doc --write"
# a table's place in the README: <!-- settings: model, train --> ... <!-- /settings -->; the lines between are
# replaced by the table of the settings the opening marker names (sections, or section.field)
TABLE = re.compile(r"(<!-- settings: *([^>]*?) *-->\n)(.*?)(<!-- /settings -->)", re.DOTALL)
DEFAULT_CHARS = 32  # a longer default is cut in --help (the README shows it whole)


@dataclasses.dataclass(frozen=True)
class Setting:
    section: str
    name: str
    default: Any
    meaning: str

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    meaning: str
    settings: tuple[Setting, ...]


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """The comments of the source by line number: those alone on their line, and those after code."""
    alone, trailing = {}, {}
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row = token.start[0]
            text = token.string.lstrip("#").strip()
            (alone if lines[row - 1].lstrip().startswith("#") else trailing)[row] = text
    return alone, trailing


def field_meanings(source: str) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Each class's docstring, and each annotated field's comments: the lines just above it, then its own."""
    alone, trailing = _comments(source)
    docstrings: dict[str, str] = {}
    meanings: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docstrings[node.name] = " ".join((ast.get_docstring(node) or "").split())
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            above, row = [], statement.lineno - 1
            while row in alone:
                above.insert(0, alone[row])
                row -= 1
            own = [trailing[r] for r in range(statement.lineno, statement.end_lineno + 1) if r in trailing]
            parts = [" ".join(above), *own]  # a block above may be about several fields: its own comment follows
            meanings[node.name, statement.target.id] = "; ".join(" ".join(part.split()) for part in parts if part)
    return docstrings, meanings


@functools.cache
def config_sections() -> tuple[Section, ...]:
    """Every section of config.py's Config, its settings in the file's order with their defaults and meanings."""
    import config

    docstrings, meanings = field_meanings(Path(config.__file__).read_text(encoding="utf-8"))
    sections = []
    for section_field in dataclasses.fields(config.Config):
        section_type = section_field.default_factory  # type: ignore[misc]  # every section is a dataclass
        defaults = section_type()
        hints = typing.get_type_hints(section_type)
        settings = []
        for item in dataclasses.fields(section_type):
            meaning = meanings.get((section_type.__name__, item.name), "")
            choices = literal_choices(hints[item.name])
            if choices:
                meaning = f"{meaning} (one of: {', '.join(map(str, choices))})".lstrip()
            settings.append(Setting(section_field.name, item.name, getattr(defaults, item.name), meaning))
        sections.append(Section(section_field.name, docstrings.get(section_type.__name__, ""), tuple(settings)))
    return tuple(sections)


def selected(keys: Iterable[str]) -> list[Section]:
    """The sections and settings that `keys` name (a section, or section.field), in config.py's order."""
    wanted = set(keys)
    known = {section.name for section in config_sections()} | {
        setting.key for section in config_sections() for setting in section.settings}
    if unknown := sorted(wanted - known):
        raise ValueError(f"not settings of config.py: {', '.join(unknown)}")  # a stage script's mistake, not a user's
    chosen = []
    for section in config_sections():
        settings = tuple(s for s in section.settings if section.name in wanted or s.key in wanted)
        if settings:
            chosen.append(dataclasses.replace(section, settings=settings))
    return chosen


def default_text(value: Any) -> str:
    """A default as --set takes it: a text bare, anything else as Python writes it."""
    return value if isinstance(value, str) else repr(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def settings_help(keys: Iterable[str], width: int | None = None) -> str:
    """The --help text of the settings `keys` name: grouped by section, each `section.field = default` and its
    meaning, wrapped to the terminal's width (argparse's, less its margin)."""
    width = max(40, min(width or shutil.get_terminal_size().columns - 2, 120))
    column = min(40, width * 2 // 5)  # where the meanings start
    lines = textwrap.wrap("settings this stage reads (defaults from config.py; change them with --set "
                          "SECTION.FIELD=VALUE or --config FILE):", width)
    for section in selected(keys):
        lines.append("")
        lines.extend(textwrap.wrap(f"{section.name}: {section.meaning}", width, subsequent_indent="  "))
        for setting in section.settings:
            entry = f"  {setting.key} = {_cut(default_text(setting.default), DEFAULT_CHARS)}"
            meaning = textwrap.wrap(setting.meaning, width - column) or [""]
            if len(entry) < column - 1:
                lines.append(entry.ljust(column) + meaning[0])
                meaning = meaning[1:]
            else:
                lines.append(entry)
            lines.extend(" " * column + line for line in meaning)
    return "\n".join(line.rstrip() for line in lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table(keys: Iterable[str]) -> str:
    """The Markdown table of the settings `keys` name: setting, default (whole) and meaning."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{setting.key}` | `{_cell(default_text(setting.default))}` | {_cell(setting.meaning)} |"
             for section in selected(keys) for setting in section.settings]
    return "\n".join(rows) + "\n"


def marker_keys(marker: str) -> list[str]:
    return [key.strip() for key in marker.split(",") if key.strip()]


def readme_with_tables(text: str) -> str:
    """The README with every table between settings markers generated anew from config.py."""
    return TABLE.sub(lambda m: m[1] + settings_table(marker_keys(m[2])) + m[4], text)


def documented_sections(text: str) -> set[str]:
    """The sections whose every setting is in one of the README's generated tables."""
    return {key for marker in TABLE.finditer(text) for key in marker_keys(marker[2]) if "." not in key}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"rewrite the settings tables of {README.name}")
    action.add_argument("--check", action="store_true", help="exit 1 when the tables differ from config.py")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    fresh = readme_with_tables(text)
    if args.check:
        if fresh != text:
            print(f"{README.name}: the settings tables differ from config.py; run `{FIX_COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        try:
            with atomic_outputs({"readme": README}) as handles:
                handles["readme"].write(fresh.encode("utf-8"))
        except OSError as err:
            raise UserError(f"{README}: cannot write it ({err.strerror})") from None
    print(f"{README.name}: settings tables {'rewritten' if fresh != text else 'already up to date'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
