"""Atomic output: write to a temporary file beside the target, then rename, so a run killed midway leaves the
previous outputs intact and never a half-written file; and for outputs that belong together (the splits and
their report, a run's weights, config and report, the analysis report and its plots), build the whole set in
a fresh sibling directory and swap it in at once (`replaced_directory`, `commit_directory`)."""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import orjson
import psutil

from product_qa.errors import DISK_ERRNOS, UserError

TEMP_MARK = ".tmp-"
OLD_MARK = ".old-"  # a replaced set, set aside for the moment of a swap where the two directories cannot trade


def temp_path_for(path: Path) -> Path:
    return path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")


RENAMES_SUFFIX = ".renames"  # the journal of a set of files being renamed into place


@contextmanager
def atomic_outputs(paths: dict[str, Path]) -> Iterator[dict[str, IO[bytes]]]:
    """Open temp files for several outputs; on success rename them all into place, on error remove them.
    Files of one folder are a set: the renames are journaled first, so that a kill between two of them is
    finished by the next writer or reader of the folder (finish_renames), never leaving old and new files mixed."""
    temps = {name: temp_path_for(path) for name, path in paths.items()}
    for path in paths.values():
        make_folder(path.parent)
    handles: dict[str, IO[bytes]] = {}
    journal = None
    try:
        for name, temp in temps.items():
            handles[name] = _new_file(temp)
        yield handles
        for handle in handles.values():
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename: a crash leaves the old file or the whole new one
            handle.close()
        journal = _journal(temps, paths)
        for name, temp in temps.items():
            os.replace(temp, paths[name])
        if journal:
            journal.unlink()
            journal = None
    except OSError as err:
        raise_naming_folder(err, next(iter(paths.values())).parent)
        raise
    finally:
        for name, temp in temps.items():
            if name in handles:
                with suppress(OSError):  # a full disk fails the flush of what is left: the temp goes all the same
                    handles[name].close()
            if journal is None:  # else an error between two renames: the journal and its files finish the set
                temp.unlink(missing_ok=True)


def raise_naming_folder(err: OSError, folder: Path, *, always: bool = False) -> None:
    """A full or read-only disk's error raised again naming `folder` where it names no file (a write to an open
    file says only "No space left on device"), or `always` (the file was one of a staging folder the user never
    set): the one line it becomes says where (errors.disk_problem)."""
    if err.errno in DISK_ERRNOS and (always or err.filename is None):
        raise OSError(err.errno, err.strerror, str(folder)) from err


def make_folder(folder: Path, what: str = "folder", fix: str = "") -> None:
    """mkdir -p, or one line when a setting names a folder that cannot be made (under /proc, under a file)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the {what} ({err.strerror or err}){fix}") from None


def _new_file(temp: Path) -> IO[bytes]:
    """A temp file created here and now: whatever sits at its name is removed (a link, not what it points to),
    and a link planted in between fails the create, so a write never lands outside the output's folder."""
    temp.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(temp, flags, 0o666), "wb")


def _journal(temps: dict[str, Path], paths: dict[str, Path]) -> Path | None:
    """folder/sets.tmp-PID.renames: the (temp, target) names of a set of files about to be renamed, on disk
    before the first rename. A kill while it is written leaves it unreadable: no rename happened yet."""
    folders = {path.parent for path in paths.values()}
    if len(paths) < 2 or len(folders) > 1:
        return None
    folder = folders.pop()
    finish_renames(folder)  # an older set left half renamed goes in first, never over this one later
    journal = folder / f"sets{TEMP_MARK}{os.getpid()}{RENAMES_SUFFIX}"
    try:
        with _new_file(journal) as handle:
            handle.write(orjson.dumps([[temps[name].name, path.name] for name, path in paths.items()]))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        journal.unlink(missing_ok=True)  # no rename happened yet: a half-written journal only takes space
        raise
    return journal


def finish_renames(directory: Path) -> None:
    """Complete the renames of a set whose writer was killed midway (its temp files were whole before the
    first rename), so the folder holds the new set whole."""
    for journal in directory.glob(f"*{TEMP_MARK}*{RENAMES_SUFFIX}"):
        pid = journal.name.rpartition(TEMP_MARK)[2].removesuffix(RENAMES_SUFFIX)
        if not _is_number(pid) or _process_alive(int(pid)):
            continue
        try:
            entries = orjson.loads(journal.read_bytes())
        except orjson.JSONDecodeError:  # killed while writing the journal: nothing was renamed
            entries = []
        for entry in entries if isinstance(entries, list) else []:
            # a journal names files of its own folder, each the temp file of its target by the same process
            if isinstance(entry, list) and len(entry) == 2 and all(isinstance(name, str) for name in entry):
                temp, target = entry
                plain = Path(target).name == target not in (".", "..")
                if plain and temp == f"{target}{TEMP_MARK}{pid}" and (directory / temp).is_file() and not (
                        _newer(directory / target, directory / temp)):  # a later writer's file is never reverted
                    os.replace(directory / temp, directory / target)
        journal.unlink(missing_ok=True)


def _newer(path: Path, than: Path) -> bool:
    return path.exists() and path.stat().st_mtime_ns > than.stat().st_mtime_ns


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def json_bytes(obj: object) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def read_json(path: Path, what: str) -> object:
    """A JSON file the pipeline wrote; a missing or damaged one ends the run in one line naming the file."""
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: no {what} here") from None
    except (OSError, orjson.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read the {what} ({str(err).splitlines()[0][:160]})") from None


def write_json_atomic(path: Path, obj: object) -> None:
    write_bytes_atomic(path, json_bytes(obj))


def write_bytes_atomic(path: Path, content: bytes) -> None:
    with atomic_outputs({"file": path}) as handles:
        handles["file"].write(content)


def prepare_output_dir(path: str | Path) -> Path:
    """A stage's output directory, created if needed and cleared of temp files left by killed runs."""
    out = Path(path)
    make_folder(out, "output directory")
    refuse_read_only(out)
    remove_stale_temps(out)
    return out


def refuse_read_only(directory: Path) -> None:
    """A directory the user made read-only is neither written into nor replaced, before any work starts. Its own
    write bit is read as well as access(): root may write anywhere, but a read-only folder says "keep this"."""
    if directory.is_dir() and not (directory.stat().st_mode & stat.S_IWUSR and os.access(directory, os.W_OK)):
        raise UserError(f"{directory}: the output directory is read-only; make it writable or set another one")


def remove_stale_temps(directory: Path) -> None:
    """Delete temp files left by runs that were killed before they could clean up."""
    if not directory.is_dir():
        return
    finish_renames(directory)
    for leftover in directory.glob(f"*{TEMP_MARK}*"):
        pid = leftover.name.rpartition(TEMP_MARK)[2].split("-")[0]  # name.tmp-PID or name.tmp-PID-suffix
        if _is_number(pid) and not _process_alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    """Whether process `pid` still runs. Never os.kill(pid, 0): on Windows any signal but CTRL_C/CTRL_BREAK
    terminates the process, so checking a stale temp file's pid would kill whatever program reused it."""
    return psutil.pid_exists(pid)


# ------------------------------------------------------------------------------------------ sets of outputs
def refuse_foreign_directory(target: Path, owner_file: str) -> None:
    """A directory a stage replaces whole must be its own: missing, empty, or holding `owner_file`."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: a file, not a folder; set an output directory (the stage writes a folder there)")
    if target.is_symlink() or (target.is_dir() and any(target.iterdir()) and not (target / owner_file).exists()):
        raise UserError(f"{target}: holds files this stage did not write (no {owner_file}); set an empty or "
                        "new output directory, the stage replaces the whole directory")


@contextmanager
def replaced_directory(target: Path, owner_file: str) -> Iterator[Path]:
    """A fresh, empty sibling of `target` to write a whole set of outputs into; on success it takes `target`'s
    place in one step (a reader sees the old set or the new one, never a mix), on error or a kill the old set
    stays and the half-built one is removed (now, or by the next run). `target` must be ours: missing, empty,
    or holding `owner_file` (what the set writes), so that a directory of the user's is never swapped away."""
    recover_directory(target)
    refuse_read_only(target)
    refuse_read_only(target.parent)
    refuse_foreign_directory(target, owner_file)
    staging = target.with_name(f"{target.name}{TEMP_MARK}{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    except OSError as err:
        raise UserError(f"{target.parent}: cannot write the output directory ({err.strerror})") from None
    try:
        yield staging
        commit_directory(staging, target)
    except OSError as err:
        raise_naming_folder(err, target, always=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def commit_directory(staging: Path, target: Path, unsynced: tuple[str, ...] = ()) -> None:
    """Put the fully written `staging` in the place of `target`: its files are flushed to disk first (all but
    the subfolders named in `unsynced`), then the two directories trade places in one rename (Linux) or, where
    they cannot, the old one is renamed aside and the new one in; the old set is then removed."""
    sync_tree(staging, unsynced)
    if not target.exists():
        os.rename(staging, target)
    elif _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # it holds the old set now
    else:
        aside = target.with_name(f"{target.name}{OLD_MARK}{os.getpid()}")
        os.rename(target, aside)
        os.rename(staging, target)  # a kill between the two renames: recover_directory puts the old set back
        shutil.rmtree(aside, ignore_errors=True)
    _sync_dir(target.parent)


def recover_directory(target: Path) -> None:
    """Undo what a killed swap or build left beside `target`: an old set renamed aside comes back if the new one
    never arrived (else it is removed), and half-built sets of dead processes are removed."""
    parent = target.parent
    if not parent.is_dir():
        return
    for aside in parent.glob(f"{target.name}{OLD_MARK}*"):
        pid = aside.name.rpartition(OLD_MARK)[2]
        if _is_number(pid) and not _process_alive(int(pid)):
            if target.exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.rename(aside, target)
    for staging in parent.glob(f"{target.name}{TEMP_MARK}*"):
        pid = staging.name.rpartition(TEMP_MARK)[2]
        if _is_number(pid) and not _process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two directories in one step (renameat2 RENAME_EXCHANGE, Linux 3.15+); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without it
        return False
    raise OSError(code, os.strerror(code), str(second))


def sync_tree(root: Path, skipped: tuple[str, ...]) -> None:
    """Flush every file under `root` to disk, but those of the subfolders named in `skipped`."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in skipped]
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        _sync_dir(Path(folder))


def _sync_dir(folder: Path) -> None:
    if sys.platform == "win32":  # directories cannot be opened there; renames are durable without it
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
