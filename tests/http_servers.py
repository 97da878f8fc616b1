"""Real misbehaving HTTP servers on 127.0.0.1 for the deadline and body-limit tests.

``ExporterServer`` answers by path: ``/metrics`` a page (given), ``/empty`` an empty page, ``/trickle`` headers then
one byte every ``trickle_s`` forever, ``/slow-headers`` its status line one byte every ``trickle_s``, ``/huge`` a
page of ``huge_bytes`` with its Content-Length, ``/huge-unsized`` the same without one (ended by closing).
``silent_listener`` accepts connections into its backlog and never answers.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LINE = b"# HELP padding a line of a very long page\n"


class ExporterServer:
    def __init__(self, page: bytes = b"", *, trickle_s: float = 0.2, huge_bytes: int = 40 << 20) -> None:
        self.page = page
        self.trickle_s = trickle_s
        self.huge_bytes = huge_bytes
        self.stopping = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with suppress(BrokenPipeError, ConnectionResetError):
                    owner.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        if path == "/slow-headers":
            for byte in b"HTTP/1.1 200 OK\r\n" * 1000:
                if self.stopping.wait(self.trickle_s):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            return
        if path == "/trickle":
            self._headers(handler, None)
            while not self.stopping.wait(self.trickle_s):
                handler.wfile.write(b"#")
                handler.wfile.flush()
            return
        if path in ("/huge", "/huge-unsized"):
            self._headers(handler, self.huge_bytes if path == "/huge" else None)
            block = LINE * (65536 // len(LINE))
            for _ in range(self.huge_bytes // len(block)):
                if self.stopping.is_set():
                    return
                handler.wfile.write(block)
            handler.close_connection = True
            return
        body = self.page if path == "/metrics" else b""
        if path not in ("/metrics", "/empty"):
            handler.send_error(404)
            return
        self._headers(handler, len(body))
        handler.wfile.write(body)

    @staticmethod
    def _headers(handler: BaseHTTPRequestHandler, length: int | None) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain; version=0.0.4")
        if length is not None:
            handler.send_header("Content-Length", str(length))
        else:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        handler.wfile.flush()

    def __enter__(self) -> ExporterServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def silent_listener() -> Iterator[str]:
    """A URL whose server accepts the connection and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def finishes_within(seconds: float, func: Any, *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``'s result or exception, or AssertionError when it is still running after
    ``seconds`` (a guard against hanging the suite, not a measure of speed)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("value", func(*args, **kwargs)))
        except BaseException as exc:
            outcome.append(("error", exc))

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise AssertionError(f"still running after {time.monotonic() - started:.0f} s")
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value
