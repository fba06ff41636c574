"""The analysis stage: exact figures on small files, bounded structures within their stated error, the same
cleaning, filter and funnel counts as the preparation stage, valid plots, the real records and the CLI."""
import gzip
import json
import re
from collections import Counter
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from config import Config
from conftest import REAL_RECORDS, REPO, run_script, write_jsonl
from product_qa.analysis.report import PLOTS, REPORT_JSON, REPORT_MD, SAMPLE_TABLE, write_report
from product_qa.analysis.sketches import HeavyHitters, LengthHistogram
from product_qa.analysis.statistics import analyse
from product_qa.analysis.text import word_count
from product_qa.data.cleaning import CLEANING_RULES
from product_qa.data.preparation import prepare
from product_qa.data.synthetic import generate_records, write_records

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def packaged_tokenizer(tokenizer):
    return tokenizer  # the session's packaged SmolLM2 tokenizer (conftest.py)


def config_for(data_config, tmp_path, **analysis) -> Config:
    cfg = Config(data=data_config)
    cfg.analysis.output_dir = str(tmp_path / "analysis")
    cfg.analysis.token_sample_size = 0  # no tokenizer unless a test asks for one
    for name, value in analysis.items():
        setattr(cfg.analysis, name, value)
    return cfg


def inverted_cdf(values, q):
    return int(np.quantile(np.array(values), q, method="inverted_cdf"))


SMALL = [
    {"uid": "1", "title": "Red Kettle", "content": "A red kettle that boils water fast."},
    {"uid": "2", "title": "Red Kettle", "content": "A red kettle that boils water fast."},  # exact duplicate
    {"uid": "3", "title": "Red Kettle", "content": "Another description of the red kettle, a longer one."},
    {"uid": "4", "title": "", "content": "A description without any title at all."},
    {"uid": "5", "title": "Blue Mug (Spanish Edition)", "content": ""},
    {"uid": "6", "title": "", "content": ""},
    {"uid": "7", "title": "La Casa de los Espíritus",
     "content": "Una novela de la familia del Trueba, con la historia de los espíritus y el amor."},
    {"uid": "8", "title": "Green Teapot [VHS]",
     "content": "Green  teapot&#8217;s glaze.<br>Holds a litre.The lid fits snugly."},
]
BAD_LINES = ["{not json", '{"title": "no content"}', '{"title": null, "content": "null title"}', "[1, 2]"]


def test_small_file_figures_are_exact(tmp_path, data_config):
    path = write_jsonl(tmp_path / "trn.json", SMALL)
    with path.open("a") as handle:
        handle.write("\n".join(BAD_LINES) + "\n")
    data_config.raw_path = str(path)
    report = analyse(config_for(data_config, tmp_path), progress=False).report

    assert report["records"] == {"lines_with_data": 12, "bad_input": 4, "records_parsed": 8, "empty_title": 2,
                                 "empty_content": 2, "both_empty": 1, "both_fields": 5}
    assert {reason: info["count"] for reason, info in report["bad_input"].items()} == {
        "malformed_json": 1, "not_an_object": 1, "missing_field": 1, "wrong_type": 1}
    assert report["bad_input"]["malformed_json"]["first_lines"] == [9]
    assert report["duplicates"] == {"records_with_both_fields": 5, "distinct_pairs": 4, "distinct_titles": 3,
                                    "exact_duplicates": 1, "duplicate_titles": 1}
    for name in ("title", "content"):
        texts = [r[name] for r in SMALL if r[name]]
        for unit, measure in (("chars", len), ("words", lambda text: len(text.split()))):
            values = [measure(text) for text in texts]
            summary = report["lengths"][name][unit]
            assert summary == {"count": len(values), "min": min(values),
                               **{f"p{round(q * 100)}": inverted_cdf(values, q) for q in (.05, .25, .5, .75, .95)},
                               "mean": round(sum(values) / len(values), 1), "max": max(values)}, (name, unit)

    quality = report["quality"]
    assert quality["html_entities"] == {"records": 1, "title": 0, "content": 1, "share": 0.125}
    assert quality["html_tags"]["records"] == quality["glued_sentences"]["records"] == 1
    assert quality["non_ascii"] == quality["non_english"] == {"records": 1, "title": 1, "content": 1, "share": 0.125}
    assert quality["exact_duplicates"]["records"] == 1 and quality["bad_input_lines"]["share"] == round(4 / 12, 4)
    title_words = dict(report["top_terms"]["title"]["words"]["top"])
    assert title_words["red"] == title_words["kettle"] == 3 and title_words["teapot"] == 1
    assert dict(report["top_terms"]["title"]["bigrams"]["top"])["red kettle"] == 3
    assert "the" not in dict(report["top_terms"]["content"]["words"]["top"])  # a stopword
    patterns = report["title_patterns"]
    assert patterns["language_editions"] == {"Spanish": 1} and patterns["formats"] == {"VHS": 1}
    assert dict(patterns["qualifiers"]["top"]) == {"(Spanish Edition)": 1, "[VHS]": 1}
    assert report["funnel"]["after_filters"] == 5 and report["funnel"]["after_title_dedupe"] == 3


def test_the_sample_table_holds_each_sampled_record_with_its_measures(tmp_path, data_config, packaged_tokenizer):
    """sample.parquet: one row per record of the reservoir, in its order, with the lengths, tokens, quality issues,
    copies and drop reason measured anew here; the same rows for the same seed."""
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", SMALL))
    cfg = config_for(data_config, tmp_path, token_sample_size=8)
    analysis = analyse(cfg, progress=False, tokenizer=packaged_tokenizer)
    write_report(analysis, cfg.analysis.output_dir)
    table = pd.read_parquet(Path(cfg.analysis.output_dir) / SAMPLE_TABLE)
    assert sorted(table["uid"]) == [r["uid"] for r in SMALL] and table["line"].tolist() != sorted(table["line"])
    assert table["line"].tolist() == [int(uid) for uid in table["uid"]]  # SMALL's uid is its line
    rows = table.set_index("uid")

    def tokens(text):
        return len(packaged_tokenizer(text, add_special_tokens=False)["input_ids"])

    for record in (SMALL[2], SMALL[7]):
        row = rows.loc[record["uid"]]
        for name in ("title", "content"):
            assert row[name] == record[name] and row[f"{name}_chars"] == len(record[name])
            assert row[f"{name}_words"] == len(record[name].split()) and row[f"{name}_tokens"] == tokens(record[name])
    assert rows.loc["3", "question_answer_tokens"] > rows.loc["3", "content_tokens"] + rows.loc["3", "title_tokens"]
    assert rows.loc["8", "clean_content"] == "Green teapot’s glaze. Holds a litre. The lid fits snugly."
    issues = ["html_entities", "html_tags", "glued_sentences", "non_ascii", "non_english", "empty_title",
              "empty_content"]
    assert rows.loc["8", issues].tolist() == [True, True, True, False, False, False, False]
    assert rows.loc["7", issues].tolist() == [False, False, False, True, True, False, False]
    assert rows.loc["4", issues].tolist() == [False] * 5 + [True, False]
    assert rows.loc["6", ["empty_title", "empty_content", "drop_reason"]].tolist() == [True, True, "empty_title"]
    assert rows.loc[["1", "2", "3"], ["pair_copies", "title_copies"]].values.tolist() == [[2, 3], [2, 3], [1, 3]]
    assert rows.loc[["4", "5"], "pair_copies"].isna().all() and rows.loc["8", "pair_copies"] == 1
    assert rows["question_answer_tokens"].notna().tolist() == rows["drop_reason"].isna().tolist()
    assert pd.read_parquet(Path(write_report(analyse(cfg, progress=False, tokenizer=packaged_tokenizer),
                                             str(tmp_path / "again"))["sample"])).equals(table)


def test_length_histogram_quantiles_are_within_the_stated_tolerance():
    values = np.random.default_rng(0).lognormal(5.5, 1.6, 20_000).astype(np.int64) + 1
    histogram = LengthHistogram()
    for chunk in np.array_split(values, 7):  # merged from blocks, as the workers send them
        histogram.merge(LengthHistogram.of(chunk.astype(np.uint32).tobytes()))
    summary = histogram.summary()
    assert (summary["count"], summary["min"], summary["max"]) == (len(values), values.min(), values.max())
    assert summary["mean"] == round(values.mean(), 1)
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        true = inverted_cdf(values, q)
        estimate = summary[f"p{round(q * 100)}"]
        assert estimate == true if true <= 111 else true / 1.01 <= estimate <= true, q


def test_heavy_hitters_keep_the_top_keys_within_their_error_bound():
    rng = np.random.default_rng(1)
    stream = [f"w{int(k)}" for k in rng.zipf(1.3, 60_000) if k < 5000]
    counter = HeavyHitters(capacity=200)
    truth = Counter()
    for start in range(0, len(stream), 1000):
        block = Counter(stream[start:start + 1000])
        truth.update(block)
        counter.add(dict(block))
    assert counter.error > 0 and len(counter.counts) <= 400
    for key, estimate in counter.top(20):
        assert truth[key] - counter.error <= estimate <= truth[key]
    assert [key for key, _ in counter.top(5)] == [key for key, _ in truth.most_common(5)]


def test_word_count_matches_split():
    for text in ("a b", " a", "a  b", "a\nb", "a\xa0b", "abc", "x y z.", "\u2003a b", "a\u200bb", "a b ",
                 "a \x1c\x85b\u3000 c  " * 10_000):  # the last counted without split(): it is long
        assert word_count(text) == len(text.split()), repr(text[:20])


EDGE_CASES = [
    {"uid": "e1", "title": "&nbsp;", "content": ""},  # prepare filters it raw: empty content, not empty title
    {"uid": "e2", "title": "Good Title", "content": "&nbsp;&nbsp;"},  # cleaned to an empty content
    {"uid": "e3", "title": "<b></b>", "content": "A description long enough to be kept."},
    {"uid": "e4", "title": "Some Movie", "content": "VHS Tape"},
    {"uid": "e5", "title": "Same Words", "content": "Same words!"},
    {"uid": "e6", "title": "ab", "content": "A description long enough to be kept."},
    {"uid": "e7", "title": "x" * 400, "content": "A description long enough to be kept."},
    {"uid": "e8", "title": "Long One", "content": "word " * 100},
    {"uid": "e9", "title": "Short One", "content": "Too short"},
]


@pytest.mark.parametrize("workers", [1, 2])
def test_cleaning_filters_and_funnel_match_the_preparation_stage(tmp_path, data_config, workers):
    records = list(generate_records(3000, seed=3, length_profile="full")) + EDGE_CASES
    path = tmp_path / "trn.json"
    write_records(str(path), records)
    data_config.raw_path = str(path)
    data_config.workers = workers
    data_config.block_mb = 1  # several blocks: line numbers and reservoir merge across them
    data_config.max_content_chars = 300
    data_config.max_records = 1500  # the funnel includes prepare's sampling
    report = analyse(config_for(data_config, tmp_path, reservoir_size=500), progress=False).report
    prep = prepare(data_config, progress=False)

    assert report["funnel"] == prep["steps"]
    assert {item["filter"]: item["dropped"] for item in report["filters"]} == {
        reason: info["count"] for reason, info in prep["dropped"].items()}
    for item in report["filters"]:
        assert [ex["line"] for ex in item["examples"]] == [ex["line"] for ex in prep["dropped"][item["filter"]]
                                                           ["examples"][:len(item["examples"])]]
    assert report["duplicates_dropped"] == prep["duplicates_dropped"]

    expected = {name: Counter() for name, _ in CLEANING_RULES}  # every rule applied in order to each field
    for record in records:
        changed = set()
        for field in ("title", "content"):
            text = record[field]
            for name, rule in CLEANING_RULES if text else ():
                if rule(text) != text:
                    expected[name][field] += 1
                    changed.add(name)
                text = rule(text)
        for name in changed:
            expected[name]["records"] += 1
    for rule in report["cleaning_rules"]:
        counts = expected[rule["rule"]]
        assert (rule["records"], rule["title"], rule["content"]) == (
            counts["records"], counts["title"], counts["content"]), rule["rule"]
    entities = report["cleaning_rules"][0]  # the first rule: its examples show the raw text
    assert entities["rule"] == "decode_html_entities" and len(entities["examples"]) == 3
    for example in entities["examples"]:
        assert example["before"].strip("…") in records[example["line"] - 1][example["field"]]
        assert "&" in example["before"] and example["after"] != example["before"]
    assert report["sample_sizes"]["reservoir"] == 500


def test_results_do_not_depend_on_workers_or_compression(tmp_path, data_config):
    plain, packed = tmp_path / "trn.json", tmp_path / "trn.json.gz"
    write_records(str(plain), generate_records(3000, seed=4, length_profile="full"))
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    data_config.block_mb = 1
    reports = []
    for path, workers in ((plain, 1), (plain, 2), (packed, 2)):  # the gzip file: blocks read by the main process
        data_config.raw_path, data_config.workers = str(path), workers
        analysis = analyse(config_for(data_config, tmp_path, reservoir_size=300), progress=False)
        report = {key: value for key, value in analysis.report.items() if key not in ("timings_s", "config", "input")}
        reports.append((json.dumps(report, sort_keys=True), analysis.cloud_words, analysis.sample.to_json()))
    assert reports[0] == reports[1] == reports[2]


def test_every_plot_is_a_valid_png_and_the_report_links_them(tmp_path, data_config, packaged_tokenizer):
    data_config.raw_path = str(REPO / "sample_data.json")
    cfg = config_for(data_config, tmp_path, token_sample_size=300)
    analysis = analyse(cfg, progress=False, tokenizer=packaged_tokenizer)
    paths = write_report(analysis, cfg.analysis.output_dir)
    out = Path(cfg.analysis.output_dir)
    markdown = (out / REPORT_MD).read_text()
    for filename in PLOTS.values():
        data = (out / filename).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, filename
        image = matplotlib.image.imread(out / filename)
        assert image.shape[0] >= 300 and image.shape[1] >= 600 and image.std() > 0.01, filename
        assert f"]({filename})" in markdown
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["funnel"] == analysis.report["funnel"] and paths["markdown"] == out / REPORT_MD
    assert "## How each figure was computed" in markdown and "reservoir sample of 300 records" in markdown


def test_max_length_covers_the_target_share_of_training_examples(tmp_path, data_config, packaged_tokenizer):
    data_config.raw_path = str(REPO / "sample_data.json")
    cfg = config_for(data_config, tmp_path, token_sample_size=400, max_length_coverage=0.9)
    analysis = analyse(cfg, progress=False, tokenizer=packaged_tokenizer)
    chosen, lengths = analysis.report["max_length"], analysis.token_lengths["question_answer"]
    sample = analysis.report["sample_sizes"]["tokens"]
    assert sample == 400 and 0 < chosen["examples_measured"] == len(lengths) < sample  # only kept records
    assert chosen["recommended"] % 8 == 0 and chosen["recommended"] >= chosen["tokens_at_coverage"]
    assert chosen["coverage"] == round(float((lengths <= chosen["recommended"]).mean()), 4) >= 0.9
    assert chosen["template"] == "chat" and chosen["system_prompt"] == cfg.train.system_prompt
    # the training stage's own encoding: the chat template, the system prompt, answer and EOS
    assert lengths.min() > len(packaged_tokenizer(cfg.train.system_prompt)["input_ids"]) + 10
    assert analysis.report["lengths"]["title"]["tokens"]["count"] == len(analysis.token_lengths["title"]) > 0


def test_a_huge_description_is_neither_tokenized_nor_cleaned_whole(tmp_path, data_config, packaged_tokenizer,
                                                                   monkeypatch):
    """One 50 MB description made the analysis peak at 6.96 GB: its tokens were counted, and it was cleaned
    whole, though preparation drops it as too long. It is measured whole (characters, words), cleaned from its
    start as preparation does, and not tokenized; the funnel still matches preparation's."""
    import product_qa.analysis.cleaning_trace as trace
    import product_qa.analysis.tokens as tokens
    huge = {"uid": "HUGE", "title": "Acme Kettle Deluxe", "content": "A kettle that boils fast. " * 20_000}
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", SMALL + [huge]))
    cleaned, tokenized = [], []  # the lengths of the texts each cleaning rule, and the tokenizer, are given
    monkeypatch.setattr(trace, "CLEANING_RULES", [(name, lambda text, rule=rule: cleaned.append(len(text))
                                                   or rule(text)) for name, rule in CLEANING_RULES])
    real_count = tokens.count_tokens
    monkeypatch.setattr(tokens, "count_tokens", lambda tokenizer, texts: tokenized.extend(map(len, texts))
                        or real_count(tokenizer, texts))
    analysis = analyse(config_for(data_config, tmp_path, token_sample_size=100), progress=False,
                       tokenizer=packaged_tokenizer)
    report = analysis.report
    row = analysis.sample.set_index("uid").loc["HUGE"]
    assert (row["content_chars"], row["content_words"]) == (len(huge["content"]), 100_000)
    assert row["drop_reason"] == "content_too_long" and row["content_tokens"] is pd.NA
    assert max(cleaned) < len(huge["content"]) and max(tokenized) < 1000
    assert report["sample_sizes"]["not_tokenized_too_long"] == {"title": 0, "content": 1}
    assert report["lengths"]["content"]["chars"]["max"] == len(huge["content"])  # measured whole
    assert report["lengths"]["content"]["words"]["max"] == 100_000
    assert report["lengths"]["content"]["tokens"]["count"] == 6  # SMALL's descriptions
    assert report["funnel"] == prepare(data_config, progress=False)["steps"]
    assert {item["filter"]: item["dropped"] for item in report["filters"]}["content_too_long"] == 1


@pytest.mark.skipif(not REAL_RECORDS.exists(), reason="real_trn_dev.jsonl is not available")
def test_real_records(tmp_path, data_config, packaged_tokenizer):
    data_config.raw_path = str(REAL_RECORDS)
    cfg = config_for(data_config, tmp_path, token_sample_size=700)
    analysis = analyse(cfg, progress=False, tokenizer=packaged_tokenizer)
    report = analysis.report
    assert report["records"]["records_parsed"] == 700 and report["records"]["bad_input"] == 0
    assert report["records"]["empty_content"] == 7  # the README's facts about these records
    quality = report["quality"]
    assert 0.1 < quality["html_entities"]["share"] < 0.35 and 0.1 < quality["scraping_boilerplate"]["share"] < 0.35
    assert quality["non_english"]["share"] < 0.05 and quality["non_ascii"]["records"] == 0
    assert report["funnel"] == prepare(data_config, progress=False)["steps"]
    assert "recommended" in report["max_length"]
    write_report(analysis, cfg.analysis.output_dir)


def test_cli_writes_the_report(tmp_path):
    out = tmp_path / "analysis"
    result = run_script("data_analysis.py", "--no-progress", "--set", f"analysis.output_dir={out}",
                        "--set", "analysis.token_sample_size=0", "--set", "data.workers=1")
    assert result.returncode == 0, result.stderr
    assert "data_analysis" in result.stdout and "recommended max_length" not in result.stdout
    assert (out / REPORT_MD).exists() and not (out / PLOTS["tokens"]).exists()


@pytest.mark.parametrize("args, message", [
    (["--data", "missing.json"], "no such file"),
    (["--set", "analysis.max_length_coverage=1.5"], "max_length_coverage must be in (0, 1]"),
])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, args, message):
    result = run_script("data_analysis.py", "--no-progress", *args, "--set", f"analysis.output_dir={tmp_path}")
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_text_from_the_data_is_shown_in_the_markdown_reports_not_obeyed():
    """A title or answer holding HTML, a link or emphasis is shown as written: reports are read in viewers that
    render Markdown and HTML (the red team's `<img onerror=...>` title reached evaluation_report.md)."""
    from product_qa.reporting import markdown_table, markdown_text
    title = "<img src=x onerror=alert(1)> [free](http://e.example) *now* `x` a_b \\[back\\](http://e.example)"
    shown = markdown_text(title)
    assert "<" not in shown and "[free](" not in shown and "`x`" not in shown and "*now*" not in shown
    assert "\\\\\\[back\\\\\\]" in shown  # a backslash of the text's own cannot undo the escape
    assert re.sub(r"\\(.)", r"\1", shown.replace("&lt;", "<")) == title  # nothing lost: only escaped
    row = markdown_table(["issue", "records"], [["HTML tags (<br> …) | pipes", "**17**"]])[2]
    assert row == "| HTML tags (&lt;br> …) \\| pipes | **17** |"  # the code's own bold stays


def test_a_parquet_catalog_with_mapped_columns_is_analysed_as_its_json_lines(tmp_path, data_config):
    import pyarrow as pa
    import pyarrow.parquet as pq
    data_config.raw_path = str(write_jsonl(tmp_path / "trn.json", SMALL))
    expected = analyse(config_for(data_config, tmp_path), progress=False).report
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.table({"sku": [r["uid"] for r in SMALL], "name": [r["title"] for r in SMALL],
                             "description": [r["content"] for r in SMALL]}), path)
    data_config.raw_path, data_config.uid_field, data_config.title_field, data_config.content_field = (
        str(path), "sku", "name", "description")
    report = analyse(config_for(data_config, tmp_path), progress=False).report
    assert report["records"] == expected["records"] and report["duplicates"] == expected["duplicates"]
    assert report["funnel"] == expected["funnel"] and report["lengths"] == expected["lengths"]
