"""Delivery channels: Slack incoming webhooks (httpx) and SMTP (smtplib; STARTTLS, SSL or plain; optional auth).

A channel sends one outbox entry and returns only when the server accepted it; anything else raises
``DeliveryError`` with a message that names the channel and what went wrong, never the webhook URL or a password
(httpx error texts carry the URL, so they are never passed on). Retries and the outbox live in ``alerts.outbox``.

Every try has one deadline, ``timeout_s``, over the whole conversation (DNS, connect, TLS, EHLO, AUTH, the request
or DATA, the answer): per-operation timeouts alone let a server that trickles its answer hold a try forever. A try
that ends after the message went out whole but before the server's answer came is *ambiguous* (the server may have
taken it), and says so (``DeliveryError.ambiguous``), so the outbox does not send it again at once.

Slack goes through httpx, not the ``requests`` the collector uses: an async client cancelled by one
``asyncio.timeout`` gives the whole-request deadline, and its trace hook says when the body was sent whole;
``requests`` offers only per-socket-operation timeouts and no view of the upload, so it can keep neither guarantee.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import smtplib
import socket
import ssl
import threading
from collections.abc import Coroutine
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeVar

import httpx

from alerts.outbox import DeliveryError, Entry
from alerts.secrets import Secret

# httpx logs every request with its URL at INFO: a webhook URL is a secret, so its loggers only speak up on warnings.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

SLACK_REJECTED = {400, 413}
"""Slack answers 400 (invalid_payload, invalid_blocks, ...) or 413 for a message it will never accept."""
DEFAULT_TIMEOUT_S = 60.0
T = TypeVar("T")


class SlackWebhook:
    name = "slack"

    def __init__(
        self, url: Secret, *, timeout_s: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._url = url
        self.timeout_s = timeout_s
        self._transport = transport

    def send(self, entry: Entry) -> None:
        body_sent = threading.Event()
        try:
            response = _run(self._post(entry.payload, body_sent))
        except (TimeoutError, httpx.TimeoutException):
            if body_sent.is_set():
                raise DeliveryError(
                    f"the Slack webhook took the message but did not answer within {self.timeout_s:g} s "
                    "(it may have arrived)",
                    ambiguous=True,
                ) from None
            raise DeliveryError(f"the Slack webhook did not answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            if body_sent.is_set():
                raise DeliveryError(
                    f"the Slack webhook took the message but gave no answer ({type(exc).__name__}; "
                    "it may have arrived)",
                    ambiguous=True,
                ) from None
            raise DeliveryError(f"the Slack webhook is unreachable ({type(exc).__name__})") from None
        if response.status_code == 200:
            return
        reason = response.text.strip()[:80].splitlines()[0] if response.text.strip() else response.reason_phrase
        message = f"the Slack webhook answered HTTP {response.status_code} ({reason})"
        if response.status_code == 429:
            raise DeliveryError(message, wait_s=_retry_after(response.headers.get("retry-after")))
        if response.status_code in SLACK_REJECTED:
            raise DeliveryError(message, retry=False, rejected=True)
        if response.status_code in (401, 403, 404, 410):  # bad or revoked URL, archived channel: fix the config
            raise DeliveryError(message + "; check the webhook URL", retry=False)
        raise DeliveryError(message)

    async def _post(self, payload: dict[str, Any], body_sent: threading.Event) -> httpx.Response:
        """One POST under one deadline; ``body_sent`` is set once the request went out whole."""

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event == "http11.send_request_body.complete":
                body_sent.set()

        async with asyncio.timeout(self.timeout_s):
            async with httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s), follow_redirects=False, transport=self._transport
            ) as client:
                return await client.post(self._url.reveal(), json=payload, extensions={"trace": trace})


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end from synchronous code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class _SMTP(smtplib.SMTP):
    """``smtplib.SMTP`` that notes when a message went out whole (its data and the final ``.``)."""

    data_sent = False

    def connect(self, host: str = "localhost", port: int = 0, source_address: Any = None) -> tuple[int, bytes]:
        self._host = host  # smtplib sets it only when __init__ connects; TLS checks the certificate against it
        return super().connect(host, port, source_address)

    def send(self, s: Any) -> None:
        super().send(s)
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.data_sent = True


class _SMTPSSL(_SMTP, smtplib.SMTP_SSL):
    pass


class _Deadline:
    """Ends a blocking SMTP conversation at its deadline by shutting its socket down (which wakes a blocked read);
    the socket timeouts bound each read, this bounds them all together."""

    def __init__(self, smtp: smtplib.SMTP, seconds: float) -> None:
        self.expired = False
        self._smtp = smtp
        self._seconds = seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="smtp-deadline", daemon=True)

    def __enter__(self) -> _Deadline:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()

    def check(self) -> None:
        if self.expired:
            raise TimeoutError

    def _watch(self) -> None:
        if self._done.wait(self._seconds):
            return
        self.expired = True
        while not self._done.is_set():  # a socket still connecting is shut as soon as it exists
            sock = self._smtp.sock
            if sock is not None:
                with contextlib.suppress(OSError):  # the plain socket's shutdown: an SSL socket's would unwrap it
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                return
            self._done.wait(0.05)


class SmtpChannel:
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: str,
        sender: str,
        recipients: list[str],
        username: str | None = None,
        password: Secret | None = None,
        ca_file: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.sender, self.recipients = sender, list(recipients)
        self.username, self._password = username, password
        self.timeout_s = timeout_s
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._local_hostname: str | None = None

    def message(self, entry: Entry) -> EmailMessage:
        """The MIME message: a plain-text part and an HTML part; its Message-ID comes from the idempotency key."""
        msg = EmailMessage()
        msg["Subject"] = entry.payload["subject"]
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = f"<{entry.id}@gpuledger>"
        msg.set_content(entry.payload["text"])
        msg.add_alternative(entry.payload["html"], subtype="html")
        return msg

    def send(self, entry: Entry) -> None:
        where = f"SMTP server {self.host}:{self.port}"
        if self.username and self._password is None:
            raise DeliveryError(f"{where}: a username is set but no password", retry=False)
        if self._local_hostname is None:
            self._local_hostname = socket.getfqdn()  # what smtplib would look up on every connection
        smtp: _SMTP = (
            _SMTPSSL(local_hostname=self._local_hostname, timeout=self.timeout_s, context=self._context)
            if self.security == "ssl"
            else _SMTP(local_hostname=self._local_hostname, timeout=self.timeout_s)
        )
        with _Deadline(smtp, self.timeout_s) as deadline:
            try:
                code, greeting = smtp.connect(self.host, self.port)
                deadline.check()
                if code != 220:
                    raise smtplib.SMTPConnectError(code, greeting)
                if self.security == "starttls":
                    smtp.starttls(context=self._context)
                if self.username and self._password is not None:
                    smtp.login(self.username, self._password.reveal())
                refused = smtp.send_message(self.message(entry))
            except Exception as exc:
                smtp.close()
                raise self._failure(exc, where, deadline.expired, smtp.data_sent) from None
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):  # the message is accepted; a lost goodbye changes nothing
                smtp.close()
        if refused:
            logging.getLogger("gpuledger.channels").warning(
                "%s refused some recipients of %s: %s", where, entry.key, ", ".join(refused)
            )

    def _failure(self, exc: Exception, where: str, expired: bool, data_sent: bool) -> DeliveryError:
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return DeliveryError(
                f"{where} refused the login of {self.username} ({exc.smtp_code}); check the user and password",
                retry=False,
            )
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return DeliveryError(f"{where} refused every recipient ({', '.join(exc.recipients)})", retry=False)
        if isinstance(exc, smtplib.SMTPResponseException):
            code = exc.smtp_code
            return DeliveryError(f"{where} answered {code}", retry=code < 500, rejected=code >= 500 and code != 530)
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return DeliveryError(f"{where} does not offer STARTTLS or AUTH; check `security`", retry=False)
        timed_out = expired or isinstance(exc, TimeoutError)
        if data_sent and isinstance(exc, (OSError, smtplib.SMTPException)):
            how = f"did not answer within {self.timeout_s:g} s" if timed_out else "closed the connection"
            return DeliveryError(f"{where} took the message but {how} (it may have arrived)", ambiguous=True)
        if timed_out:
            return DeliveryError(f"{where} did not answer within {self.timeout_s:g} s")
        if isinstance(exc, ssl.SSLError):
            return DeliveryError(f"{where}: TLS failed ({exc.reason or type(exc).__name__})", retry=False)
        if isinstance(exc, (OSError, smtplib.SMTPException)):
            return DeliveryError(f"{where} is unreachable ({type(exc).__name__})")
        raise exc


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
