"""Delivery channels: Slack incoming webhooks (httpx) and SMTP (smtplib; STARTTLS, SSL or plain; optional auth).

A channel sends one outbox entry and returns only when the server accepted it; anything else raises
``DeliveryError`` with a message that names the channel and what went wrong, never the webhook URL or a password
(httpx error texts carry the URL, so they are never passed on). Retries and the outbox live in ``alerts.outbox``.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import httpx

from alerts.outbox import DeliveryError, Entry
from alerts.secrets import Secret

# httpx logs every request with its URL at INFO: a webhook URL is a secret, so its loggers only speak up on warnings.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

SLACK_REJECTED = {400, 413}
"""Slack answers 400 (invalid_payload, invalid_blocks, ...) or 413 for a message it will never accept."""


class SlackWebhook:
    name = "slack"

    def __init__(self, url: Secret, *, timeout_s: float = 10.0, client: httpx.Client | None = None) -> None:
        self._url = url
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False)

    def send(self, entry: Entry) -> None:
        try:
            response = self._client.post(self._url.reveal(), json=entry.payload)
        except httpx.TimeoutException:
            raise DeliveryError("the Slack webhook did not answer in time") from None
        except httpx.HTTPError as exc:
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

    def close(self) -> None:
        self._client.close()


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
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.sender, self.recipients = sender, list(recipients)
        self.username, self._password = username, password
        self.timeout_s = timeout_s
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

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
        try:
            with self._connect() as smtp:
                if self.username:
                    if self._password is None:
                        raise DeliveryError(f"{where}: a username is set but no password", retry=False)
                    smtp.login(self.username, self._password.reveal())
                refused = smtp.send_message(self.message(entry))
        except DeliveryError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"{where} refused the login of {self.username} ({exc.smtp_code}); check the user and password",
                retry=False,
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"{where} refused every recipient ({', '.join(exc.recipients)})", retry=False) from None
        except smtplib.SMTPResponseException as exc:
            code = exc.smtp_code
            raise DeliveryError(
                f"{where} answered {code}", retry=code < 500, rejected=code >= 500 and code != 530
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise DeliveryError(f"{where} does not offer STARTTLS or AUTH; check `security`", retry=False) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"{where}: TLS failed ({exc.reason or type(exc).__name__})", retry=False) from None
        except TimeoutError:
            raise DeliveryError(f"{where} did not answer in time") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{where} is unreachable ({type(exc).__name__})") from None
        if refused:
            logging.getLogger("gpuledger.channels").warning(
                "%s refused some recipients of %s: %s", where, entry.key, ", ".join(refused)
            )

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=self._context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            if self.security == "starttls":
                smtp.starttls(context=self._context)
        except BaseException:
            smtp.close()
            raise
        return smtp


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
