"""A child of ``gpuledger server`` (its dashboard) ends when the server does, even when the server is killed with
SIGKILL and cannot stop it: the server names itself in :data:`PARENT_ENV`, and the child asks Linux to send it
SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), or ends at once if the parent is already gone."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

PARENT_ENV = "_GPULEDGER_SERVER_PID"
"""Not GPULEDGER_-prefixed: settings read every GPULEDGER_ variable."""
PR_SET_PDEATHSIG = 1


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child that must end with this process."""
    return {**environ, PARENT_ENV: str(os.getpid())}


def end_with_parent(environ: Mapping[str, str]) -> None:
    """When started by ``gpuledger server`` (:func:`child_env`), receive SIGTERM when it dies; exit now if it
    already has. Does nothing elsewhere, or where prctl is not there (not Linux)."""
    parent = environ.get(PARENT_ENV)
    if not parent or not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return
    except OSError as exc:
        log.debug("no prctl: %s", exc)
        return
    if os.getppid() != int(parent):  # the server died before the request took effect
        raise SystemExit(0)
