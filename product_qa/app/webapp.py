"""The web demo behind app.py: a Gradio page where a person asks about a product and compares the systems.

The page's first answer panel is the assistant (it finds the product among every product of the data and
answers from its record, or from memory, or declines with the closest titles); the others are the base model,
the fine-tuned model and RAG (the retrieved description given to the fine-tuned model, or to the base model
before any fine-tuning). The person picks one of them or all side by side, and the answers stream in token by
token. Every model and the RAG index load once, when the app
starts; one question is answered at a time (the models share the machine) and the others wait in a queue.
Tabs show the analysis report's key plots and the latest evaluation tables.
"""
from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from product_qa.answering.report import evaluation_tables
from product_qa.answering.retrieval import source_line
from product_qa.answering.systems import MODEL_OF, Answerer
from product_qa.errors import UserError
from product_qa.io_utils import finish_renames, read_json
from product_qa.runs import no_run_note

# ASGI's parts: the connection's scope, and the functions that receive and send its messages
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PANELS = ("assistant", "base", "fine_tuned", "rag")
PANEL_LABELS = {"assistant": "Assistant", "base": "Base model", "fine_tuned": "Fine-tuned model", "rag": "RAG"}
ALL = "all"  # the mode that shows every available panel
ANALYSIS_PLOTS = {"funnel.png": "What cleaning and filtering remove",
                  "length_histograms.png": "Title and description lengths",
                  "token_lengths.png": "Tokens per training example", "quality_issues.png": "Quality issues",
                  "wordcloud_titles.png": "Words of the titles", "wordcloud_contents.png": "Words of the descriptions"}
EMPTY_ANSWER = "(no answer: the model ended its reply at once)"  # an empty panel would look broken
EXAMPLE_QUESTIONS = 3  # questions about training products offered under the question box
# The page is updated at most this often while an answer streams: smooth to the eye, and the server's work per
# update (diffing and sending every output) stays off the CPU the model needs.
UPDATE_INTERVAL_S = 0.1


@dataclass
class Demo:
    """What the page serves: the answerer with its models loaded, and the system behind each panel."""

    answerer: Answerer
    panel_system: dict[str, str]  # the available panels, each with the system that answers in it
    notices: list[str] = field(default_factory=list)  # why a panel is missing, and what to do about it

    @classmethod
    def load(cls, answerer: Answerer) -> Demo:
        """Load every model and the RAG index now, so that no request waits for them."""
        panel_system = {"assistant": "assistant", "base": "base", "fine_tuned": "fine_tuned",
                        "rag": answerer.stand_in("fine_tuned_rag")}
        notices = []
        if (note := no_run_note(answerer.cfg, answerer.run_dir)) is not None:
            del panel_system["fine_tuned"]  # the base model would answer there, as in the base panel
            notices.append(f"**{note[0].upper()}{note[1:]}**, then restart the app.")
        answerer.load([panel_system[panel] for panel in ("base", "fine_tuned") if panel in panel_system])
        try:
            answerer.load(["retrieval"])  # opens the index of every product (built once per prepared data set)
        except UserError as err:
            del panel_system["rag"], panel_system["assistant"]
            notices.append(f"**The assistant and RAG are off:** {err}.")
        return cls(answerer, panel_system, notices)

    @property
    def modes(self) -> list[tuple[str, str]]:
        """The radio's choices, (label, value): each available panel alone, then all of them."""
        choices = [(self.panel_label(panel), panel) for panel in PANELS if panel in self.panel_system]
        return choices + [("All side by side", ALL)] if len(choices) > 1 else choices

    def panel_label(self, panel: str) -> str:
        if panel == "assistant" and "assistant" in self.panel_system:
            return f"Assistant ({self.answerer.model_of('assistant').replace('_', '-')} model)"
        if panel == "rag" and "rag" in self.panel_system:  # which model reads the retrieved description
            return f"RAG: {MODEL_OF[self.panel_system['rag']].replace('_', '-')} model + retrieved description"
        return PANEL_LABELS[panel]

    def panels_of(self, mode: str) -> list[str]:
        return [p for p in PANELS if p in self.panel_system] if mode == ALL else [mode]

    def respond(self, question: str, mode: str) -> Iterator[tuple[str, ...]]:
        """Stream the answers of the chosen panels, one panel after the other. Each step yields the text of every
        panel, the RAG source and the status line (what the page's outputs show)."""
        if mode != ALL and mode not in self.panel_system:
            raise gr.Error(f"unknown choice {mode!r}")
        try:
            question, cut = self.answerer.clean(question)
        except UserError as err:
            raise gr.Error(str(err)) from None
        texts = dict.fromkeys(PANELS, "")
        source, timings = "", []
        note = f"The question was cut to its first {len(question)} characters. " if cut else ""

        def outputs(status: str) -> tuple[str, ...]:
            return (*texts.values(), source, note + status)

        for panel in self.panels_of(mode):
            yield outputs(f"{self.panel_label(panel)} is answering ...")
            started = time.perf_counter()
            hit, pieces = self.answerer.stream(question, self.panel_system[panel])
            if hit is not None:
                source = source_line(hit) if hit.matched else (f"No title matched well enough (closest: "
                                                               f"{hit.title}, uid {hit.uid}, score {hit.score:.2f})")
            shown = 0.0
            for piece in pieces:
                texts[panel] = (texts[panel] + piece).lstrip()
                if time.perf_counter() - shown >= UPDATE_INTERVAL_S:
                    shown = time.perf_counter()
                    yield outputs(f"{self.panel_label(panel)} is answering ...")
            texts[panel] = texts[panel].strip() or EMPTY_ANSWER
            timings.append(f"{PANEL_LABELS[panel]}: {time.perf_counter() - started:.1f} s")
        yield outputs("Answered. " + " · ".join(timings))

    def example_questions(self) -> list[str]:
        """A few training products, evenly spaced through the catalog, asked about the way people do."""
        if "rag" not in self.panel_system:  # no prepared data to take titles from
            return []
        records = self.answerer.index.records  # every indexed product, read from disk when asked for
        step = max(len(records) // EXAMPLE_QUESTIONS, 1)
        return [f"What is {records[i]['title']}?" for i in range(0, len(records), step)][:EXAMPLE_QUESTIONS]


# ------------------------------------------------------------------------------------------------ report tabs
def analysis_plots(analysis_dir: Path, docs_dir: Path) -> list[tuple[str, str]]:
    """The key plots of the latest analysis report (outputs/analysis), else the ones the docs ship."""
    for folder in (analysis_dir, docs_dir):
        plots = [(str(folder / name), caption) for name, caption in ANALYSIS_PLOTS.items() if (folder / name).exists()]
        if plots:
            return plots
    return []


def evaluation_view(eval_dir: Path) -> tuple[str, str | None]:
    """The latest evaluation's tables (Markdown) and its plot, or a note saying how to make them."""
    with suppress(OSError):  # an evaluation killed while renaming its files into place: finished, not mixed
        finish_renames(eval_dir)
    report_path = eval_dir / "evaluation_report.json"
    if not report_path.exists():
        return ("No evaluation yet: run `python test_pipeline.py --evaluate` (it writes "
                f"`{report_path}`), then reload this page.", None)
    try:
        tables = "\n".join(evaluation_tables(read_json(report_path, "evaluation report")))
    except (UserError, KeyError, TypeError) as err:
        return f"Cannot read `{report_path}` ({err!r}): run `python test_pipeline.py --evaluate` again.", None
    plot = eval_dir / "evaluation_report.png"
    return tables, str(plot) if plot.exists() else None


# ------------------------------------------------------------------------------------------------ page
# The browser's own fonts (no web fonts to fetch), and tables that wrap between words, not inside them.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
CSS = "#evaluation table { font-size: 0.85rem } #evaluation th, #evaluation td { word-break: normal }"


def check_address(host: str, port: int) -> None:
    """Fail at once, before the models load, when the address cannot be listened on (a port in use, say)."""
    if ":" in host:  # the web server builds its own URL as host:port, which an IPv6 address breaks
        raise UserError(f"--host {host}: an IPv6 address; use 127.0.0.1 (this machine) or 0.0.0.0 (every network)")
    with socket.socket(socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        try:
            sock.bind((host, port))
        except socket.gaierror:
            raise UserError(f"--host {host}: not an address or a name of this machine") from None
        except OSError as err:
            raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}): pick another --port, "
                            "or stop what uses it") from None


LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff"}
MAX_UPLOAD = "4kb"  # a second guard, should a Gradio version take files in a way RefuseUploads does not know
# Gradio's routes that store what is posted (files, a recording), under its API prefix; a trailing slash is the same
UPLOAD_ROUTES = ("upload", "process_recording")


class SecurityHeaders:
    """ASGI middleware: no other site may frame the page, and no response is content-sniffed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items())]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


class RefuseUploads:
    """ASGI middleware: the page takes no files, so no request may store one. Any page on any site can post a
    form to the demo (no preflight for multipart), and Gradio keeps what is posted in its upload folder for good:
    a multipart body, or a request to an upload route, is refused before its body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _stores_files(scope):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b"this demo takes no uploads"})
            return
        await self.app(scope, receive, send)


def _stores_files(scope: Scope) -> bool:
    content_type = dict(scope.get("headers", [])).get(b"content-type", b"")
    route = scope.get("path", "").rstrip("/").rpartition("/")[2]
    return content_type.strip().lower().startswith(b"multipart/") or route in UPLOAD_ROUTES


def allowed_hosts(host: str, share: bool = False) -> list[str]:
    """Host headers the server answers. Listening on loopback, only loopback names (and the public share link's,
    which its tunnel passes through): a page on another site that resolves its own name to 127.0.0.1 (DNS
    rebinding) is turned away. Listening on another address, any."""
    if host not in LOOPBACK_HOSTS:
        return ["*"]
    return ["127.0.0.1", "localhost", "[::1]", *(["*.gradio.live"] if share else [])]


def shown_plots(analysis_dir: Path, docs_dir: Path, eval_dir: Path) -> tuple[Path, ...]:
    """Every image file the page can show, and nothing else of those folders (reports, splits, runs)."""
    return (*(folder / name for folder in (analysis_dir, docs_dir) for name in ANALYSIS_PLOTS),
            eval_dir / "evaluation_report.png")


def launch(page: gr.Blocks, host: str, port: int, *, share: bool = False, files: tuple[Path, ...] = (),
           **options: Any) -> None:
    """Serve the page and, of the disk, only the image `files` it shows. Uploads are refused, the Host header is
    checked and the page cannot be framed (see RefuseUploads, allowed_hosts, SecurityHeaders)."""
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host, share)),
                  Middleware(SecurityHeaders), Middleware(RefuseUploads)]
    page.launch(server_name=host, server_port=port, share=share, ssr_mode=False, theme=THEME, css=CSS,
                allowed_paths=[str(path.resolve()) for path in files], max_file_size=MAX_UPLOAD,
                app_kwargs={"middleware": middleware}, **options)


def build_page(demo: Demo, analysis_dir: Path, docs_dir: Path, eval_dir: Path) -> gr.Blocks:
    cfg = demo.answerer.cfg
    modes = demo.modes
    default_mode = modes[0][1]  # the assistant, where there is an index
    with gr.Blocks(title="Ask about a product", analytics_enabled=False) as page:
        gr.Markdown("# Ask about a product\nType a product title as a question, as you would ask it. The assistant "
                    "finds the product among every product of the catalog and answers with its description, naming "
                    "its source; compare it with the models alone and RAG.")
        for notice in demo.notices:
            gr.Markdown(notice, elem_classes=["notice"])
        with gr.Tab("Ask"):
            examples = demo.example_questions()
            question = gr.Textbox(label="Question", lines=2, max_length=cfg.generation.max_question_chars,
                                  placeholder=examples[0] if examples else "What is the Girls Ballet Tutu Neon Pink?",
                                  elem_id="question",
                                  info=f"At most {cfg.generation.max_question_chars} characters.")
            mode = gr.Radio(choices=modes, value=default_mode, label="Answer with", elem_id="mode")
            ask = gr.Button("Ask", variant="primary", elem_id="ask")
            columns, boxes = [], []
            with gr.Row():
                for panel in PANELS:
                    with gr.Column(visible=panel in demo.panels_of(default_mode)) as column:
                        boxes.append(gr.Textbox(label=demo.panel_label(panel), lines=6, interactive=False,
                                                elem_id=f"answer-{panel}"))
                    columns.append(column)
            source = gr.Textbox(label="Retrieved source product", interactive=False, elem_id="source")
            status = gr.Markdown(elem_id="status")
            if examples:
                gr.Examples(examples=[[q] for q in examples], inputs=[question], label="Try a catalog product")
        with gr.Tab("Data analysis"):
            _analysis_tab(analysis_plots(analysis_dir, docs_dir))
        with gr.Tab("Evaluation"):
            _evaluation_tab(page, eval_dir)
        outputs = [*boxes, source, status]
        # One event for the button and Enter: one queue, so their questions never run at the same time.
        gr.on([ask.click, question.submit], demo.respond, [question, mode], outputs, api_name="respond")
        mode.change(lambda chosen: [gr.Column(visible=p in demo.panels_of(chosen)) for p in PANELS], [mode],
                    columns, queue=False)
    # One answer at a time: the models share the machine and the model objects are not thread-safe.
    return page.queue(default_concurrency_limit=1, max_size=cfg.app.max_queue)


def _analysis_tab(plots: list[tuple[str, str]]) -> None:
    """The analysis plots, two to a row."""
    if not plots:
        gr.Markdown("No analysis plots yet: run `python data_analysis.py`, then restart the app.")
    for row_start in range(0, len(plots), 2):
        with gr.Row():
            for path, caption in plots[row_start:row_start + 2]:
                gr.Image(value=path, label=caption, interactive=False, elem_classes=["analysis-plot"])


def _evaluation_tab(page: gr.Blocks, eval_dir: Path) -> None:
    """The latest evaluation's tables and plot, read at every page load: a new evaluation shows without a restart."""
    tables = gr.Markdown(elem_id="evaluation")
    plot = gr.Image(label="ROUGE-L, chrF and similarity per system", interactive=False, visible=False)

    def latest_evaluation() -> tuple[str, gr.Image]:
        text, path = evaluation_view(eval_dir)
        return text, gr.Image(value=path, visible=path is not None)

    page.load(latest_evaluation, None, [tables, plot], queue=False)
