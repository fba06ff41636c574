"""User-facing errors: one clear line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import os
import select
import signal
import sys
from collections.abc import Callable

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input or configuration that the user can fix; its message is the whole story."""


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a script's main function, turning a UserError into one line and exit code 2."""
    try:
        code = main()
    except UserError as err:
        from product_qa.reporting import terminal_text  # here: reporting imports io_utils, which imports this module

        print(f"error: {terminal_text(str(err))}", file=sys.stderr)  # it may quote a title, a uid, a path
        sys.exit(EXIT_USAGE)
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
    sys.exit(code or 0)


def _stdout_reader_gone() -> bool:
    """stdout is a pipe whose reader has closed it (POSIX reports an error condition on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return bool(poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no stdout: take it for the broken one
        return True
