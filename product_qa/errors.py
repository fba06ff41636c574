"""User-facing errors: one clear line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import sys
from collections.abc import Callable

EXIT_USAGE = 2
# A full or read-only disk: no retry helps, the user frees space or picks another folder. What each means, in words.
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "a read-only file system"}


class UserError(Exception):
    """Bad input or configuration that the user can fix; its message is the whole story."""


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a script's main function, turning a UserError (and a full or read-only disk) into one line and exit
    code 2."""
    try:
        code = main()
    except UserError as err:
        _stop(str(err))
    except KeyboardInterrupt:
        # A generation thread may still be inside torch: a normal interpreter exit would tear it down mid-call
        # and abort (exit 134), which a second Ctrl-C during the clean-up used to trigger. Leave at once instead.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe: a real error, with its traceback
        # The reader of stdout left (`ask.py ... | head -2`): nobody is listening, so stop at once and quietly, as
        # for Ctrl-C (a generation thread may still be inside torch), with the shell's code for SIGPIPE.
        os._exit(141)  # 128 + SIGPIPE
    except Exception as err:
        line = disk_problem(err)
        if line is None:
            raise
        _stop(line)
    sys.exit(code or 0)


def _stop(message: str) -> None:
    from product_qa.reporting import terminal_text  # here: reporting imports io_utils, which imports this module

    print(f"error: {terminal_text(message)}", file=sys.stderr)  # it may quote a title, a uid, a path
    sys.exit(EXIT_USAGE)


def disk_problem(err: BaseException) -> str | None:
    """One line for a full or read-only disk anywhere in the error's chain (a library may wrap the OSError, as
    datasets' DatasetGenerationError does, or say it in words, as safetensors does), naming the folder and the space
    left there; None for any other error."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        code = cause.errno if isinstance(cause, OSError) and cause.errno in DISK_ERRNOS else next(
            (code for code in DISK_ERRNOS if os.strerror(code) in str(cause)), None)
        if code is not None:
            filename = cause.filename if isinstance(cause, OSError) else None
            return _disk_line(code, filename)
        cause = cause.__cause__ or cause.__context__
    return None


def _disk_line(code: int, filename: str | bytes | int | None) -> str:
    path = os.fsdecode(filename) if isinstance(filename, (str, bytes)) else None
    folder = path if path is None or os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    where = f"{folder}: cannot write there" if folder else "cannot write the outputs"
    if code == errno.EROFS:
        return f"{where} ({DISK_ERRNOS[code]}): set an output folder on a writable disk"
    try:
        free = f", {shutil.disk_usage(folder).free / 2**20:,.1f} MB free" if folder else ""
    except OSError:
        free = ""
    return (f"{where} ({DISK_ERRNOS[code]}{free}): free some space or set an output folder on another disk; the "
            "previous outputs are kept")


def _stdout_reader_gone() -> bool:
    """stdout is a pipe whose reader has closed it (POSIX reports an error condition on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return bool(poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no stdout: take it for the broken one
        return True
