"""A worker process at the lowest CPU priority, for reads that must not slow the pages being drawn.

The parent sends a pickled call (a module-level function and its arguments) on the worker's stdin and reads the
pickled result (or the exception) from its stdout, one call at a time. The worker lowers its priority (``nice``
19, ``lower_priority``) before it imports anything heavy: this module imports only the standard library, and the
function's module is imported when its call is unpickled. It is started as ``python -m dashboards.worker`` rather
than through ``multiprocessing``, whose ``spawn`` would run the server's ``__main__`` in the child (under
Streamlit, the app script, which reads the warehouse again). It ends when its stdin closes or its parent is gone.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

NICE = 19
STOP_WAIT_S = 5.0
PARENT_POLL_S = 0.2


class Worker:
    """The parent's end: ``call`` runs a function in the worker and returns what it returned (or raises what it
    raised); calls from several threads take turns."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            pickle.dump((fn, args), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
            try:
                ok, value = pickle.load(self._proc.stdout)
            except EOFError:
                raise RuntimeError(f"the background worker ended (exit status {self._proc.wait()})") from None
        if not ok:
            raise value
        return value


@contextlib.contextmanager
def started() -> Iterator[Worker]:
    """A worker for the duration of the block, stopped after it (its stdin closed, then killed if it lingers)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboards.worker", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,  # a session of its own: see ``lower_priority``
    )
    try:
        yield Worker(proc)
    finally:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The worker's end: answer calls until ``requests`` ends."""
    while True:
        try:
            fn, args = pickle.load(requests)
        except EOFError:
            return
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except Exception as exc:  # handed back to the caller, which raises it
            reply = (False, exc)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a result or an error that cannot travel: say what it was
            data = pickle.dumps((False, RuntimeError(f"{fn.__name__} returned what cannot be pickled: {exc}")))
        replies.write(data)
        replies.flush()


def lower_priority() -> None:
    """``nice`` 19, for this process and for its scheduling group: where Linux groups processes by session for CPU
    time (``sched_autogroup_enabled``), a nice value only orders processes within one group, so the worker, in a
    session of its own, lowers its group's too; otherwise its group would get as much CPU as the browser's."""
    if hasattr(os, "nice"):
        os.nice(NICE)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
        group.write(str(NICE))


def end_with_parent(parent: int) -> None:
    """Exit as soon as the parent is gone, even mid-call: in a session of its own the worker gets no signal meant
    for the server's, and a call can take seconds."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def main() -> None:
    end_with_parent(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid())
    lower_priority()
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, not into the replies
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
