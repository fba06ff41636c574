"""The Makefile says in one line which Python it needs, before creating a venv or running pip."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

# A Python that reports itself as 3.10 to the code it runs with -c (what the Makefile's check runs).
OLD_PYTHON = f"""#!{sys.executable}
import sys, types
fake = types.ModuleType("sys")
fake.__dict__.update(vars(sys))
fake.version_info = (3, 10, 12, "final", 0)
fake.executable = __file__
sys.modules["sys"] = fake
exec(sys.argv[2]) if sys.argv[1:2] == ["-c"] else sys.exit("only -c is supported")
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_on_an_old_python_says_what_is_needed_in_one_line(tmp_path: Path):
    python = tmp_path / "python3.10"
    python.write_text(OLD_PYTHON)
    python.chmod(0o755)
    venv = tmp_path / "venv"
    result = subprocess.run(["make", "-f", str(REPO / "Makefile"), f"PYTHON={python}", f"VENV={venv}",
                             f"{venv}/.installed"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]  # make's own
    assert said == [f"Python 3.11 or newer is needed, {python} is 3.10: run make PYTHON=python3.11"]
    assert not venv.exists()  # nothing was created before the check


def test_the_check_lets_this_python_through():
    makefile = (REPO / "Makefile").read_text()
    check = makefile.split("PYTHON_CHECK := ", 1)[1].split("\n\n", 1)[0].replace("\\\n\t", "")
    assert subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0
