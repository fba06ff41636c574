"""Outputs that belong together are replaced together: the writer is killed (SIGKILL) at every rename it makes
and a reader then finds the old set or the new one, never a mix; the next run cleans up and completes."""
import errno
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config import Config, TrainConfig
from conftest import REPO, RUN_SCRIPT_AS_MAIN, cli_overrides, run_script, tiny_run_overrides, tiny_settings
from product_qa.io_utils import TEMP_MARK, recover_directory
from product_qa.runs import find_run

# Runs a script with os.rename, os.replace and the directory exchange counted; at call `kill_at` whose
# destination matches the regular expression `watched`, the process kills itself (a kill -9 at exactly that
# point). exchange=off stands for a file system without renameat2's exchange, where the swap is two renames.
KILLER = """
import os, re, signal
import product_qa.io_utils as io_utils
kill_at, watched = int(os.environ["DRIVER_KILL_AT"]), os.environ["DRIVER_WATCHED"]
exchange = os.environ["DRIVER_EXCHANGE"] == "on"
calls = 0
def counted(real):
    def call(source, destination, *args, **kwargs):
        global calls
        if re.match(watched, os.path.abspath(os.fspath(destination))):
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(source, destination, *args, **kwargs)
    return call
os.rename, os.replace = counted(os.rename), counted(os.replace)
io_utils._exchange = counted(io_utils._exchange) if exchange else (lambda first, second: False)
"""


def run_killed(kill_at: int, watched: str, exchange: str, script: str, *args: str) -> subprocess.CompletedProcess:
    return run_script(script, *args, driver=KILLER, timeout=600,
                      env={"DRIVER_KILL_AT": str(kill_at), "DRIVER_WATCHED": str(watched), "DRIVER_EXCHANGE": exchange})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def kill_at_every_rename(watched: str, exchange: str, script: str, args: list[str], check) -> int:
    """Kill the writer at its 1st, 2nd, ... watched rename until it gets through; `check` reads the set after
    each kill. Returns the number of renames it was killed at."""
    for kill_at in range(1, 200):
        result = run_killed(kill_at, watched, exchange, script, *args)
        if result.returncode == 0:
            return kill_at - 1
        assert result.returncode == -9, result.stderr[-3000:]
        check()
    raise AssertionError("the writer never finished")


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(name) and p.name != name)


@pytest.mark.parametrize("exchange", ["on", "off"])
def test_prepared_splits_and_report_are_replaced_as_one_set(tmp_path, raw_sample, exchange):
    out = tmp_path / "data"
    def args(records: int) -> list[str]:
        return ["--no-progress", "--data", str(raw_sample), *cli_overrides(
            [f"data.output_dir={out}", "data.workers=1", f"data.max_records={records}"])]

    sets = {}
    for records in (300, 200):  # the old set, then (for reference) the new one
        assert run_script("prepare_data.py", *args(records)).returncode == 0
        sets[records] = snapshot(out)
    old, new = sets[300], sets[200]
    splits = [name for name in old if name.endswith(".jsonl")]
    assert splits and all(old[name] != new[name] for name in splits)

    def reader_sees_one_set():
        if exchange == "off" and not out.exists():  # killed between the two renames: every stage that reads the
            recover_directory(out)                  # splits runs prepare() first, which puts the old set back
        now = snapshot(out)
        report = json.loads(now["prep_report.json"])
        whole = next(s for s in (old, new) if json.loads(s["prep_report.json"])["fingerprint"] == report["fingerprint"])
        assert {name: now[name] for name in splits} == {name: whole[name] for name in splits}
        assert set(now) == set(whole)

    # back to the old set, then the new one is written with a kill at each rename
    assert run_script("prepare_data.py", *args(300)).returncode == 0
    renames = kill_at_every_rename(re.escape(str(out)), exchange, "prepare_data.py", args(200), reader_sees_one_set)
    assert renames >= 5  # three splits and the report inside the new set, then the swap (two renames without exchange)
    assert {n: b for n, b in snapshot(out).items() if n != "prep_report.json"} == {
        n: b for n, b in new.items() if n != "prep_report.json"}
    assert leftovers(tmp_path, "data") == []  # what the kills left was cleaned up by the runs after them


# Runs a script that kills itself (SIGKILL) when it calls the function named `module.function`.
KILLED_AT_CALL = """
import importlib, os, signal
module, function = os.environ["DRIVER_KILLED_AT"].rsplit(".", 1)
setattr(importlib.import_module(module), function, lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_what_a_killed_preparation_spooled_is_removed_by_the_next_run_even_when_it_has_nothing_to_do(
        tmp_path, raw_sample):
    """Killed once its records were spooled (on the real file, tens of MB), a preparation left the spool behind
    for good: the next run found its outputs up to date and returned before any clean-up."""
    out = tmp_path / "data"

    def args(records: int) -> list[str]:
        return ["--no-progress", "--data", str(raw_sample), *cli_overrides(
            [f"data.output_dir={out}", "data.workers=1", f"data.max_records={records}"])]

    assert run_script("prepare_data.py", *args(300)).returncode == 0
    kept = snapshot(out)
    killed = run_script("prepare_data.py", *args(200), driver=KILLED_AT_CALL,
                        env={"DRIVER_KILLED_AT": "product_qa.data.preparation._write_examples"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert any("spool" in p.name for p in tmp_path.rglob("*"))  # killed after spooling, before writing the splits
    again = run_script("prepare_data.py", *args(300))
    assert again.returncode == 0, again.stderr[-2000:]
    assert snapshot(out) == kept  # up to date: nothing redone
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [".data.lock", "data", *sorted(
        f"data/{name}" for name in kept)]  # and the data folder's lock


def test_analysis_report_and_plots_are_replaced_as_one_set(tmp_path, raw_sample):
    out = tmp_path / "analysis"
    def args(records: int) -> list[str]:
        return ["--no-progress", "--data", str(raw_sample), *cli_overrides(
            [f"analysis.output_dir={out}", "data.workers=1", f"data.max_records={records}",
             f"data.output_dir={tmp_path / 'data'}"])]

    def run(records: int) -> dict[str, bytes]:
        result = run_script("data_analysis.py", *args(records))
        assert result.returncode == 0, result.stderr[-2000:]
        return snapshot(out)

    sets = {300: run(300), 200: run(200)}
    assert sets[300].keys() == sets[200].keys()
    run(300)

    def timeless(files: dict[str, bytes]) -> dict[str, bytes]:  # the report states its run's seconds
        return {name: re.sub(rb"\d+\.\d s", b"", data) if name == "report.md" else data
                for name, data in files.items() if name != "data_analysis_report.json"}

    def reader_sees_one_set():
        now = snapshot(out)
        records = json.loads(now["data_analysis_report.json"])["config"]["data"]["max_records"]
        assert timeless(now) == timeless(sets[records])

    renames = kill_at_every_rename(re.escape(str(out)), "on", "data_analysis.py", args(200), reader_sees_one_set)
    assert renames >= len(sets[200])  # every file of the set, then the swap
    assert timeless(snapshot(out)) == timeless(sets[200]) and leftovers(tmp_path, "analysis") == []


def test_a_run_retrained_under_its_name_is_replaced_as_a_whole(tmp_path, tiny_model_dir, raw_sample):
    # the swap without exchange (two renames) is the one the splits' test kills between
    runs = tmp_path / "runs"
    def args(seed: int) -> list[str]:
        return ["--no-progress", "--run-name", "same", *cli_overrides(tiny_run_overrides(
            tiny_model_dir, raw_sample, tmp_path, **{"train.max_steps": 2, "train.seed": seed}))]

    def train(seed: int) -> dict[str, bytes]:
        result = run_script("fine_tuning_project.py", *args(seed), timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return snapshot(runs / "same")

    served = ("merged/model.safetensors", "config.json", "training_report.json")
    old = train(1)

    def reader_sees_the_old_run():  # the new run is not finished before its swap, so the old one stays whole
        assert find_run(Config(train=TrainConfig(output_dir=str(runs))), "same") == runs / "same"
        now = snapshot(runs / "same")
        assert all(now[name] == old[name] for name in served)

    # killed at each file written at the top of the run (into its work directory NAME.unfinished, or straight into
    # NAME as the code before whole-run swaps did: the test shows that mix too), the report among them, and at the swap
    top_files = re.escape(str(runs / "same")) + r"(\.unfinished)?(/[^/]+)?$"
    kills = kill_at_every_rename(top_files, "on", "fine_tuning_project.py", args(2), reader_sees_the_old_run)
    assert kills >= 4  # baseline.json, the loss plot, config.json, training_report.json, then the swap
    now = snapshot(runs / "same")
    assert json.loads(now["config.json"])["train"]["seed"] == 2 and now["merged/model.safetensors"] != \
        old["merged/model.safetensors"]
    assert leftovers(runs, "same") == []


# Runs a script that kills itself (SIGKILL) just after the exchange of the run's swap: the new run is in place,
# and what the exchange moved out (the previous run, checkpoints included) is not removed yet.
KILLED_AFTER_EXCHANGE = """
import os, signal
import product_qa.io_utils as io_utils
_exchange = io_utils._exchange
def _exchanged_then_killed(first, second):
    if _exchange(first, second):
        os.kill(os.getpid(), signal.SIGKILL)
    return False
io_utils._exchange = _exchanged_then_killed
"""


def test_a_kill_just_after_the_swap_leaves_nothing_that_resume_takes_for_the_new_run(tmp_path, tiny_model_dir,
                                                                                      raw_sample):
    """The red team's strace kill: the swap left the previous run in NAME.unfinished, and --resume continued it
    and put it in the place of the newer run."""
    runs = tmp_path / "runs"
    def args(seed: int, *extra: str) -> list[str]:
        return ["--no-progress", "--run-name", "same", *extra, *cli_overrides(tiny_run_overrides(
            tiny_model_dir, raw_sample, tmp_path, **{"train.max_steps": 2, "train.seed": seed}))]

    first = run_script("fine_tuning_project.py", *args(1), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    killed = run_script("fine_tuning_project.py", *args(2), driver=KILLED_AFTER_EXCHANGE, timeout=600)
    assert killed.returncode == -9, "no exchange to kill after: " + killed.stderr[-3000:]
    newer = snapshot(runs / "same")
    assert json.loads(newer["config.json"])["train"]["seed"] == 2
    resumed = run_script("fine_tuning_project.py", *args(2, "--resume"), timeout=600)
    assert resumed.returncode == 2 and "--resume: no checkpoint" in resumed.stderr, resumed.stderr[-3000:]
    assert snapshot(runs / "same") == newer
    assert leftovers(runs, "same") == []  # the previous run the kill left aside is gone


# Runs a script that stops when it calls `module.function` until the file DRIVER_GO exists (it makes the file
# DRIVER_PAUSED when it stops): another process can then be started at exactly that point.
PAUSED_AT_CALL = """
import importlib, os, time
_module, _name = os.environ["DRIVER_PAUSED_AT"].rsplit(".", 1)
_function = getattr(importlib.import_module(_module), _name)
def _paused(*args, **kwargs):
    open(os.environ["DRIVER_PAUSED"], "w").close()
    while not os.path.exists(os.environ["DRIVER_GO"]):
        time.sleep(0.05)
    return _function(*args, **kwargs)
setattr(importlib.import_module(_module), _name, _paused)
"""


def test_a_second_training_of_a_run_stops_in_one_line_and_a_preparation_waits_for_the_data_being_read(
        tmp_path, tiny_model_dir, raw_sample):
    """The red team's two trainings of one run name at once: the second one cleared the first one's work
    directory, and the finished run held files of both. And `prepare_data.py --force` while a training read the
    data left views of the old catalog under the new data's name."""
    from product_qa.data.synthetic import generate_records, write_records
    runs, paused, go, log = tmp_path / "runs", tmp_path / "paused", tmp_path / "go", tmp_path / "first.log"
    def args(seed: int) -> list[str]:
        return ["--no-progress", "--run-name", "same", *cli_overrides(tiny_run_overrides(
            tiny_model_dir, raw_sample, tmp_path, **{"train.max_steps": 2, "train.seed": seed}))]

    # the first training stops once it has read its catalog, as it writes the views: its work directory is there
    with log.open("w") as first_log:
        first = subprocess.Popen(
            [sys.executable, "-c", PAUSED_AT_CALL + RUN_SCRIPT_AS_MAIN, str(REPO / "fine_tuning_project.py"),
             *args(1)], cwd=REPO, env={**os.environ, "DRIVER_PAUSED_AT": "product_qa.training.workflow.views_file",
                                       "DRIVER_PAUSED": str(paused), "DRIVER_GO": str(go)},
            stdout=subprocess.DEVNULL, stderr=first_log)
    preparing = None
    try:
        while not paused.exists():
            assert first.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        second = run_script("fine_tuning_project.py", *args(2), timeout=600)
        assert second.returncode == 2, second.stderr[-3000:]
        assert second.stderr.strip().splitlines() == [
            f"error: {runs / 'same'}: another training of run 'same' is in progress; wait for it to end, or train "
            "under another --run-name"]
        other = tmp_path / "other.json"
        write_records(str(other), generate_records(300, seed=6))
        preparing = subprocess.Popen(
            [sys.executable, str(REPO / "prepare_data.py"), "--no-progress", "--force", "--data", str(other),
             "--set", f"data.output_dir={tmp_path / 'data'}", "--set", "data.workers=1"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert preparing.stderr.readline().startswith(f"waiting for another process that prepares or reads "
                                                      f"{tmp_path / 'data'}")
        assert preparing.poll() is None  # it waits for the training to be done with the data
    finally:
        go.touch()
        first.wait()
        if preparing is not None:
            preparing.wait()
    assert first.returncode == 0, log.read_text()[-3000:]
    assert preparing.returncode == 0, preparing.stderr.read()[-3000:]
    report = json.loads((runs / "same" / "training_report.json").read_text())
    assert report["train_examples"] > 0 and json.loads((runs / "same" / "config.json").read_text())["train"][
        "seed"] == 1
    assert leftovers(runs, "same") == []


def test_a_read_only_output_directory_is_refused_in_one_line_and_left_as_it_was(tmp_path, tiny_model_dir, raw_sample):
    """Its write bit is what counts (these tests may run as root, who could write there anyway): the stage stops
    before any work, and the directory is neither written into nor swapped away. The folders are empty, so no
    other guard (a folder holding files the stage did not write) refuses them first."""
    data, analysis, runs = tmp_path / "data", tmp_path / "analysis", tmp_path / "runs"
    settings = tiny_run_overrides(tiny_model_dir, raw_sample, tmp_path, **{"train.max_steps": 1})
    stages = {"prepare_data.py": (data, []), "data_analysis.py": (analysis, [f"analysis.output_dir={analysis}"]),
              "fine_tuning_project.py": (runs, [])}
    for script, (folder, extra) in stages.items():
        folder.mkdir(exist_ok=True)
        inode = folder.stat().st_ino
        folder.chmod(0o555)
        try:
            result = run_script(script, "--no-progress", *cli_overrides([*settings, *extra]), timeout=600)
            assert result.returncode == 2, result.stderr[-2000:]
            assert result.stderr.strip().splitlines() == [
                f"error: {folder}: the output directory is read-only; make it writable or set another one"]
            assert folder.stat().st_ino == inode and snapshot(folder) == {}
            assert leftovers(tmp_path, folder.name) == []
        finally:
            folder.chmod(0o755)


WRITE_SET = """
import sys
from pathlib import Path
from product_qa.io_utils import atomic_outputs
folder, text = Path(sys.argv[1]), sys.argv[2]
with atomic_outputs({n: folder / n for n in ("report.json", "report.md", "report.png")}) as handles:
    for handle in handles.values():
        handle.write(text.encode())
"""


def test_files_written_together_are_never_left_mixed_by_a_kill(tmp_path):
    """The evaluation's three files are renamed into place one by one (the red team killed it between two
    renames: the new report beside the old plot); the renames are journaled first, and the next writer or
    reader of the folder finishes them."""
    from product_qa.io_utils import finish_renames
    script = tmp_path / "write_set.py"
    script.write_text(WRITE_SET)
    folder = tmp_path / "evaluation"
    folder.mkdir()
    names = ("report.json", "report.md", "report.png")

    def contents() -> set[str]:
        return {(folder / name).read_text() for name in names}

    assert run_script(str(script), str(folder), "old").returncode == 0 and contents() == {"old"}
    for kill_at in (1, 2, 3):
        result = run_killed(kill_at, re.escape(str(folder)) + r"/report\.", "on", str(script), str(folder), "new")
        assert result.returncode == -9, result.stderr[-2000:]
        seen_before = contents()
        finish_renames(folder)
        assert contents() == {"new"}, (kill_at, seen_before)
        assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no journal or temp file left
        assert run_script(str(script), str(folder), "old").returncode == 0 and contents() == {"old"}


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
    """A setting naming a folder under a file (or /proc) ended in a traceback from mkdir (rag.index_dir, the
    RAG index cache, wrote through here)."""
    from product_qa.errors import UserError
    from product_qa.io_utils import write_json_atomic
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match=r"a-file/index: cannot create the folder \(Not a directory\)"):
        write_json_atomic(tmp_path / "a-file" / "index" / "titles.json", {})


def test_an_error_between_renames_and_an_old_journal_never_leave_a_mixed_or_reverted_set(tmp_path, monkeypatch):
    """The review's two cases: an error (Ctrl-C) between two renames left the set's other temp files deleted, so
    the journal could not finish it; and a dead writer's journal replayed after a newer write put its older
    files back over the new ones."""
    import os

    import product_qa.io_utils as io_utils
    folder = tmp_path / "evaluation"
    names = ("report.json", "report.md", "report.png")

    def write(text: str) -> None:
        with io_utils.atomic_outputs({n: folder / n for n in names}) as handles:
            for handle in handles.values():
                handle.write(text.encode())

    def contents() -> set[str]:
        return {(folder / name).read_text() for name in names}

    write("old")
    real_replace, calls = os.replace, []

    def interrupted(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(source, destination)

    monkeypatch.setattr(io_utils.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write("new")
    monkeypatch.setattr(io_utils.os, "replace", real_replace)
    monkeypatch.setattr(io_utils, "_process_alive", lambda pid: False)  # as after this process has ended
    io_utils.finish_renames(folder)
    assert contents() == {"new"} and sorted(p.name for p in folder.iterdir()) == sorted(names)

    dead = 999_999  # a writer killed with its journal and temp files on disk
    for name in names:
        (folder / f"{name}{io_utils.TEMP_MARK}{dead}").write_text("v1")
    (folder / f"sets{io_utils.TEMP_MARK}{dead}{io_utils.RENAMES_SUFFIX}").write_text(
        json.dumps([[f"{name}{io_utils.TEMP_MARK}{dead}", name] for name in names]))
    write("v2")  # finishes the dead writer's set first, then puts its own over it
    io_utils.finish_renames(folder)
    assert contents() == {"v2"} and sorted(p.name for p in folder.iterdir()) == sorted(names)
    for name in names:  # a journal replayed late (its pid reused meanwhile) never reverts a newer file
        (folder / f"{name}{io_utils.TEMP_MARK}{dead}").write_text("v1")
        os.utime(folder / f"{name}{io_utils.TEMP_MARK}{dead}", ns=(1, 1))
    (folder / f"sets{io_utils.TEMP_MARK}{dead}{io_utils.RENAMES_SUFFIX}").write_text(
        json.dumps([[f"{name}{io_utils.TEMP_MARK}{dead}", name] for name in names]))
    io_utils.finish_renames(folder)
    assert contents() == {"v2"}


def test_stale_temps_are_told_from_live_ones_without_signalling_any_process_as_on_windows(tmp_path, monkeypatch):
    """On Windows os.kill(pid, 0) terminates the process: a pid is only ever looked up (psutil.pid_exists, which
    asks OpenProcess there). On POSIX psutil itself sends signal 0, harmless there; here psutil's Windows lookup is
    stood in for by a read of the process table, and any os.kill fails the test."""
    import psutil

    from product_qa import io_utils

    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()  # its pid now names no process
    dead, alive = finished.pid, os.getpid()

    def no_signals(pid, sig):
        raise AssertionError(f"os.kill({pid}, {sig}) called: on Windows it would terminate process {pid}")

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(os, "kill", no_signals)
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: pid in psutil.pids())  # /proc listed, no signal sent
    folder = tmp_path / "data"
    folder.mkdir()
    for pid in (dead, alive):
        (folder / f"train.jsonl{TEMP_MARK}{pid}").write_text("partial")
        (tmp_path / f"data{TEMP_MARK}{pid}").mkdir()  # a half-built set beside the folder
    io_utils.remove_stale_temps(folder)
    recover_directory(folder)
    assert sorted(p.name for p in folder.iterdir()) == [f"train.jsonl{TEMP_MARK}{alive}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", f"data{TEMP_MARK}{alive}"]


# ------------------------------------------------------------------------------------------ full or read-only disks
# Runs a script on a disk that is full (or read-only) under DRIVER_FULL_UNDER: the files the atomic writers open
# there are created, but no byte reaches them (an OSError with DRIVER_ERRNO that names no file, as a write says it).
FULL_DISK = """
import os
import product_qa.io_utils as io_utils
code, under = int(os.environ["DRIVER_ERRNO"]), os.path.abspath(os.environ["DRIVER_FULL_UNDER"]) + os.sep
class FullDiskFile:
    def __init__(self, handle):
        self.handle = handle
    def write(self, data):
        raise OSError(code, os.strerror(code))
    def __getattr__(self, name):
        return getattr(self.handle, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.handle.close()
real_new_file = io_utils._new_file
def new_file(temp):
    handle = real_new_file(temp)
    return FullDiskFile(handle) if os.path.abspath(temp).startswith(under) else handle
io_utils._new_file = new_file
"""


def temp_files(root: Path) -> list[str]:
    return sorted(str(path) for path in root.rglob(f"*{TEMP_MARK}*"))


def test_a_full_or_read_only_disk_is_one_line_naming_the_folder_and_leaves_no_temp_file(tmp_path, tiny_model_dir,
                                                                                        raw_sample):
    """Preparation, training and the evaluation on a full disk, and training on a read-only (up-to-date) data
    folder: exit 2, one line naming the folder, no temp file left to fill the disk further, the previous outputs
    as they were (tracebacks before; the evaluation left three *.tmp-PID files)."""
    settings = tiny_settings(tiny_model_dir, raw_sample, tmp_path, **{"train.assistant_questions": 0})
    args = ["--no-progress", *cli_overrides(settings)]
    for script, extra in (("prepare_data.py", []), ("fine_tuning_project.py", []),
                          ("test_pipeline.py", ["--evaluate"])):
        done = run_script(script, *args, *extra, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    data, runs, evaluation = tmp_path / "data", tmp_path / "runs", tmp_path / "evaluation"
    finished = runs / "smollm2-lora"  # the run trained above (a failed training's work folder stays for --resume)
    for script, extra, full, code, named, kept, words in (
            ("prepare_data.py", ["--force"], tmp_path, errno.ENOSPC, data, data, "no space left on the device"),
            ("test_pipeline.py", ["--evaluate"], evaluation, errno.ENOSPC, evaluation, evaluation, "no space left"),
            ("fine_tuning_project.py", [], runs, errno.ENOSPC, runs, finished, "no space left"),
            # data up to date but read-only: the views of other settings cannot be written beside it
            ("fine_tuning_project.py", ["--set", "train.seed=7"], data, errno.EROFS, data, data,
             "a read-only file system")):
        before = snapshot(kept)
        result = run_script(script, *args, *extra, driver=FULL_DISK, timeout=900,
                            env={"DRIVER_FULL_UNDER": str(full), "DRIVER_ERRNO": str(code)})
        assert result.returncode == 2, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # after what it said
        assert len(errors) == 1 and errors[0].startswith(f"error: {named}") and words in errors[0], result.stderr
        assert result.stderr.strip().endswith(errors[0]) and "Traceback" not in result.stderr
        assert temp_files(tmp_path) == []
        after = snapshot(kept)
        assert after == before, (script, sorted(k for k in {*after, *before} if after.get(k) != before.get(k)))


def test_a_full_disk_inside_a_writer_removes_every_temp_file_and_keeps_the_old_files(tmp_path, monkeypatch):
    """Three files written together (the evaluation's json, md and png): the disk fills during the writes, so
    closing the temps fails too; every temp goes, the old files stay, and the error names the folder."""
    from product_qa import io_utils
    from product_qa.errors import disk_problem
    paths = {name: tmp_path / f"report.{name}" for name in ("json", "md", "png")}
    for path in paths.values():
        path.write_text("old")
    real_new_file = io_utils._new_file

    class FullDiskFile:
        def __init__(self, handle):
            self.handle, self.pending = handle, b""

        def write(self, data):  # buffered: the failure comes at the flush, as on a real full disk
            self.pending += data

        def flush(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self.handle.close()
            self.flush()

    monkeypatch.setattr(io_utils, "_new_file", lambda temp: FullDiskFile(real_new_file(temp)))
    with pytest.raises(OSError) as failed, io_utils.atomic_outputs(paths) as handles:
        for handle in handles.values():
            handle.write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md", "report.png"]
    assert all(path.read_text() == "old" for path in paths.values())
    line = disk_problem(failed.value)
    assert line.startswith(f"{tmp_path}: cannot write there (no space left on the device, ") and "MB free" in line


def test_a_full_or_read_only_disk_is_found_however_a_library_wraps_it(tmp_path):
    from product_qa.errors import disk_problem
    try:
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "views" / "train-x.jsonl"))
        except OSError as err:
            raise RuntimeError("An error occurred while generating the dataset") from err  # as datasets does
    except RuntimeError as wrapped:
        assert disk_problem(wrapped) == (f"{tmp_path / 'views'}: cannot write there (a read-only file system): set "
                                         "an output folder on a writable disk")
    said_in_words = Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")  # safetensors
    assert disk_problem(said_in_words).startswith("cannot write the outputs (no space left on the device)")
    assert disk_problem(OSError(errno.ENOENT, "No such file or directory", "x")) is None
    assert disk_problem(ValueError("bad")) is None
