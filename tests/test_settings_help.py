"""The settings a user sees and reuses: every stage's --help lists the settings it reads, from config.py's own
comments; --config FILE (a run's config.json, or TOML overrides); README_FINE_TUNING.md's tables generated from
config.py."""
import dataclasses
import importlib
import json
import re
import sys
from pathlib import Path

import pytest

import config
from config import Config
from conftest import REPO, run_script
from product_qa import settings_doc
from product_qa.configurator import apply_overrides, config_dict, config_from_args, stage_parser
from product_qa.errors import UserError

# The sections each stage reads whole (it may read single settings of others too); their settings are the
# dataclasses' fields, so a setting added to config.py must show in these stages' --help.
STAGES = {"data_analysis.py": {"analysis", "data", "model"}, "prepare_data.py": {"data"},
          "fine_tuning_project.py": {"data", "model", "train", "generation", "rag"},
          "test_pipeline.py": {"eval", "generation", "rag", "model"}, "ask.py": {"generation", "rag", "model"},
          "app.py": {"app", "generation", "rag", "model"}, "export_model.py": {"generation"}}


def section_keys(section: str) -> list[str]:
    section_type = next(f.default_factory for f in dataclasses.fields(Config) if f.name == section)
    return [f"{section}.{field.name}" for field in dataclasses.fields(section_type)]


def stage_help(script: str, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")  # the width argparse and the settings' lines wrap to
    return importlib.import_module(script.removesuffix(".py")).build_parser().format_help()


@pytest.mark.parametrize("script", sorted(STAGES))
def test_every_stage_lists_each_setting_of_the_sections_it_reads_with_default_and_meaning(script, monkeypatch):
    text = stage_help(script, monkeypatch)
    listed = re.findall(r"^  ([a-z]+\.[a-z_]+) = ", text, re.MULTILINE)
    for section in STAGES[script]:
        assert set(section_keys(section)) <= set(listed), section
    assert len(listed) == len(set(listed))  # each setting once
    settings = text[text.index("settings this stage reads"):]  # the script's docstring is kept as written
    assert max(map(len, settings.splitlines())) <= 98  # COLUMNS less argparse's margin of 2
    if script == "prepare_data.py":  # only what the stage reads
        assert set(listed) == set(section_keys("data"))


def test_every_stage_script_is_covered():
    """A stage script (one that builds its flags with stage_parser) added later must list its settings too."""
    stages = {path.name for path in REPO.glob("*.py") if "stage_parser(" in path.read_text(encoding="utf-8")}
    assert stages <= set(STAGES), f"add {sorted(stages - set(STAGES))} to STAGES with the sections it reads"


def test_help_shows_a_meaning_choices_and_long_defaults_cut():
    text = settings_doc.settings_help(["train"], width=100)
    assert re.search(r"^  train\.lora_r = 64 +room for the catalog's facts", text, re.MULTILINE)
    assert "(one of: lora, full, qlora)" in text
    assert "train.system_prompt = Answer with the product's des..." in text  # 32 characters at most
    assert "| `train.system_prompt` | `Answer with the product's description.` |" in settings_doc.settings_table(
        ["train"])  # the README shows it whole
    assert max(map(len, settings_doc.settings_help(["data", "train"], width=80).splitlines())) <= 80


def test_every_setting_of_config_py_has_a_meaning():
    docstrings, meanings = settings_doc.field_meanings(Path(config.__file__).read_text(encoding="utf-8"))
    for section in settings_doc.config_sections():
        assert section.meaning, f"{section.name}: give its class in config.py a docstring"
        for setting in section.settings:
            assert setting.meaning and not setting.meaning.startswith("(one of"), (
                f"{setting.key}: give it a comment in config.py (after it, or on the lines just above)")


def test_meanings_are_the_comment_lines_above_a_field_then_its_own():
    source = '''
class Example:
    """What the section is for."""

    # a comment over a blank line belongs to no field

    alone: int = 1  # its own comment; a '#' in it stays
    # the lines above a field,
    # joined
    both: str = "#not a comment"  # and its own
    # above a field written on two lines
    wrapped: tuple = (1,
                      2)  # its own comment, on its last line
    bare: int = 0
'''
    docstrings, meanings = settings_doc.field_meanings(source)
    assert docstrings == {"Example": "What the section is for."}
    assert meanings == {("Example", "alone"): "its own comment; a '#' in it stays",
                        ("Example", "both"): "the lines above a field, joined; and its own",
                        ("Example", "wrapped"): "above a field written on two lines; its own comment, on its last line",
                        ("Example", "bare"): ""}


def test_a_stage_naming_a_setting_config_py_lacks_is_a_programming_error():
    with pytest.raises(ValueError, match="not settings of config.py: train.no_such"):
        stage_parser("x", sections=("train.no_such",))


def test_help_runs_without_torch_in_every_stage():
    """--help is read before anything runs: no stage's parser imports torch or transformers."""
    driver = ("import atexit, importlib, sys\n"
              f"for name in {sorted(s.removesuffix('.py') for s in STAGES)!r}:\n"
              "    importlib.import_module(name).build_parser().format_help()\n"
              "atexit.register(lambda: print('heavy:', sorted({'torch', 'transformers'} & set(sys.modules))))\n")
    result = run_script("fine_tuning_project.py", "--help", driver=driver, env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "  train.lora_r = 64" in result.stdout and "--config FILE" in result.stdout
    assert result.stdout.rstrip().endswith("heavy: []")


# ------------------------------------------------------------------------------------------------- --config
def from_args(*argv: str) -> Config:
    return config_from_args(Config(), stage_parser("x").parse_args(list(argv)))


def test_a_finished_runs_config_json_repeats_its_settings_exactly(tiny_run):
    saved = Path(tiny_run["run_dir"]) / "config.json"
    repeated = config_dict(from_args("--config", str(saved)))
    assert repeated == json.loads(saved.read_text())
    assert repeated == config_dict(apply_overrides(Config(), tiny_run["settings"]))  # the settings it was run with
    assert repeated != config_dict(Config())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_overrides_sit_between_config_py_and_set(tmp_path):
    toml = write(tmp_path / "quick.toml", '[train]\nepochs = 2\nbatch_size = 4\n[data]\nmax_records = 500\n')
    cfg = from_args("--config", str(toml), "--set", "train.epochs=3")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.data.max_records) == (3.0, 4, 500)
    assert isinstance(from_args("--config", str(toml)).train.epochs, float)  # an int for a float, as --set takes it
    expected = apply_overrides(Config(), ["train.epochs=3", "train.batch_size=4", "data.max_records=500"])
    assert config_dict(cfg) == config_dict(expected)  # nothing else changed


@pytest.mark.parametrize("name, text, message", [
    ("bad.toml", "[train]\nepoch = 2\n", "bad.toml: 'train.epoch': unknown setting 'epoch'"),
    ("bad.toml", '[train]\nepochs = "two"\n', "bad.toml: train.epochs: 'two' is not a valid float"),
    ("bad.toml", "[trian]\nepochs = 2\n", "bad.toml: 'trian.epochs': unknown section 'trian'; sections: data,"),
    ("bad.toml", "epochs = 2\n", "bad.toml: unknown section 'epochs'"),
    ("bad.toml", "train = 2\n", r"bad.toml: 'train' is not a section \(\[train\] then SETTING = VALUE\)"),
    ("bad.toml", '[train]\nmethod = "lroa"\n', "bad.toml: train.method: 'lroa' is not one of: lora, full, qlora"),
    ("bad.toml", "[train]\nepochs = 2\nepochs = 3\n", r"bad.toml: not a TOML file \(Cannot overwrite a value"),
    ("bad.toml", "[train]\nepochs = 0\n", r"train.epochs must be more than 0, got 0.0 .*\(with the settings of .*"
                                          r"bad.toml\)"),
    ("bad.json", "[1, 2]", "bad.json: not a settings object"),
    ("bad.json", '{"data": {"seed": 1.5}}', "bad.json: data.seed: 1.5 is not a valid int"),
    ("bad.json", '{"data": {"seed": ', r"bad.json: cannot read the settings"),
    ("bad.yaml", "train:\n  epochs: 2\n", "bad.yaml: settings come from a .json file"),
])
def test_a_bad_settings_file_is_one_line_naming_the_file_and_the_setting(tmp_path, name, text, message):
    with pytest.raises(UserError, match=message):
        from_args("--config", str(write(tmp_path / name, text)))


def test_a_setting_an_older_run_recorded_that_is_gone_is_refused_naming_it(tmp_path):
    """The run could not be repeated as it was: the user decides (a copy of the file without it)."""
    old = {**config_dict(Config()), "train": {**config_dict(Config().train), "packing": True}}
    path = write(tmp_path / "config.json", json.dumps(old))
    with pytest.raises(UserError, match=r"config.json: 'train.packing': unknown setting 'packing' \(a setting of an "
                                        r"older version\? run from a copy of the file without it\)"):
        from_args("--config", str(path))


def test_a_file_never_lets_a_models_code_run(tmp_path, capsys):
    """A run folder may be downloaded: whether a model's code runs is config.py's or --set's to say."""
    path = write(tmp_path / "config.json", json.dumps({"model": {"trust_remote_code": True, "name": "org/model"}}))
    cfg = from_args("--config", str(path))
    assert cfg.model.trust_remote_code is False and cfg.model.name == "org/model"
    assert "model.trust_remote_code=True not taken from the file" in capsys.readouterr().err
    assert from_args("--config", str(path), "--set", "model.trust_remote_code=True").model.trust_remote_code


def test_a_null_in_config_json_is_none(tmp_path):
    path = write(tmp_path / "config.json", json.dumps({"train": {"max_train_products": None}}))
    assert from_args("--config", str(path)).train.max_train_products is None


def test_a_stage_script_stops_at_a_bad_toml_setting_in_one_line(tmp_path):
    path = write(tmp_path / "overrides.toml", '[data]\nmax_records = "many"\n')
    result = run_script("prepare_data.py", "--config", str(path), "--no-progress")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: data.max_records: 'many' is not a valid int | None"]


def test_a_section_named_like_an_attribute_is_unknown():
    with pytest.raises(UserError, match="unknown section '__class__'"):
        apply_overrides(Config(), ["__class__.data=1"])


# -------------------------------------------------------------------------------------------- README tables
def test_the_readme_tables_are_what_config_py_generates():
    text = settings_doc.README.read_text(encoding="utf-8")
    assert settings_doc.readme_with_tables(text) == text, (
        f"{settings_doc.README.name}'s settings tables differ from config.py: run `{settings_doc.FIX_COMMAND}` "
        "(make docs)")
    missing = {f.name for f in dataclasses.fields(Config)} - settings_doc.documented_sections(text)
    assert not missing, f"add a <!-- settings: SECTION --> ... <!-- /settings --> table for {sorted(missing)}"


def test_the_write_command_replaces_only_the_tables(tmp_path, monkeypatch, capsys):
    readme = write(tmp_path / "README.md", "# Title\n\nProse before.\n\n<!-- settings: app.port, app.host -->\n"
                                           "| an old table |\n<!-- /settings -->\n\nProse after.\n")
    monkeypatch.setattr(settings_doc, "README", readme)
    monkeypatch.setattr(sys, "argv", ["settings_doc", "--check"])
    assert settings_doc.main() == 1 and settings_doc.FIX_COMMAND in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["settings_doc", "--write"])
    assert settings_doc.main() == 0
    assert readme.read_text() == ("# Title\n\nProse before.\n\n<!-- settings: app.port, app.host -->\n"
                                  "| setting | default | meaning |\n| --- | --- | --- |\n"
                                  "| `app.host` | `127.0.0.1` | this machine only; 0.0.0.0 lets other machines in; "
                                  "--host overrides |\n| `app.port` | `7860` | port to listen on; --port overrides |\n"
                                  "<!-- /settings -->\n\nProse after.\n")
    monkeypatch.setattr(sys, "argv", ["settings_doc", "--check"])
    assert settings_doc.main() == 0
