"""The preparation stage end to end: filters, dedupe, sampling, split, examples, determinism, atomic writes."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import REAL_RECORDS, REPO, write_jsonl
from product_qa.data.examples import SPLITS
from product_qa.data.filtering import normalize_title
from product_qa.data.preparation import prepare
from product_qa.data.prompts import HELD_OUT_PHRASINGS, TRAINING_PHRASINGS


def catalog(n: int, start: int = 0) -> list[dict]:
    return [{"uid": f"B{i:09d}", "title": f"Acme Kettle Model {i}",
             "content": f"A stainless steel kettle, model {i}, holds {i % 7 + 1} litres and boils fast."}
            for i in range(start, start + n)]


def read_split(cfg, split):
    return [json.loads(line) for line in (Path(cfg.output_dir) / f"{split}.jsonl").read_text().splitlines()]


def outputs_bytes(cfg) -> dict[str, bytes]:
    return {split: (Path(cfg.output_dir) / f"{split}.jsonl").read_bytes() for split in SPLITS}


def test_filters_and_dedupe_are_counted_per_reason(tmp_path, data_config):
    records = catalog(20) + [
        {"uid": "e1", "title": "", "content": "A description without any title at all."},
        {"uid": "e2", "title": "Empty Box", "content": ""},
        {"uid": "e3", "title": "Rightly Dividing the Word", "content": "--This text refers to thePaperbackedition."},
        {"uid": "e4", "title": "Worship with Don Moen [VHS]", "content": "Worship with Don Moen [VHS]"},
        {"uid": "e5", "title": "Some Movie", "content": "VHS Tape"},
        {"uid": "e6", "title": "Short", "content": "Too short"},
        {"uid": "e7", "title": "Huge", "content": "word " * 2000},
        {**catalog(1, 3)[0], "uid": "dup-exact"},  # same title and content as model 3
        {"uid": "dup-title", "title": "ACME kettle model 4 (Paperback)",
         "content": "A longer description of the stainless steel kettle model 4, which holds five litres."},
    ]
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", records))
    report = prepare(data_config, progress=False)
    dropped = {reason: info["count"] for reason, info in report["dropped"].items() if info["count"]}
    assert dropped == {"empty_title": 1, "empty_content": 2, "content_equals_title": 1, "degenerate_content": 1,
                       "content_too_short": 1, "content_too_long": 1}
    assert report["duplicates_dropped"]["exact_duplicate"]["count"] == 1
    assert report["duplicates_dropped"]["exact_duplicate"]["examples"] == [{"line": 28, "kept_line": 4}]
    assert report["duplicates_dropped"]["duplicate_title"]["count"] == 1
    steps = report["steps"]
    assert steps["records_parsed"] == len(records) == steps["lines_with_data"]
    assert steps["after_filters"] == len(records) - sum(dropped.values())
    assert sum(steps[f"{s}_examples"] for s in SPLITS) == steps["after_sampling"] == 20
    examples = [e for s in SPLITS for e in read_split(data_config, s)]
    kettle_4 = [e for e in examples if normalize_title(e["title"]) == "acme kettle model 4"]
    assert len(kettle_4) == 1 and "five litres" in kettle_4[0]["answer"]  # the richest description won


def test_titles_with_nothing_to_tell_a_product_by_are_dropped_as_empty(tmp_path, data_config):
    """"...", "!!!" and a title of bidi marks normalize to an empty key: they were one product, deduplicated into
    one another; they are empty titles."""
    records = catalog(20) + [{"uid": f"n{i}", "title": title, "content": f"A real description of product {i}."}
                             for i, title in enumerate(["...", "!!!", "\u202e\u202c", " - ", "™™™"])]
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", records))
    report = prepare(data_config, progress=False)
    assert report["dropped"]["empty_title"]["count"] == 4
    assert report["duplicates_dropped"]["duplicate_title"]["count"] == 0
    kept = {example["uid"] for split in SPLITS for example in read_split(data_config, split)}
    assert "n4" in kept and not kept & {"n0", "n1", "n2", "n3"}  # its key is "tmtmtm"


def test_rich_markup_and_escapes_in_dropped_data_are_shown_as_written(tmp_path):
    """prepare's summary shows each drop reason's first title: "Broken [/] Markup Title" made every run (even an
    up-to-date one) exit 1 with rich's MarkupError, and "[link=...]" made a hyperlink."""
    raw = tmp_path / "trn.json"
    write_jsonl(raw, [{"uid": "m1", "title": "Broken [/] Markup Title", "content": ""},  # empty_content
                      {"uid": "m2", "title": "[link=https://x]y[/link]", "content": "tiny"},  # content_too_short
                      *catalog(20)])
    args = ["--no-progress", "--data", str(raw), "--set", f"data.output_dir={tmp_path / 'out'}", "--set",
            "data.workers=1", "--set", "data.min_content_chars=10"]
    for _ in ("prepared", "up to date"):
        result = subprocess.run([sys.executable, "prepare_data.py", *args], cwd=REPO, capture_output=True,
                                text=True, env={**os.environ, "COLUMNS": "300"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Broken [/] Markup Title" in result.stdout and "[link=https://x]y[/link]" in result.stdout


def test_examples_use_training_phrasings_in_train_and_held_out_ones_elsewhere(tmp_path, data_config):
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", catalog(2000)))
    data_config.validation_fraction = data_config.test_fraction = 0.1
    prepare(data_config, progress=False)
    train_ids = {p.id for p in TRAINING_PHRASINGS}
    held_ids = {p.id for p in HELD_OUT_PHRASINGS}
    train = read_split(data_config, "train")
    assert {e["phrasing"] for e in train} == train_ids  # every phrasing used, none held out
    for split in ("validation", "test"):
        assert {e["phrasing"] for e in read_split(data_config, split)} == held_ids
    example = train[0]
    assert set(example) == {"uid", "title", "question", "answer", "phrasing", "language", "messages"}
    assert example["title"] in example["question"] and example["answer"].startswith("A stainless steel kettle")
    assert {e["language"] for e in train} == {"en", "pt"}


def test_near_identical_titles_never_land_on_two_sides(tmp_path, data_config):
    records = []
    for i in range(1500):
        base = f"The Silent Harbor Volume {i}"
        for j, variant in enumerate([base, f"{base} (Paperback)", f"the silent harbor, volume {i}!",
                                     f"THE SILENT HARBOR  VOLUME {i} [VHS]", f"The Silent Harbor Volume {i} "
                                                                               f"(Spanish Edition)"]):
            records.append({"uid": f"{i}-{j}", "title": variant, "content": f"Story number {i}, told at length {j}."})
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", records))
    data_config.dedupe_titles = False
    data_config.validation_fraction = data_config.test_fraction = 0.15
    prepare(data_config, progress=False)
    sides = {}
    for split in SPLITS:
        for example in read_split(data_config, split):
            sides.setdefault(normalize_title(example["title"]), set()).add(split)
    assert len(sides) == 1500
    assert all(len(s) == 1 for s in sides.values())
    counts = {split: sum(1 for s in sides.values() if split in s) for split in SPLITS}
    assert 0.10 * 1500 < counts["test"] < 0.20 * 1500 and 0.10 * 1500 < counts["validation"] < 0.20 * 1500


def test_sampling_is_uniform_over_the_whole_file(tmp_path, data_config):
    total, wanted = 20000, 1000
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", catalog(total)))
    data_config.max_records = wanted
    report = prepare(data_config, progress=False)
    assert report["steps"]["after_sampling"] == wanted
    picked = np.array([int(e["uid"][1:]) for s in SPLITS for e in read_split(data_config, s)])
    assert len(picked) == wanted and len(set(picked)) == wanted
    per_decile = np.bincount(picked * 10 // total, minlength=10)
    assert per_decile.min() > 60 and per_decile.max() < 140, per_decile  # ~100 each, not the file's head
    assert picked.max() > 0.95 * total


def test_same_input_and_config_give_byte_identical_outputs(tmp_path, data_config):
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", catalog(3000)))
    data_config.max_records = 2000
    prepare(data_config, progress=False)
    first = outputs_bytes(data_config)
    data_config.output_dir = str(tmp_path / "again")
    data_config.workers = 2
    data_config.block_mb = 1
    prepare(data_config, progress=False)
    assert outputs_bytes(data_config) == first
    data_config.output_dir = str(tmp_path / "other-seed")
    data_config.seed = 7
    prepare(data_config, progress=False)
    assert outputs_bytes(data_config) != first


def test_rerun_is_a_no_op_unless_forced_or_changed(tmp_path, data_config):
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", catalog(50)))
    assert prepare(data_config, progress=False)["skipped"] is False
    train = Path(data_config.output_dir) / "train.jsonl"
    stamp = train.stat().st_mtime_ns
    assert prepare(data_config, progress=False)["skipped"] is True
    assert train.stat().st_mtime_ns == stamp
    # nothing left behind by the skipped run: no spool, no temp file, no half-built set beside the outputs
    assert sorted(p.name for p in Path(data_config.output_dir).iterdir()) == [
        "README.md", "prep_report.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out", "trn.json"]  # the data folder's lock
    assert prepare(data_config, progress=False, force=True)["skipped"] is False
    data_config.min_title_chars = 4
    assert prepare(data_config, progress=False)["skipped"] is False


def test_the_splits_load_with_datasets_and_their_dataset_card_is_made_from_the_report(tmp_path, data_config):
    """Each example carries its user and assistant turns (`messages`, TRL's chat form); the card written with the
    splits has a YAML header the Hub's parser reads, and the report's counts. It is documentation, not data: the
    prepared data's fingerprint, which every run checks, hashes the splits alone."""
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    from product_qa.data.examples import prepared_data_fingerprint
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", catalog(300) + catalog(20)[:5]))  # 5 duplicates
    report = prepare(data_config, progress=False)
    out = Path(data_config.output_dir)
    splits = load_dataset("json", data_files={split: str(out / f"{split}.jsonl") for split in SPLITS},
                          cache_dir=str(tmp_path / "hf"))
    for split in SPLITS:
        assert len(splits[split]) == report["steps"][f"{split}_examples"]
        assert all(row["messages"] == [{"role": "user", "content": row["question"]},
                                       {"role": "assistant", "content": row["answer"]}] for row in splits[split])

    card = DatasetCard.load(out / "README.md")
    header = card.data.to_dict()
    assert header["configs"] == [{"config_name": "default", "data_files": [
        {"split": split, "path": f"{split}.jsonl"} for split in SPLITS]}]
    assert header["license"] == "other" and header["size_categories"] == ["n<1K"]
    for split in SPLITS:
        assert re.search(rf"^\| {split} \| {report['steps'][f'{split}_examples']:,} \|", card.text, re.MULTILINE)
    assert f"| lines with data | {report['steps']['lines_with_data']:,} |" in card.text
    assert f"| dropped: exact duplicate | -{report['duplicates_dropped']['exact_duplicate']['count']:,} |" in card.text
    assert report["duplicates_dropped"]["exact_duplicate"]["count"] == 5
    assert report["input"]["blake2b"] in card.text

    from markdown_it import MarkdownIt

    from product_qa.data.card import dataset_card
    attack = "trn`` <img src=x onerror=alert(1)>\n\n<script>alert(1)</script>\n```\n<b>x</b>"
    html = MarkdownIt("commonmark").render(dataset_card(
        {**report, "input": {**report["input"], "path": attack}, "config": {**report["config"], "output_dir": attack}}
    ).split("\n---\n", 1)[1])
    assert not any(tag in html for tag in ("<img", "<script", "<b>"))  # a path in the settings is shown, as text

    before = prepared_data_fingerprint(data_config)
    (out / "README.md").write_text("edited by hand")
    assert prepared_data_fingerprint(data_config) == before


@pytest.mark.parametrize("kind, workers", [("csv", 1), ("csv.gz", 1), ("parquet", 1), ("parquet", 2)])
def test_csv_and_parquet_catalogs_prepare_to_the_examples_of_the_same_json_lines(tmp_path, data_config, kind,
                                                                                 workers):
    """The same records as a table with other column names, mapped in the config, give byte-identical splits."""
    import csv
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    records = catalog(300) + [{"uid": "e1", "title": "Empty Box", "content": ""},
                              {"uid": "q1", "title": 'Mug, "tall"', "content": "A tall mug,\nwith a lid and a handle."}]
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", records))
    expected = prepare(data_config, progress=False)
    json_outputs = outputs_bytes(data_config)

    path = tmp_path / f"catalog.{kind}"
    rows = [(r["uid"], r["title"], r["content"]) for r in records]
    if kind == "parquet":
        pq.write_table(pa.table({"product_id": [r[0] for r in rows], "product_name": [r[1] for r in rows],
                                 "body": [r[2] for r in rows]}), path, row_group_size=100)
        data_config.uid_field, data_config.title_field, data_config.content_field = "product_id", "product_name", "body"
    else:
        with (gzip.open(path, "wt", newline="") if kind.endswith(".gz") else open(path, "w", newline="")) as handle:
            csv.writer(handle).writerows([("sku", "name", "description"), *rows])
        data_config.uid_field, data_config.title_field, data_config.content_field = "sku", "name", "description"
    data_config.raw_path, data_config.output_dir, data_config.workers = str(path), str(tmp_path / kind), workers
    report = prepare(data_config, progress=False)
    assert outputs_bytes(data_config) == json_outputs
    assert report["steps"] == expected["steps"]
    assert report["dropped"]["empty_content"]["count"] == 1


def test_the_field_mapping_is_part_of_the_fingerprint(tmp_path, data_config):
    records = [{**record, "name": record["title"].upper()} for record in catalog(50)]
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", records))
    prepare(data_config, progress=False)
    data_config.title_field = "name"
    report = prepare(data_config, progress=False)
    assert report["skipped"] is False
    assert all(example["title"].isupper() for example in read_split(data_config, "train"))
    assert prepare(data_config, progress=False)["skipped"] is True


def test_an_edit_that_keeps_the_length_and_the_mtime_is_prepared_anew(tmp_path, data_config):
    """The up-to-date check compares the input's contents, not only its path, size and modification time."""
    raw = write_jsonl(tmp_path / "trn.json", catalog(50))
    data_config.raw_path = str(raw)
    prepare(data_config, progress=False)
    before = raw.stat()
    raw.write_bytes(raw.read_bytes().replace(b"stainless steel", b"STAINLESS STEEL"))  # the same length
    os.utime(raw, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert raw.stat().st_size == before.st_size and raw.stat().st_mtime_ns == before.st_mtime_ns
    assert prepare(data_config, progress=False)["skipped"] is False
    assert all("STAINLESS STEEL" in e["answer"] for e in read_split(data_config, "train"))


def test_the_new_set_is_on_disk_before_it_replaces_the_old_one(tmp_path, data_config, monkeypatch):
    """A crash (power loss) just after the swap must find the new files whole, not empty: every file of the set
    is flushed to disk (fsync) before the set takes the old one's place, and the folder holding it after."""
    import product_qa.io_utils as io_utils
    from product_qa.io_utils import TEMP_MARK
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", catalog(50)))
    prepare(data_config, progress=False)  # the old set
    events: list[tuple[str, str]] = []
    real_fsync, real_exchange = os.fsync, io_utils._exchange

    def fsync(descriptor: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def renamed(real):
        def call(source, destination, *args, **kwargs):
            events.append(("rename", os.path.realpath(destination)))
            return real(source, destination, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", renamed(os.rename))
    monkeypatch.setattr(os, "replace", renamed(os.replace))
    monkeypatch.setattr(io_utils, "_exchange", renamed(real_exchange))
    data_config.max_records = 40
    prepare(data_config, progress=False)

    out = str(Path(data_config.output_dir).resolve())
    swap = max(i for i, event in enumerate(events) if event == ("rename", out))
    synced_before = {Path(path).name for kind, path in events[:swap]  # in the set being built beside out
                     if kind == "fsync" and path.startswith(f"{out}{TEMP_MARK}")}
    assert {p.name for p in Path(out).iterdir()} <= synced_before
    assert ("fsync", str(Path(out).parent)) in events[swap:]  # the swap itself, once it happened


# Runs a command and prints its exit code and its peak memory (MiB: the largest process's; with data.workers=1
# the stages run in one).
PEAK_MEMORY = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], capture_output=True).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


@pytest.mark.parametrize("script", ["prepare_data.py", "data_analysis.py"])
def test_one_huge_line_costs_about_its_own_size_in_memory(tmp_path, tiny_model_dir, script):
    """The red team's file with one 50 MB description made preparation peak at 0.92 GB and the analysis at
    6.96 GB, for a field that preparation drops as too long: the stage's peak now grows by a small multiple of
    the line."""
    line_mb = 20
    records = catalog(200)
    huge = {"uid": "HUGE", "title": "Acme Kettle Deluxe",
            "content": "A kettle that boils fast. " * (line_mb * 2**20 // 26)}

    def peak_mb(name: str, rows: list[dict]) -> int:
        raw = write_jsonl(tmp_path / f"{name}.json", rows)
        settings = [f"data.output_dir={tmp_path / name / 'data'}", f"analysis.output_dir={tmp_path / name / 'an'}",
                    "data.workers=1", f"model.name={tiny_model_dir}"]
        result = subprocess.run([sys.executable, "-c", PEAK_MEMORY, sys.executable, script, "--no-progress",
                                 "--data", str(raw), *sum((["--set", s] for s in settings), [])],
                                cwd=REPO, capture_output=True, text=True)
        code, peak = result.stdout.split()
        assert code == "0", result.stderr
        return int(peak)

    growth = peak_mb("with-huge-line", records[:100] + [huge] + records[100:]) - peak_mb("plain", records)
    # reading and parsing the line whole costs a few copies of it (preparation: about 4); before the fix,
    # preparation took 16 and the analysis 143 times the line
    assert growth < 8 * line_mb, f"{script}: {growth} MB more for a {line_mb} MB line"


def test_a_huge_description_is_dropped_without_being_cleaned_whole(tmp_path, data_config, monkeypatch):
    """One 50 MB description made preparation peak at 0.92 GB: it was cleaned whole (and again for its drop
    example) before the too-long filter dropped it. Its start now shows it too long; nothing else changes."""
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", catalog(50)))
    prepare(data_config, progress=False)
    without = outputs_bytes(data_config)
    huge = {"uid": "HUGE", "title": "Acme Kettle Deluxe", "content": "A kettle that boils fast. " * 20_000}
    data_config.raw_path = str(write_jsonl(tmp_path / "huge.json", catalog(25) + [huge] + catalog(25, 25)))
    import product_qa.data.cleaning as cleaning
    cleaned = []  # the length of each text a cleaning rule is given

    def measured(rule):
        return lambda text: cleaned.append(len(text)) or rule(text)

    monkeypatch.setattr(cleaning, "CLEANING_RULES", [(name, measured(rule)) for name, rule in cleaning.CLEANING_RULES])
    report = prepare(data_config, progress=False)
    assert max(cleaned) <= cleaning.LONG_TEXT_CHARS < len(huge["content"])
    dropped = report["dropped"]["content_too_long"]
    assert dropped["count"] == 1 and dropped["examples"][0]["line"] == 26
    assert dropped["examples"][0]["content"] == ("A kettle that boils fast. " * 8)[:200]
    assert outputs_bytes(data_config) == without


def test_a_failure_mid_write_leaves_previous_outputs_intact(tmp_path, data_config, monkeypatch):
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", catalog(500)))
    prepare(data_config, progress=False)
    before = outputs_bytes(data_config)
    import product_qa.data.preparation as preparation
    real_outputs = preparation.atomic_outputs

    class FailingWriter:
        def __init__(self, handle):
            self.handle, self.calls = handle, 0

        def write(self, data):
            self.calls += 1
            if self.calls == 100:
                raise OSError("No space left on device")
            return self.handle.write(data)

    @contextmanager
    def failing_outputs(paths):
        with real_outputs(paths) as handles:
            yield {name: FailingWriter(handle) for name, handle in handles.items()}

    monkeypatch.setattr(preparation, "atomic_outputs", failing_outputs)
    with pytest.raises(OSError, match="No space"):
        prepare(data_config, progress=False, force=True)
    assert outputs_bytes(data_config) == before
    assert sorted(p.name for p in Path(data_config.output_dir).iterdir()) == [
        "README.md", "prep_report.json", "test.jsonl", "train.jsonl", "validation.jsonl"]


def test_sigkill_mid_write_leaves_previous_outputs_intact(tmp_path):
    out = tmp_path / "out"
    small = write_jsonl(tmp_path / "small.json", catalog(300))
    big = write_jsonl(tmp_path / "big.json", catalog(150000, start=10**6))
    args = ["--set", f"data.output_dir={out}", "--set", "data.workers=1", "--no-progress"]
    subprocess.run([sys.executable, "prepare_data.py", "--data", str(small), *args], cwd=REPO, check=True,
                   capture_output=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    process = subprocess.Popen([sys.executable, "prepare_data.py", "--data", str(big), *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while (not list(tmp_path.glob("out.tmp-*/train.jsonl.tmp-*")) and process.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.002)
        assert process.poll() is None, "the run ended before it started writing: make the input bigger"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # The next run removes the dead run's half-built set and completes.
    result = subprocess.run([sys.executable, "prepare_data.py", "--data", str(small), "--force", *args], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.glob("out.*"))


def test_an_input_where_every_record_is_filtered_out_keeps_the_old_outputs(tmp_path, data_config):
    from product_qa.errors import UserError
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", catalog(50)))
    prepare(data_config, progress=False)
    before = outputs_bytes(data_config)
    report_before = (Path(data_config.output_dir) / "prep_report.json").read_bytes()
    data_config.raw_path = str(write_jsonl(tmp_path / "empty.json", [{**r, "content": "Book by"} for r in catalog(20)]))
    with pytest.raises(UserError, match="no record passed the filters .*degenerate_content 20"):
        prepare(data_config, progress=False)
    assert outputs_bytes(data_config) == before
    assert (Path(data_config.output_dir) / "prep_report.json").read_bytes() == report_before


def test_bad_split_fractions_are_rejected():
    from config import Config
    from product_qa.configurator import apply_overrides
    from product_qa.errors import UserError
    with pytest.raises(UserError, match="leave room"):
        apply_overrides(Config(), ["data.validation_fraction=0.6", "data.test_fraction=0.5"])


@pytest.mark.skipif(not REAL_RECORDS.exists(), reason="../shared/data/real_trn_dev.jsonl not available")
def test_real_records_leave_no_entity_residue_or_boilerplate(tmp_path, data_config):
    data_config.raw_path = str(REAL_RECORDS)
    report = prepare(data_config, progress=False)
    assert report["steps"]["records_parsed"] == 700
    residue = re.compile(r"&#|&amp;|&[a-z]{2,8};|8217|This text refers to|Reed Business Information|Cahners")
    texts = [e[f] for s in SPLITS for e in read_split(data_config, s) for f in ("title", "question", "answer")]
    assert len(texts) > 3 * 600
    assert not [t for t in texts if residue.search(t)]


@pytest.mark.parametrize("compress", [False, True])
def test_line_numbers_stay_global_across_blocks_and_workers(tmp_path, data_config, compress):
    records = catalog(30000)
    bad_at = {1234: b"{broken", 17777: b'{"title": 5, "content": "x"}', 29999: b"[1, 2]"}
    lines = [json.dumps(r).encode() for r in records]
    for line, raw in bad_at.items():
        lines[line - 1] = raw
    records[20000 - 1]["content"] = ""
    lines[20000 - 1] = json.dumps(records[20000 - 1]).encode()
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / ("trn.json.gz" if compress else "trn.json")
    path.write_bytes(__import__("gzip").compress(data) if compress else data)
    assert len(data) > 3 << 20  # several 1 MB blocks
    data_config.raw_path, data_config.workers, data_config.block_mb = str(path), 2, 1
    report = prepare(data_config, progress=False)
    assert {reason: info["first_lines"] for reason, info in report["bad_input"].items()} == {
        "malformed_json": [1234], "wrong_type": [17777], "not_an_object": [29999]}
    assert [e["line"] for e in report["dropped"]["empty_content"]["examples"]] == [20000]
    assert report["steps"]["records_parsed"] == 30000 - 3
