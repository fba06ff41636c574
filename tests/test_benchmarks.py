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
])
def test_a_wrong_benchmark_argument_is_one_line_not_a_traceback(args, message):
    """The red team's tracebacks (ValueError, ZeroDivisionError, KeyError, UserError) before any work."""
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{args[0]}", *args[1:]], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message in result.stderr.strip().splitlines()[-1]
