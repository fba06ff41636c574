"""The benchmarks are run by hand with arguments like the stages': a wrong one is one clear line, exit 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("args, message", [
    (["bench_generate", "--batch-sizes", "1,0"], "argument --batch-sizes: 0 is less than 1"),
    (["bench_generate", "--questions", "abc"], "argument --questions: 'abc' is not a whole number"),
    (["bench_analysis", "--records", "-5"], "argument --records: -5 is less than 1"),
    (["bench_train", "--set", "train.batch_size=0"], "error: train.batch_size must be at least 1, got 0"),
    (["bench_knowledge", "--set", "foo.bar=1"], "error: --set 'foo.bar=1': unknown section 'foo'"),
    (["bench_catalog", "--records", "0"], "argument --records: 0 is less than 1"),
    (["bench_formats", "--small-records", "0"], "argument --small-records: 0 is less than 1"),
    (["bench_export", "--quant", "q4_k"], "--quant 'q4_k': choose among f32, f16, bf16, q8_0"),
])
def test_a_wrong_benchmark_argument_is_one_line_not_a_traceback(args, message):
    """The red team's tracebacks (ValueError, ZeroDivisionError, KeyError, UserError) before any work."""
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{args[0]}", *args[1:]], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message in result.stderr.strip().splitlines()[-1]


def test_bench_forms_tells_what_the_index_did_with_each_question(tmp_path):
    """Right, asked back, suggested, declined, wrong; and a question whose name another product bears word for
    word ("names several") is counted apart: no index can tell which one was meant."""
    from collections import Counter

    from benchmarks.bench_forms import ask_forms, right_share
    from config import RagConfig
    from product_qa.answering.retrieval import ProductIndex
    titles = {"d": "Forgotten Kingdom (DVD)", "n": "Forgotten Kingdom: A Novel",
              "h": "Home Island by The Kingdoms [Audio CD]", "s": "Silent River"}
    index = ProductIndex.build([{"uid": uid, "title": title, "answer": f"About {title}."}
                                for uid, title in titles.items()], RagConfig(index_dir=str(tmp_path)))
    tally = ask_forms(index, [
        ("What do you know about Forgotten Kingdom?", "d", titles["d"], "no_qualifier"),  # two short forms
        ("What do you know about Silent River?", "s", titles["s"], "exact"),
        ("What do you know about Home Island?", "h", titles["h"], "first_words"),  # the closest titles named
        ("What is the capital of France?", "s", titles["s"], "wrapped"),
    ])
    assert tally == {"no_qualifier": Counter(questions=1, asked_back=1, several=1),
                     "exact": Counter(questions=1, right=1), "first_words": Counter(questions=1, suggested=1),
                     "wrapped": Counter(questions=1, declined=1)}
    assert right_share(tally["no_qualifier"], "no_qualifier") == 1.0  # the one question names several products
    assert right_share(tally["first_words"], "first_words") == 1.0  # its title was named
    # a product outside the index that bears an indexed product's title is that product, to the index
    assert ask_forms(index, [("What do you know about Silent River?", None, None, "exact")]) == {
        "exact": Counter(questions=1, wrong=1, several=1)}
