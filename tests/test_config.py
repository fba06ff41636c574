"""config.py overrides from the command line (--set section.field=value)."""
import pytest

from config import Config
from product_qa.configurator import apply_overrides, fingerprint
from product_qa.errors import UserError


def test_overrides_parse_python_literals_and_bare_strings():
    cfg = apply_overrides(Config(), ["data.max_records=50000", "data.test_fraction=0.1", "data.output_dir=/tmp/x",
                                     "data.dedupe_titles=False", "data.validation_fraction=0"])
    assert cfg.data.max_records == 50000
    assert cfg.data.test_fraction == 0.1
    assert cfg.data.output_dir == "/tmp/x"
    assert cfg.data.dedupe_titles is False
    assert cfg.data.validation_fraction == 0.0 and isinstance(cfg.data.validation_fraction, float)
    assert apply_overrides(Config(), ["data.max_records=None"]).data.max_records is None


def test_overrides_do_not_leak_between_configs():
    apply_overrides(Config(), ["data.seed=7"])
    assert Config().data.seed == 42


@pytest.mark.parametrize("override, message", [
    ("data.max_record=5", "unknown setting 'max_record'"),
    ("dta.seed=5", "unknown section 'dta'"),
    ("data.seed=abc", "not a valid int"),
    ("data.seed=1.5", "not a valid int"),
    ("data.dedupe_titles=1", "not a valid bool"),
    ("data.seed", "expected SECTION.FIELD=VALUE"),
])
def test_bad_overrides_give_clear_errors(override, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(Config(), [override])


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


@pytest.mark.parametrize("override, message", [
    ("data.workers=-1", "data.workers must be at least 0"),
    ("data.block_mb=-1", "data.block_mb must be at least 1"),
    ("data.block_mb=0", "data.block_mb must be at least 1"),
    ("data.validation_fraction=-0.5", r"data.validation_fraction must be in \[0, 1\)"),
    ("data.max_records=0", "data.max_records must be at least 1"),
    ("data.title_field=''", "data.title_field must name a field or column, got ''"),
    ("data.content_field=title", "data.title_field and data.content_field must differ, both are 'title'"),
    ("train.method=lroa", "'lroa' is not one of: lora, full, qlora"),
    ("train.lr_scheduler=bogus", "'bogus' is not one of: linear, cosine"),
    ("train.batch_size=0", "train.batch_size must be at least 1"),
    ("train.eval_batch_size=0", "train.eval_batch_size must be at least 1"),
    ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps must be at least 1"),
    ("train.learning_rate=-1", "train.learning_rate must be more than 0"),
    ("train.lora_r=0", "train.lora_r must be at least 1"),
    ("train.lora_dropout=1.5", r"train.lora_dropout must be in \[0, 1\)"),
    ("train.lora_target_modules=q_proj;v", "train.lora_target_modules must be all-linear or module names"),
    ("train.max_train_products=0", "train.max_train_products must be at least 1"),
    ("train.views=0", "train.views must be at least 1"),
    ("train.views=8", "train.views=8 is more than the 7 training phrasings"),
    ("train.view_languages=en,fr", "train.view_languages='en,fr': choose from en, pt"),
    ("train.unknown_share=1", r"train.unknown_share must be in \[0, 1\)"),
    ("train.early_stopping_on=train", "'train' is not one of: catalog, validation"),
    ("train.epochs=0", "train.epochs must be more than 0"),
    ("train.max_steps=0", "train.max_steps must be -1"),
    ("train.run_name=../data", "train.run_name='../data': a run name is a folder name under train.output_dir"),
    ("train.run_name=.", "train.run_name='.': a run name is a folder name"),
    ("train.run_name=good.old-999", "train.run_name='good.old-999': a run name is a folder name"),
    ("train.run_name=a.unfinished", "without .tmp-, .old- or .unfinished"),
    ("eval.run_name=/tmp/x", "eval.run_name='/tmp/x': a run name"),
    ("train.output_dir=outputs/data/runs", "train.output_dir='outputs/data/runs' is inside data.output_dir="
                                           "'outputs/data', which its stage replaces whole"),
    ("eval.output_dir=outputs/analysis", "eval.output_dir='outputs/analysis' is inside analysis.output_dir"),
    ("train.seed=-1", r"train.seed must be in 0..4294967295, got -1"),
    ("data.seed=99999999999999999999999999", "is not a valid int"),
    ("train.epochs=1e999", "inf is not a valid float"),
    ("train.eval_steps=0", "train.eval_steps must be a share of the run between 0 and 1 or a whole number"),
    ("train.eval_steps=2.5", "train.eval_steps must be a share of the run between 0 and 1 or a whole number"),
    ("generation.max_new_tokens=0", "generation.max_new_tokens must be at least 1"),
    ("rag.min_score=2", r"rag.min_score must be in \[0, 1\]"),
    ("eval.systems=base,oracle", "eval.systems: unknown oracle"),
    ("train.run_name=123", r"""123 is not a valid str \(a text that reads as a number: quote it, --set """
                           r"""'train.run_name="123"'\)"""),
    ("eval.systems=base,base", "eval.systems='base,base' names a system twice"),
    ("app.max_queue=-1", "app.max_queue must be at least 1"),
    ("app.port=70000", "app.port must be in 1..65535"),
    ("analysis.top_k=0", "analysis.top_k must be at least 1"),
    # the settings that multiply the work have a ceiling: epochs=1e6 or 10^8 document views filled 3 GB of
    # views in seconds, with no error
    ("train.epochs=1e6", "train.epochs must be at most 100, got 1000000.0"),
    ("train.document_views=100000000", "train.document_views must be at most 100, got 100000000"),
    ("train.context_views=101", "train.context_views must be at most 100"),
    ("train.max_length=1000000000000", "train.max_length must be at most 32,768"),
    ("train.lora_r=100000", "train.lora_r must be at most 1,024"),
    ("data.workers=100000", "data.workers must be at most 1,024"),
    ("generation.max_new_tokens=1000000000", "generation.max_new_tokens must be at most 32,768"),
    ("rag.max_context_tokens=1000000000", "rag.max_context_tokens must be at most 32,768"),
    (f"train.system_prompt={'x' * 4001}", "train.system_prompt must be at most 4,000 characters, got 4,001"),
])
def test_out_of_range_settings_are_refused_before_any_work(override, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(Config(), [override])


def test_the_ceilings_leave_room_for_real_runs():
    cfg = apply_overrides(Config(), ["train.epochs=100", "train.document_views=100", "train.context_views=100",
                                     "train.max_length=32768", "train.lora_r=1024",
                                     f"train.system_prompt={'x' * 4000}"])
    assert cfg.train.epochs == 100 and cfg.train.max_length == 32768


@pytest.mark.parametrize("signs", [5_000, 100_000])
def test_a_value_nested_past_what_python_parses_is_one_short_line(signs):
    """Thousands of unary minus signs: Python's parser raised RecursionError (5,000) or MemoryError (100,000)."""
    from conftest import run_script
    with pytest.raises(UserError, match="nests too deeply to read") as refused:
        apply_overrides(Config(), [f"train.seed={'-' * signs}1"])
    assert len(str(refused.value)) < 300
    result = run_script("fine_tuning_project.py", "--no-progress", "--set", f"train.seed={'-' * signs}1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "nests too deeply" in result.stderr
    assert len(result.stderr) < 300


def test_rules_between_settings_hold_whatever_the_order_of_the_overrides():
    cfg = apply_overrides(Config(), ["train.max_steps=10", "train.epochs=0"])  # max_steps decides: epochs unused
    assert cfg.train.max_steps == 10
    with pytest.raises(UserError, match="data.max_title_chars must be at least data.min_title_chars"):
        apply_overrides(Config(), ["data.min_title_chars=50", "data.max_title_chars=10"])


@pytest.mark.parametrize("script", ["prepare_data.py", "data_analysis.py", "fine_tuning_project.py",
                                    "test_pipeline.py", "ask.py", "app.py"])
def test_every_stage_script_refuses_a_bad_setting_in_one_line(script):
    from conftest import run_script
    for override, message in (("train.method=lroa", "not one of"), ("data.block_mb=0", "at least 1")):
        result = run_script(script, "--set", override, "question" if script == "ask.py" else "--no-progress")
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("script, override", [
    ("prepare_data.py", "data.workers=-1"), ("prepare_data.py", "data.block_mb=-1"),
    ("data_analysis.py", "data.validation_fraction=-0.5"),
    *[("fine_tuning_project.py", f"train.{setting}") for setting in (
        "batch_size=0", "gradient_accumulation_steps=0", "learning_rate=-1", "lora_r=0", "lora_dropout=1.5",
        "lr_scheduler=bogus", "eval_batch_size=0", "max_train_products=0", "epochs=0", "max_steps=0")],
    ("app.py", "app.max_queue=-1"),
])
def test_each_setting_the_red_team_broke_is_refused_by_its_stage_before_any_work(tmp_path, script, override):
    """Through the script the red team ran (tracebacks then; learning_rate=-1 only after the baseline evaluation,
    epochs=0 saved a 0-step "finished" run): one line naming the setting, exit 2, nothing printed or written."""
    from conftest import free_port, run_script
    folders = [f"data.output_dir={tmp_path / 'data'}", f"analysis.output_dir={tmp_path / 'analysis'}",
               f"train.output_dir={tmp_path / 'runs'}", f"eval.output_dir={tmp_path / 'evaluation'}"]
    port = ["--port", str(free_port())] if script == "app.py" else []  # were the check to fail, no fixed port
    result = run_script(script, "--no-progress", *port, *sum((["--set", s] for s in [*folders, override]), []))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and override.split("=")[0] in result.stderr
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script, flag", [("fine_tuning_project.py", "--run-name"), ("ask.py", "--run"),
                                          ("test_pipeline.py", "--run")])
def test_a_run_name_that_leaves_the_runs_folder_is_refused_in_one_line(tmp_path, script, flag):
    """The red team's `--run-name .` replaced the whole runs folder, and `--set train.run_name=/tmp/x` a folder
    of the user's: a run name is one plain folder name under train.output_dir."""
    from conftest import run_script
    runs = tmp_path / "runs"
    (runs / "notes").mkdir(parents=True)
    (runs / "notes" / "thesis.tex").write_text("keep")
    result = run_script(script, flag, "..", "--set", f"train.output_dir={runs}", "--set",
                        f"data.output_dir={tmp_path / 'data'}", *(["question"] if script == "ask.py" else []))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {flag}='..': a run name is a folder name under train.output_dir: letters, digits, ., - and _, up "
        "to 100, first a letter or digit, last not a dot, without .tmp-, .old- or .unfinished")
    assert (runs / "notes" / "thesis.tex").read_text() == "keep" and not (tmp_path / "data").exists()


def test_training_never_replaces_a_folder_it_did_not_write(tmp_path):
    """A run folder is replaced whole when the run is done, so a folder of the user's under that name (no
    training_report.json) is refused before any work."""
    from conftest import run_script
    (tmp_path / "runs" / "notes").mkdir(parents=True)
    (tmp_path / "runs" / "notes" / "thesis.tex").write_text("keep")
    result = run_script("fine_tuning_project.py", "--no-progress", "--run-name", "notes", "--set",
                        f"train.output_dir={tmp_path / 'runs'}", "--set", f"data.output_dir={tmp_path / 'data'}")
    assert result.returncode == 2 and "holds files this stage did not write" in result.stderr, result.stderr
    assert (tmp_path / "runs" / "notes" / "thesis.tex").read_text() == "keep" and not (tmp_path / "data").exists()


@pytest.mark.parametrize("script, setting", [("prepare_data.py", "data.output_dir"),
                                             ("data_analysis.py", "analysis.output_dir")])
def test_an_output_folder_that_names_a_file_is_refused_and_the_file_kept(tmp_path, script, setting):
    """The red team's `--set data.output_dir=notes.txt` swapped the file away for the stage's folder."""
    from conftest import run_script
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    result = run_script(script, "--no-progress", "--set", f"{setting}={notes}")
    assert result.returncode == 2 and "a file, not a folder" in result.stderr, result.stderr[-2000:]
    assert notes.read_text() == "precious"


def test_an_output_folder_inside_the_data_folder_through_a_link_is_refused_too(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(UserError, match="is inside data.output_dir"):
        apply_overrides(Config(), [f"data.output_dir={tmp_path / 'data'}",
                                   f"train.output_dir={tmp_path / 'link' / 'runs'}"])
