"""Why the dashboard cannot be served, each with its one-line message (and the fix) built here."""

from __future__ import annotations

import errno


class DashboardError(Exception):
    """Base of every expected dashboard failure; the CLI turns it into one line and exit code 2."""


class PortUnavailable(DashboardError):
    """The address cannot be listened on: the port is taken, reserved, or the host is not this machine's."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            problem, fix = "the port is in use", "pass another --port, or stop what listens there"
        elif exc.errno == errno.EACCES:
            problem, fix = "the port is reserved", "pass a --port above 1023"
        else:
            problem = "this machine cannot listen there"
            fix = "pass an address of this machine to --host (127.0.0.1, or 0.0.0.0 for every interface)"
        super().__init__(f"cannot serve the dashboard on {where}: {problem} ({reason}); {fix}")
        self.host = host
        self.port = port


class NotStarted(DashboardError):
    def __init__(self, host: str, port: int, code: object) -> None:
        super().__init__(
            f"the dashboard server on {host}:{port} stopped before it answered (exit status {code}); "
            "see Streamlit's message above, and retry with another --port if the port was taken meanwhile"
        )
