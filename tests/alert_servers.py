"""Real servers for the delivery tests: an HTTP server standing in for Slack's incoming webhook, and aiosmtpd.

The webhook server accepts a POST on one secret path and can be switched between behaviours: ``ok`` (200 "ok", the
message counts as accepted), ``error`` (HTTP 500), ``slow`` (answers after the client's timeout, with 500, so nothing
is accepted), ``late`` (takes the message, then answers 200 after ``slow_s``: a slow server that works), ``reject``
(400 invalid_blocks). ``stop()`` and ``start()`` take it down and bring it back on the same port. ``Trickle`` is a
server that answers one byte at a time and never finishes (HTTP or SMTP), which only a whole-request deadline ends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import socket
import subprocess
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

SECRET_PATH = "/services/T0GPULEDGER/B0ALERTS/xoxSECRETtok3n9f8e7d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Webhook:
    def __init__(self, port: int | None = None, *, slow_s: float = 1.0) -> None:
        self.port = port or free_port()
        self.mode = "ok"
        self.slow_s = slow_s
        self.accepted: list[dict[str, Any]] = []
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"

    def start(self) -> Webhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with hook._lock:
                    hook.requests += 1
                    mode = hook.mode
                if self.path != SECRET_PATH:
                    return self._answer(404, "no_service")
                if mode == "error":
                    return self._answer(500, "rollup_error")
                if mode == "reject":
                    return self._answer(400, "invalid_blocks")
                if mode == "slow":
                    time.sleep(hook.slow_s)
                    return self._answer(500, "too late")
                if mode == "late":
                    with hook._lock:
                        hook.accepted.append(json.loads(body))
                    time.sleep(hook.slow_s)
                    return self._answer(200, "ok")
                with hook._lock:
                    hook.accepted.append(json.loads(body))
                self._answer(200, "ok")

            def _answer(self, code: int, text: str) -> None:
                try:
                    self.send_response(code)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text.encode())
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Mailbox:
    """aiosmtpd handler keeping every message it receives; with ``delay_s`` it answers DATA that much later (a slow
    server that works: the message is kept either way)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Envelope] = []
        self.delay_s = delay_s

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        content = envelope.original_content or b""
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return "250 OK"


class Trickle:
    """A TCP server on loopback that never finishes answering: ``http`` reads the request, then sends a status line
    and one header byte every ``every_s``; ``smtp`` sends an endless multi-line greeting, one byte at a time. Each
    byte comes well within any read timeout, so only a deadline over the whole request ends a client's wait."""

    def __init__(self, kind: str, every_s: float = 0.05) -> None:
        self.kind, self.every_s = kind, every_s
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.kind == "http":
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
                    length = int(fields.get(b"content-length", b"0"))
                    while len(body) < length:
                        body += conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nx-wait: ")
                else:
                    conn.sendall(b"220-")
                while not self._stop.wait(self.every_s):
                    conn.sendall(b"w" if self.kind == "http" else b"w\r\n220-")
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()


class Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.attempts = 0

    def __call__(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.attempts += 1
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.user
            and data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False)


def smtp_server(
    mailbox: Mailbox,
    *,
    auth: Authenticator | None = None,
    tls_context: Any = None,
    ssl_context: Any = None,
    port: int | None = None,
) -> Controller:
    """A running aiosmtpd on loopback: plain, STARTTLS (``tls_context``) or implicit TLS (``ssl_context``)."""
    kwargs: dict[str, Any] = {}
    if auth is not None:
        kwargs.update(authenticator=auth, auth_required=True, auth_require_tls=tls_context is not None)
    if tls_context is not None:
        kwargs.update(tls_context=tls_context, require_starttls=True)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port or free_port(), ssl_context=ssl_context, **kwargs)
    controller.start()
    return controller


def self_signed(directory: Path) -> tuple[Path, Path] | None:
    """A certificate for 127.0.0.1 and its key, made with the openssl command (None when it is not installed)."""
    if shutil.which("openssl") is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def clock() -> dt.datetime:
    """The real clock, as the delivery tests pass it to the outbox."""
    return dt.datetime.now(dt.UTC)
