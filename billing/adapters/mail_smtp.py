"""Sending the portal's mails over SMTP (Azure Communication Services Email in Azure).

ACS accepts SMTP on smtp.azurecomm.net:587 with STARTTLS and a login whose user name is an SMTP
Username resource and whose password is its Entra application's secret (docs/deploy.md). Locally the
stack's mailbox listens on 127.0.0.1 without TLS (SMTP_STARTTLS=false).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from billing import config
from billing.portal.mails import Mail, MailError

TIMEOUT_SECONDS = 10  # connect and each command; the page answers "try again" rather than hang


class SmtpMailer:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str = "",
        password: str = "",
        starttls: bool = True,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self._host, self._port, self._sender = host, port, sender
        self._username, self._password = username, password
        self._starttls, self._timeout = starttls, timeout

    def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = Address(addr_spec=mail.to)  # the bare address, never a display name to parse
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self._sender.rpartition("@")[2] or None)
        message.set_content(mail.text)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password)
                # The envelope recipient is exactly the checked address, not what parsing To yields.
                smtp.send_message(message, to_addrs=[mail.to])
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            # The reason names the server's answer or the socket error, never the credentials.
            raise MailError(f"{type(exc).__name__} from {self._host}:{self._port}") from None


def smtp_mailer(env: Mapping[str, str] | None = None) -> SmtpMailer:
    port = config.get("SMTP_PORT", env)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"SMTP_PORT must be a port number such as 587, not {port!r}")
    starttls = config.get("SMTP_STARTTLS", env).lower()
    if starttls not in ("true", "false"):
        raise ValueError(f"SMTP_STARTTLS must be 'true' or 'false', not {starttls!r}")
    return SmtpMailer(
        config.get("SMTP_HOST", env),
        int(port),
        config.get("MAIL_SENDER", env),
        username=config.get("SMTP_USERNAME", env),
        password=config.get("SMTP_PASSWORD", env),
        starttls=starttls == "true",
    )
