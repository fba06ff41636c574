"""The helpers every stage's report uses: text from the data made safe to show (in a terminal, a rich console or
Markdown), a Markdown table, and a figure saved atomically. The reports themselves live with their stage
(data/report.py, training/report.py, answering/report.py)."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING

from rich.markup import escape

from product_qa.io_utils import atomic_outputs

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# ------------------------------------------------------------------------------------------------- terminal
# What a terminal obeys in text: CSI sequences (colours, cursor moves, clearing the screen), string commands up to
# their terminator (OSC: window titles and OSC 8 hyperlinks; DCS, SOS, PM, APC), the other ESC commands (ESC c
# resets the terminal), each also with its 8-bit (C1) introducer. Removed whole, so no parameter shows as text.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]")
# Characters a terminal acts on or hides: controls (C0, DEL, C1: CR, BEL, backspace, a lone ESC), format
# characters (bidi overrides and isolates, zero-width characters) and lone surrogates (unprintable as UTF-8).
_HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Cs"))


def terminal_text(text: str, *, multiline: bool = False) -> str:
    """Text from the data (a title, a uid, an answer, a path) as a terminal may print it: shown as written, never
    obeyed. Escape sequences go whole, other control and format characters are dropped, and line breaks and tabs
    become spaces (with multiline, newlines stay: an answer's paragraphs)."""
    text = _ESCAPE_SEQUENCE.sub("", text)
    if text.isprintable():  # what the loop below keeps unchanged: most text, checked at C speed
        return text
    return "".join(_terminal_char(char, multiline) for char in text)


def _terminal_char(char: str, multiline: bool) -> str:
    if char == "\n" and multiline:
        return char
    if char.isspace():  # CR, tab, vertical tab, form feed, line and paragraph separators, no-break spaces
        return " "
    return "" if unicodedata.category(char) in _HIDDEN_CATEGORIES else char


def console_text(text: str) -> str:
    """Text from the data for a rich console: terminal_text, with rich markup escaped (a title holding "[/]" or
    "[link=...]" is shown, not obeyed)."""
    return escape(terminal_text(text))


# ------------------------------------------------------------------------------------------------- Markdown
# Every line break Markdown or a viewer honours: in text from the data, a break could start a heading, a rule, a
# list or an HTML block.
_LINE_BREAK = re.compile("[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
# Text from the data (titles, answers, bad lines) is shown as text: no HTML, links, code or emphasis of its own
_MARKDOWN_TEXT = str.maketrans({"\\": "\\\\", "<": "&lt;", "&": "&amp;", "[": "\\[", "]": "\\]",
                                "`": "\\`", "*": "\\*", "_": "\\_", "~": "\\~", "#": "\\#", "@": "\\@"})
# Bare web addresses that GitHub-flavoured viewers turn into links: their "://" and "www." are escaped
_AUTOLINK = re.compile(r"://|(?i:www)\.")


def markdown_text(text: str) -> str:
    """Text from the data, shown in Markdown as written, on one line: no markup, HTML, link or line break of
    its own."""
    text = _LINE_BREAK.sub(" ", text).translate(_MARKDOWN_TEXT)
    return _AUTOLINK.sub(lambda match: match.group().replace("/", "\\/").replace(".", "\\."), text)


_BACKTICK_RUN = re.compile(r"`+")


def code_span(text: str) -> str:
    """Text from the data (a path, a model name) as a Markdown code span, on one line: fenced by more backticks
    than its longest run of them, so none of its own ends the span; a code span cannot be empty."""
    text = _LINE_BREAK.sub(" ", str(text))
    if not text:
        return "(empty)"
    fence = "`" * (max(map(len, _BACKTICK_RUN.findall(text)), default=0) + 1)
    padding = " " if text[0] == "`" or text[-1] == "`" else ""  # a fence must not run into the text's backticks
    return f"{fence}{padding}{text}{padding}{fence}"


def markdown_table(header: list[str], rows: list[list], align: str = "") -> list[str]:
    """The lines of a Markdown table; align has one letter per column, l or r (default: first left, rest right).
    Cells keep their Markdown (bold, code) but not HTML or line breaks: a "<br>" in a cell is shown, not obeyed,
    and a newline cannot end the table."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(_LINE_BREAK.sub(" ", str(value)).replace("|", "\\|").replace("<", "&lt;")
                                for value in row) + " |"
              for row in rows]
    return lines


def save_figure(fig: Figure, target: Path | IO[bytes], dpi: int = 120) -> None:
    """A PNG of a matplotlib Figure (drawn on the Agg canvas: no pyplot, no display), written to a temp file and
    renamed into place, or into an open binary file (one of several outputs written together)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: a Markdown table needs no matplotlib

    FigureCanvasAgg(fig)
    if not isinstance(target, Path):
        fig.savefig(target, format="png", dpi=dpi)
        return
    with atomic_outputs({"png": target}) as handles:
        fig.savefig(handles["png"], format="png", dpi=dpi)



@contextmanager
def seaborn_style() -> Iterator[ModuleType]:
    """seaborn, imported here (about 2 s: only where a plot is drawn), with its whitegrid style for the figures
    made inside the block; matplotlib's global settings are left as they were."""
    import seaborn

    with seaborn.axes_style("whitegrid"):
        yield seaborn
