"""The helpers every stage's report uses: a Markdown table, and a figure saved atomically. The reports
themselves live with their stage (data/report.py, training/report.py, answering/report.py)."""
from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING

from product_qa.io_utils import atomic_outputs

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# Text from the data (titles, answers, bad lines) is shown as text: no HTML, links, code or emphasis of its own
_MARKDOWN_TEXT = str.maketrans({"\\": "\\\\", "<": "&lt;", "[": "\\[", "]": "\\]", "`": "\\`", "*": "\\*",
                                "_": "\\_"})


def markdown_text(text: str) -> str:
    """Text from the data, shown in Markdown as written."""
    return text.translate(_MARKDOWN_TEXT)


def markdown_table(header: list[str], rows: list[list], align: str = "") -> list[str]:
    """The lines of a Markdown table; align has one letter per column, l or r (default: first left, rest right).
    Cells keep their Markdown (bold, code) but not HTML: a "<br>" in a cell is shown, not obeyed."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(value).replace("|", "\\|").replace("<", "&lt;") for value in row) + " |"
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

