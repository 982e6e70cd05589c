"""The SMTP adapter against the local mailbox: a real SMTP conversation, with and without login."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from billing.adapters.mail_smtp import SmtpMailer, smtp_mailer
from billing.portal.mails import Mail, MailError
from emulators.mailbox import Mailbox

# aiosmtpd warns once that AUTH without TLS is unsafe: true, and the reason Azure uses STARTTLS.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with Mailbox(auth=("smtp-user", "s3cret-from-key-vault")) as running:
        yield running


def test_a_mail_arrives_with_its_headers_after_login(mailbox: Mailbox) -> None:
    mailer = SmtpMailer(
        mailbox.smtp_host,
        mailbox.smtp_port,
        "DoNotReply@portal.example",
        username="smtp-user",
        password="s3cret-from-key-vault",
        starttls=False,
    )
    mailer.send(Mail("ada@example.com", "Confirm your e-mail address", "Open https://app.example/x?token=abc"))
    [message] = mailbox.messages("ada@example.com")
    assert message.envelope_from == "DoNotReply@portal.example"
    assert message.subject == "Confirm your e-mail address"
    assert message.from_header == "DoNotReply@portal.example"
    assert Mailbox.links(message) == ["https://app.example/x?token=abc"]
    assert b"Message-ID: <" in message.raw
    assert b"@portal.example>" in message.raw


def test_a_refused_login_is_a_mail_error_that_names_no_secret(mailbox: Mailbox) -> None:
    mailer = SmtpMailer(
        mailbox.smtp_host,
        mailbox.smtp_port,
        "DoNotReply@portal.example",
        username="smtp-user",
        password="the-wrong-secret",
        starttls=False,
    )
    with pytest.raises(MailError) as failed:
        mailer.send(Mail("ada@example.com", "Subject", "text"))
    assert "SMTPAuthenticationError" in str(failed.value)
    assert "the-wrong-secret" not in str(failed.value)
    assert "smtp-user" not in str(failed.value)
    assert mailbox.messages() == []


def test_a_server_that_does_not_answer_is_a_mail_error(mailbox: Mailbox) -> None:
    port = mailbox.smtp_port
    mailbox.stop()
    with pytest.raises(MailError, match="ConnectionRefusedError"):
        SmtpMailer("127.0.0.1", port, "a@b.example", starttls=False, timeout=2).send(Mail("x@y.example", "s", "t"))


def test_starttls_is_required_unless_turned_off(mailbox: Mailbox) -> None:
    # The mailbox has no TLS, as Azure Communication Services does: a mailer that insists on it fails.
    with pytest.raises(MailError, match="SMTPNotSupportedError"):
        SmtpMailer(mailbox.smtp_host, mailbox.smtp_port, "a@b.example").send(Mail("x@y.example", "s", "t"))


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"SMTP_PORT": "smtp"}, "SMTP_PORT must be a port number"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT must be a port number"),
        ({"SMTP_STARTTLS": "yes"}, "SMTP_STARTTLS must be 'true' or 'false'"),
    ],
)
def test_bad_settings_are_named(settings: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        smtp_mailer({"SMTP_HOST": "smtp.azurecomm.net", "MAIL_SENDER": "a@b.example", **settings})
