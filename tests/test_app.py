"""The web demo: what the page's answer handler streams, what it offers before fine-tuning, and app.py driven
end to end in headless Chromium."""
import socket
import subprocess
import sys
import time
import urllib.request
from itertools import pairwise
from pathlib import Path

import gradio as gr
import pytest

from config import Config
from conftest import REPO, cli_overrides, free_port, run_script
from product_qa.app.webapp import EMPTY_ANSWER
from product_qa.configurator import apply_overrides

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")
SCREENSHOT = REPO / "outputs" / "app" / "e2e_screenshot.png"
HANG_GUARD_S = 600  # only so that a broken page fails instead of hanging CI; never a speed check


@pytest.fixture(scope="module")
def tiny_demo(tiny_run):
    from product_qa.answering.systems import Answerer
    from product_qa.app.webapp import Demo
    cfg = apply_overrides(Config(), tiny_run["settings"])
    return Demo.load(Answerer(cfg, Path(tiny_run["run_dir"])))


def test_all_panels_stream_in_and_rag_names_its_source(tiny_demo, monkeypatch):
    from product_qa.answering.retrieval import source_line
    from product_qa.app import webapp
    monkeypatch.setattr(webapp, "UPDATE_INTERVAL_S", 0.0)  # every piece shown: the tiny model is faster than 0.1 s
    question = tiny_demo.example_questions()[0]
    assert [value for _, value in tiny_demo.modes] == ["assistant", "base", "fine_tuned", "rag", "all"]
    steps = list(tiny_demo.respond(question, "all"))
    *answers, source, status = steps[-1]
    assert all(answer.strip() for answer in answers), answers
    assert EMPTY_ANSWER not in answers[2:]  # the fine-tuned tiny model says something (the random base may not)
    hit = tiny_demo.answerer.index.search([question])[0]
    assert hit.matched and source == source_line(hit) and f"(uid {hit.uid})" in source
    assert status.startswith("Answered.") and "RAG" in status
    # streamed: each panel's text only grows, and panels fill one after another
    for panel in range(4):
        texts = [step[panel] for step in steps]
        assert all(later.startswith(earlier.rstrip()) for earlier, later in pairwise(texts))
    # piece by piece (the streamer gives whole words, and what the tiny model says may be one "word", so the pieces
    # are given here): every piece is shown as it comes
    monkeypatch.setattr(tiny_demo.answerer, "stream", lambda question, system: (hit, iter(["One ", "two ", "three."])))
    shown = [step[2] for step in tiny_demo.respond(question, "fine_tuned")]
    assert [text for text in dict.fromkeys(shown) if text] == ["One ", "One two ", "One two three."]
    assert all(step[2] == step[3] == "" for step in steps if step[-1].startswith("Base model is answering"))


def test_one_panel_alone_leaves_the_others_empty(tiny_demo):
    *answers, source, status = list(tiny_demo.respond(tiny_demo.example_questions()[1], "fine_tuned"))[-1]
    assert answers[0] == answers[1] == "" and answers[2] and answers[3] == "" and source == ""
    assert status.startswith("Answered. Fine-tuned model:")


def test_models_load_once_when_the_app_starts(tiny_run, monkeypatch):
    from product_qa.answering import systems as answering
    from product_qa.app.webapp import Demo
    loads = []
    real_load = answering.load_inference_model
    monkeypatch.setattr(answering, "load_inference_model", lambda *a: loads.append(a) or real_load(*a))
    demo = Demo.load(answering.Answerer(apply_overrides(Config(), tiny_run["settings"]), Path(tiny_run["run_dir"])))
    assert len(loads) == 2  # base and fine-tuned
    for question in demo.example_questions()[:2]:
        list(demo.respond(question, "all"))
    assert len(loads) == 2


def test_before_fine_tuning_the_page_says_so_and_offers_the_base_model(tiny_run, tmp_path):
    from product_qa.answering.systems import Answerer
    from product_qa.app.webapp import Demo
    cfg = apply_overrides(Config(), [*tiny_run["settings"], f"train.output_dir={tmp_path / 'no-runs'}"])
    demo = Demo.load(Answerer(cfg, None))
    assert "No fine-tuned model yet" in demo.notices[0] and "fine_tuning_project.py" in demo.notices[0]
    assert [value for _, value in demo.modes] == ["assistant", "base", "rag", "all"]
    assert demo.panel_label("rag") == "RAG: base model + retrieved description"
    assert demo.panel_label("assistant") == "Assistant (base model)"
    with pytest.raises(gr.Error, match="unknown choice"):
        next(demo.respond("What is Home Map?", "fine_tuned"))
    *answers, source, _ = list(demo.respond(demo.example_questions()[0], "rag"))[-1]
    assert answers[3] and "uid" in source


def test_without_prepared_data_rag_is_off_with_the_reason(tiny_run, tmp_path):
    from product_qa.answering.systems import Answerer
    from product_qa.app.webapp import Demo
    cfg = apply_overrides(Config(), [*tiny_run["settings"], f"data.output_dir={tmp_path}"])
    demo = Demo.load(Answerer(cfg, None))
    assert any("The assistant and RAG are off" in n and "prepare_data.py" in n for n in demo.notices)
    assert [value for _, value in demo.modes] == ["base"] and demo.example_questions() == []


def test_empty_questions_are_refused_and_long_ones_cut(tiny_demo):
    with pytest.raises(gr.Error, match="the question is empty"):
        next(tiny_demo.respond("   ", "base"))
    limit = tiny_demo.answerer.cfg.generation.max_question_chars
    *_, status = list(tiny_demo.respond("What is " + "x" * 2 * limit, "base"))[-1]
    assert status.startswith(f"The question was cut to its first {limit} characters.")


def test_the_page_answers_one_question_at_a_time_and_queues_the_rest(tiny_demo, tmp_path):
    from product_qa.app.webapp import build_page
    page = build_page(tiny_demo, tmp_path, tmp_path, tmp_path)
    answer_handlers = [fn for fn in page.fns.values() if fn.name == "respond"]
    # the button and Enter in the question box share one event, hence one queue with one answer at a time
    assert len(answer_handlers) == 1 and {event for _, event in answer_handlers[0].targets} == {"click", "submit"}
    assert answer_handlers[0].queue and answer_handlers[0].concurrency_limit in ("default", 1)
    assert page._queue.default_concurrency_limit == 1
    assert page._queue.max_size == tiny_demo.answerer.cfg.app.max_queue


def test_report_tabs_fall_back_to_the_shipped_plots_and_say_how_to_evaluate(tmp_path):
    from product_qa.app.webapp import analysis_plots, evaluation_view
    outputs, docs = tmp_path / "outputs", tmp_path / "docs"
    outputs.mkdir(), docs.mkdir()
    (docs / "funnel.png").write_bytes(b"png")
    assert analysis_plots(outputs, docs) == [(str(docs / "funnel.png"), "What cleaning and filtering remove")]
    (outputs / "token_lengths.png").write_bytes(b"png")
    assert [path for path, _ in analysis_plots(outputs, docs)] == [str(outputs / "token_lengths.png")]
    evaluation = tmp_path / "evaluation"
    note, plot = evaluation_view(evaluation)
    assert "python test_pipeline.py --evaluate" in note and plot is None
    evaluation.mkdir()
    (evaluation / "evaluation_report.json").write_text("{truncated")
    note, plot = evaluation_view(evaluation)
    assert note.startswith(f"Cannot read `{evaluation / 'evaluation_report.json'}`") and plot is None


def test_a_port_in_use_or_out_of_range_is_one_line_before_any_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_script("app.py", "--port", str(port), "--set", f"train.output_dir={tmp_path}")
    assert busy.returncode == 2 and "Loading" not in busy.stdout
    assert busy.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port} (Address already in use): "
                                                "pick another --port, or stop what uses it"]
    out_of_range = run_script("app.py", "--port", "70000")
    assert out_of_range.returncode == 2 and "app.port must be in 1..65535" in out_of_range.stderr
    assert "Traceback" not in busy.stderr + out_of_range.stderr
    # the red team's hosts: ::1 passed this check and crashed the server after the models loaded
    for host, message in (("::1", "--host ::1: an IPv6 address; use 127.0.0.1"),
                          ("bad host!", "--host bad host!: not an address or a name of this machine")):
        result = run_script("app.py", "--host", host, "--set", f"train.output_dir={tmp_path}")
        assert result.returncode == 2 and "Loading" not in result.stdout, result.stderr
        assert result.stderr.strip().splitlines()[0].startswith(f"error: {message}"), result.stderr


# ------------------------------------------------------------------------------------------------ browser
def _wait_until_serving(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"app.py exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"app.py did not serve {url}:\n{log.read_text()}")


def headless_chromium(profile: Path):
    """Debian's Chromium through its ChromeDriver (never a downloaded browser), with a fresh profile."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)


def test_a_question_asked_in_the_browser_gets_answers(tiny_run, tmp_path, monkeypatch):
    import psutil
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from product_qa.answering.evaluation import evaluate, write_evaluation
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    # a quick evaluation (retrieval alone) for the Evaluation tab to show
    settings = [*tiny_run["settings"], f"eval.output_dir={tmp_path / 'evaluation'}"]
    cfg = apply_overrides(Config(), [*settings, "eval.systems=retrieval", "eval.perplexity=False"])
    write_evaluation(evaluate(cfg, Path(tiny_run["run_dir"]), progress=False), cfg.eval.output_dir)
    port, log = free_port(), tmp_path / "app.log"
    url = f"http://127.0.0.1:{port}/"
    driver = headless_chromium(tmp_path / "chromium-profile")
    server = None
    try:
        with log.open("w") as log_file:
            server = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port),
                                       *cli_overrides(settings)], cwd=REPO, stdout=log_file,
                                      stderr=subprocess.STDOUT)
        _wait_until_serving(url, server, log)
        listening = [c.laddr for c in psutil.Process(server.pid).net_connections("inet") if c.status == "LISTEN"]
        assert listening and all(address.ip == "127.0.0.1" for address in listening)  # this machine only
        assert "gradio.live" not in log.read_text()  # no public link unless asked for
        driver.get(url)
        wait = WebDriverWait(driver, HANG_GUARD_S)
        question_box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#question textarea"))
        question = question_box.get_attribute("placeholder")
        question_box.send_keys(question)  # an example: a training product's title
        driver.find_element(By.CSS_SELECTOR, "#ask").click()  # the assistant, the first panel, answers alone
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#status").text.startswith("Answered"))
        assistant = driver.find_element(By.CSS_SELECTOR, "#answer-assistant textarea").get_attribute("value")
        source = driver.find_element(By.CSS_SELECTOR, "#source textarea").get_attribute("value")
        assert assistant.strip() and assistant != EMPTY_ANSWER
        assert source.startswith("Source: ") and "(uid " in source
        next(label for label in driver.find_elements(By.CSS_SELECTOR, "#mode label")
             if label.text == "All side by side").click()
        driver.find_element(By.CSS_SELECTOR, "#ask").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#status").text.startswith("Answered")
                   and "RAG" in d.find_element(By.CSS_SELECTOR, "#status").text)
        answers = {panel: driver.find_element(By.CSS_SELECTOR, f"#answer-{panel} textarea").get_attribute("value")
                   for panel in ("assistant", "base", "fine_tuned", "rag")}
        assert all(text.strip() for text in answers.values()), answers
        assert EMPTY_ANSWER not in (answers["fine_tuned"], answers["rag"])  # the models' own words
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT)) and SCREENSHOT.stat().st_size > 10_000

        def open_tab(name: str) -> None:
            next(tab for tab in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if tab.text == name).click()

        open_tab("Evaluation")
        wait.until(lambda d: "retrieval only" in d.find_element(By.CSS_SELECTOR, "#evaluation").text)
        assert "catalog products" in driver.find_element(By.CSS_SELECTOR, "#evaluation").text
        open_tab("Data analysis")
        wait.until(lambda d: any(img.is_displayed() and img.get_attribute("naturalWidth") != "0"
                                 for img in d.find_elements(By.CSS_SELECTOR, ".analysis-plot img")))
    finally:
        driver.quit()
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def test_the_server_refuses_uploads_other_hosts_and_framing(tmp_path, monkeypatch):
    """Any web page the user visits can post to 127.0.0.1: uploads are refused, a foreign Host header (DNS
    rebinding) is refused, every response forbids framing and content sniffing, and of the folders the plots
    come from only the plots are served (the red team read the evaluation's answers beside its plot)."""
    import http.client

    from product_qa.app.webapp import allowed_hosts, launch, shown_plots
    assert "*.gradio.live" in allowed_hosts("127.0.0.1", share=True)  # the share tunnel passes its Host through
    assert "*.gradio.live" not in allowed_hosts("127.0.0.1") and allowed_hosts("0.0.0.0") == ["*"]
    with gr.Blocks() as page:
        gr.Markdown("hello")
    port = free_port()
    upload_dir = tmp_path / "gradio_uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload_dir))  # where the server would keep what is posted
    eval_dir = tmp_path / "evaluation"
    eval_dir.mkdir()
    (eval_dir / "evaluation_report.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (eval_dir / "test_results.json").write_text("{}")
    launch(page, "127.0.0.1", port, prevent_thread_lock=True, quiet=True,
           files=shown_plots(tmp_path / "analysis", tmp_path / "docs", eval_dir))
    try:
        def request(method: str, path: str, headers: dict, body: bytes | None = None):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            connection.close()
            return response
        page_response = request("GET", "/", {"Host": f"127.0.0.1:{port}"})
        assert page_response.status == 200
        assert page_response.getheader("X-Frame-Options") == "DENY"
        assert page_response.getheader("X-Content-Type-Options") == "nosniff"
        assert "frame-ancestors 'none'" in page_response.getheader("Content-Security-Policy")
        assert request("GET", "/", {"Host": f"evil.example:{port}"}).status == 400
        for name, status in (("evaluation_report.png", 200), ("test_results.json", 403)):
            served = request("GET", f"/gradio_api/file={(eval_dir / name).resolve()}", {"Host": f"127.0.0.1:{port}"})
            assert served.status == status, (name, served.status)
        boundary = "xyz"
        many_small = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"f{i}.txt\""
                              f"\r\nContent-Type: text/plain\r\n\r\nx\r\n".encode() for i in range(50))
        big = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\n"
               f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"x" * 2_000_000 + b"\r\n"
        multipart = f"multipart/form-data; boundary={boundary}"
        for origin in ("https://evil.example", f"http://127.0.0.1:{port}"):  # refused from any site, the page's own too
            for path, files in (("/gradio_api/upload", many_small), ("/gradio_api/upload/", many_small),
                                ("/gradio_api/upload", big), ("/gradio_api/component_server", many_small),
                                ("/gradio_api/process_recording", many_small)):
                posted = request("POST", path, {"Host": f"127.0.0.1:{port}", "Origin": origin,
                                                "Content-Type": multipart}, files + f"--{boundary}--\r\n".encode())
                assert 400 <= posted.status < 500, (path, origin, posted.status)
        stored = [path for path in upload_dir.rglob("*") if path.is_file()] if upload_dir.exists() else []
        assert stored == []
    finally:
        page.close()
