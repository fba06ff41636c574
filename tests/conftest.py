import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_RECORDS = REPO.parent / "shared" / "data" / "real_trn_dev.jsonl"


def write_jsonl(path: Path, records, *, compress: bool = False) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def run_script(script: str, *args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def data_config(tmp_path):
    """A DataConfig writing under tmp_path, one process, keeping every record by default."""
    from config import DataConfig
    return DataConfig(output_dir=str(tmp_path / "out"), workers=1, min_content_chars=10)
