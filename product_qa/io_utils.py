"""Atomic file output: write to a temporary file beside the target, then rename, so a run killed midway
leaves the previous outputs intact and never a half-written file."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import orjson

from product_qa.errors import UserError

TEMP_MARK = ".tmp-"


def temp_path_for(path: Path) -> Path:
    return path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")


@contextmanager
def atomic_outputs(paths: dict[str, Path]) -> Iterator[dict[str, IO[bytes]]]:
    """Open temp files for several outputs; on success rename them all into place, on error remove them."""
    temps = {name: temp_path_for(path) for name, path in paths.items()}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    handles = {name: open(temp, "wb") for name, temp in temps.items()}
    try:
        yield handles
        for handle in handles.values():
            handle.close()
        for name, temp in temps.items():
            os.replace(temp, paths[name])
    finally:
        for name, temp in temps.items():
            handles[name].close()
            temp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj: object) -> None:
    with atomic_outputs({"json": path}) as handles:
        handles["json"].write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def prepare_output_dir(path: str | Path) -> Path:
    """A stage's output directory, created if needed and cleared of temp files left by killed runs."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the output directory ({err.strerror})") from None
    remove_stale_temps(out)
    return out


def remove_stale_temps(directory: Path) -> None:
    """Delete temp files left by runs that were killed before they could clean up."""
    if not directory.is_dir():
        return
    for leftover in directory.glob(f"*{TEMP_MARK}*"):
        pid = leftover.name.rpartition(TEMP_MARK)[2].split("-")[0]  # name.tmp-PID or name.tmp-PID-suffix
        if pid.isdigit() and not _process_alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
