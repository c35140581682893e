"""A step process whose run process died stops at once, instead of calling providers for a run
nobody will ever record.

Dagster's multiprocess executor starts each step as a child of the run's process (`spawn`) or
forked for it by a forkserver (`forkserver`, settings.step_start_method). When the run's
process is killed with SIGKILL nothing tells the steps: they live on, keep calling providers and
keep writing outputs (issue 20 item 4 counted 41 requests after such a kill; this project's
suite counted 216 at 300 ms latency). `exit_with_parent()` watches the run's process from a
daemon thread: multiprocessing hands every child a pipe (its parent's sentinel) whose other end
only the run's process holds, for a forked step too, so it reads end-of-file the moment that
process is gone, however it died; the step then ends with `os._exit`, mid-request if need be
(answers already received are in the response cache: each is stored the moment it arrives). A
changed parent pid is checked too, in case the sentinel is unavailable (a forked step's parent
pid is the forkserver's, which ends with the run's process).

PR_SET_PDEATHSIG was not chosen: Linux only, and it fires when the parent *thread* that started
the child ends, which a thread pool may do while the run is alive. Outside a multiprocessing
child (in-process execution, tests, the CLI's `execute_in_process`) this does nothing.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import wait

ORPHAN_EXIT_CODE = 75  # EX_TEMPFAIL: the run is gone, the work is for the rerun
POLL_S = 0.5

_lock = threading.Lock()
_watching = False


def exit_with_parent(poll_s: float = POLL_S) -> bool:
    """End this process when its multiprocessing parent dies; True when a watch is running."""
    global _watching
    parent = multiprocessing.parent_process()
    if parent is None:
        return False
    with _lock:
        if not _watching:
            try:
                sentinel: int | None = parent.sentinel
            except ValueError:  # no sentinel (unusual start method): the pid check remains
                sentinel = None
            threading.Thread(target=_watch, args=(sentinel, os.getppid(), poll_s),
                             name="cti-lifeline", daemon=True).start()  # fmt: skip
            _watching = True
    return True


def _watch(sentinel: int | None, parent_pid: int, poll_s: float) -> None:
    while True:
        if sentinel is not None:
            gone = bool(wait([sentinel], timeout=poll_s))
        else:
            gone = False
            threading.Event().wait(poll_s)
        if gone or os.getppid() != parent_pid:
            message = (f"cti-assets: step process {os.getpid()} stops: its run process "
                       f"{parent_pid} is gone\n")
            os.write(2, message.encode())
            os._exit(ORPHAN_EXIT_CODE)
