"""The local SMTP mailbox, driven the way the app will drive it: smtplib over loopback, and HTTP for the page."""

from __future__ import annotations

import email.policy
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests

from devstack.ports import free_port, wait_for_port
from emulators.mailbox import Mailbox, MailMessage

ROOT = Path(__file__).resolve().parents[3]
USER, PASSWORD = "mailbox-user", "s3cret-pw"

# aiosmtpd warns once that AUTH without TLS is insecure; the auth tests mean exactly that (loopback only).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with Mailbox() as running:
        yield running


@pytest.fixture
def auth_mailbox() -> Iterator[Mailbox]:
    with Mailbox(auth=(USER, PASSWORD)) as running:
        yield running


def mail(
    to: str = "consumer@example.test",
    subject: str = "Confirm your address",
    body: str = "Hello\n",
    sender: str = "DoNotReply@portal.localhost",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"API Portal <{sender}>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def two_free_ports() -> tuple[int, int]:
    first, second = free_port(), free_port()
    while second == first:  # free_port() closes its probe socket, so the kernel may hand out the same one
        second = free_port()
    return first, second


def client(box: Mailbox) -> smtplib.SMTP:
    return smtplib.SMTP(box.smtp_host, box.smtp_port, timeout=10)


def send(box: Mailbox, message: EmailMessage) -> None:
    with client(box) as smtp:
        smtp.send_message(message)


# ---- receiving and storing ----------------------------------------------------------------------------


def test_a_sent_message_is_stored_with_envelope_headers_and_decoded_body(mailbox: Mailbox) -> None:
    body = "Grüße! Confirm: https://portal.test/confirm?token=abc\n.a line that starts with a dot\n"
    message = mail(to="Consumer <consumer@example.test>", subject="Bestätigen Sie Ihre Adresse", body=body)
    before = datetime.now(UTC)
    with client(mailbox) as smtp:
        refused = smtp.sendmail(
            "bounce@portal.localhost",
            ["consumer@example.test", "audit@example.test"],
            message.as_bytes(policy=email.policy.SMTP),
        )
    after = datetime.now(UTC)

    assert refused == {}
    [stored] = mailbox.messages()
    assert stored.id == 1
    assert stored.envelope_from == "bounce@portal.localhost"
    assert stored.envelope_to == ("consumer@example.test", "audit@example.test")
    assert stored.from_header == "API Portal <DoNotReply@portal.localhost>"
    assert stored.to_header == "Consumer <consumer@example.test>"
    assert stored.subject == "Bestätigen Sie Ihre Adresse"  # RFC 2047 encoded on the wire, decoded here
    assert "Bestätigen".encode() not in stored.raw  # ... so the raw bytes really were encoded
    assert stored.text == body  # transfer encoding, charset and the dot-stuffing of line 2 all undone
    assert before <= stored.received_at <= after
    assert stored.raw.startswith(b"From: API Portal <DoNotReply@portal.localhost>\r\n")


def test_each_message_gets_the_next_id(mailbox: Mailbox) -> None:
    with client(mailbox) as smtp:
        for n in range(3):
            smtp.send_message(mail(subject=f"number {n}"))
    assert [(m.id, m.subject) for m in mailbox.messages()] == [(1, "number 0"), (2, "number 1"), (3, "number 2")]


def test_recipient_filter_is_case_insensitive_and_oldest_first(mailbox: Mailbox) -> None:
    with client(mailbox) as smtp:
        smtp.send_message(mail(to="Ada@Example.test", subject="first"))
        smtp.send_message(mail(to="bob@example.test", subject="other"))
        smtp.sendmail(
            "x@portal.localhost", ["ada@example.TEST"], mail(subject="bcc only").as_bytes(policy=email.policy.SMTP)
        )

    assert [m.subject for m in mailbox.messages("ADA@example.test")] == ["first", "bcc only"]
    assert [m.subject for m in mailbox.messages("Ada <ada@example.test>")] == ["first", "bcc only"]
    assert [m.subject for m in mailbox.messages()] == ["first", "other", "bcc only"]
    latest = mailbox.latest("ada@example.test")
    assert latest is not None
    assert latest.subject == "bcc only"
    assert mailbox.latest("nobody@example.test") is None


def test_clear_forgets_messages_but_ids_keep_counting(mailbox: Mailbox) -> None:
    send(mailbox, mail())
    mailbox.clear()
    assert mailbox.messages() == []
    send(mailbox, mail())
    assert [m.id for m in mailbox.messages()] == [2]


def test_only_the_newest_messages_are_kept() -> None:
    with Mailbox(max_messages=3) as box, client(box) as smtp:
        for n in range(5):
            smtp.send_message(mail(subject=f"number {n}"))
        assert [m.id for m in box.messages()] == [3, 4, 5]
        assert requests.get(f"{box.web_url}/messages/1", timeout=10).status_code == 404


def test_wait_for_returns_a_message_sent_from_another_thread(mailbox: Mailbox) -> None:
    send(mailbox, mail(subject="old"))
    sender = threading.Thread(target=send, args=(mailbox, mail(subject="new")))
    sender.start()
    try:
        found = mailbox.wait_for("consumer@example.test", after_id=1, timeout=10)
    finally:
        sender.join(timeout=10)
    assert (found.id, found.subject) == (2, "new")
    with pytest.raises(TimeoutError):
        mailbox.wait_for("consumer@example.test", after_id=2, timeout=0.05)


# ---- links ------------------------------------------------------------------------------------------


def test_links_are_the_http_urls_of_the_text_body_in_order() -> None:
    text = (
        "Confirm: https://portal.test/confirm?token=a1&next=%2Fhome.\n"
        "Or paste <http://127.0.0.1:7071/api/reset?t=x>, then see (https://docs.test/page).\n"
        "Wikipedia: https://en.wikipedia.test/wiki/Mail_(protocol) and ftp://not.test/x javascript:alert(1)\n"
        "Again: https://portal.test/confirm?token=a1&next=%2Fhome\n"
        "Bare https:// is no link.\n"
    )
    message = MailMessage(
        id=1,
        envelope_from="",
        envelope_to=(),
        from_header="",
        to_header="",
        subject="",
        received_at=datetime.now(UTC),
        text=text,
        raw=b"",
    )
    assert Mailbox.links(message) == [
        "https://portal.test/confirm?token=a1&next=%2Fhome",
        "http://127.0.0.1:7071/api/reset?t=x",
        "https://docs.test/page",
        "https://en.wikipedia.test/wiki/Mail_(protocol)",
        "https://portal.test/confirm?token=a1&next=%2Fhome",
    ]


def test_links_of_a_quoted_printable_body_are_whole(mailbox: Mailbox) -> None:
    # A long line makes the body quoted-printable with soft line breaks; the link must come back in one piece.
    url = "https://portal.test/confirm?token=" + "x" * 120
    send(mailbox, mail(body=f"Ünïcode forces a transfer encoding. {url}\n"))
    stored = mailbox.latest("consumer@example.test")
    assert stored is not None
    assert b"=\r\n" in stored.raw  # soft breaks were on the wire
    assert mailbox.links(stored) == [url]


# ---- SMTP AUTH ----------------------------------------------------------------------------------------


def test_login_with_plain_and_with_login_delivers(auth_mailbox: Mailbox) -> None:
    with client(auth_mailbox) as smtp:
        smtp.ehlo()
        assert set(smtp.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
        code, _ = smtp.login(USER, PASSWORD)  # smtplib prefers PLAIN
        assert code == 235
        smtp.send_message(mail(subject="via PLAIN"))
    with client(auth_mailbox) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = USER, PASSWORD
        code, _ = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        assert code == 235
        smtp.send_message(mail(subject="via LOGIN"))
    assert [m.subject for m in auth_mailbox.messages()] == ["via PLAIN", "via LOGIN"]


@pytest.mark.parametrize(("user", "password"), [(USER, "wrong"), ("someone-else", PASSWORD), (USER.upper(), PASSWORD)])
def test_wrong_credentials_are_refused_and_nothing_is_stored(auth_mailbox: Mailbox, user: str, password: str) -> None:
    with client(auth_mailbox) as smtp:
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login(user, password)
        assert refused.value.smtp_code == 535
        smtp.user, smtp.password = user, password
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused_login:
            smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        assert refused_login.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as not_sent:  # still not logged in
            smtp.send_message(mail())
        assert not_sent.value.smtp_code == 530
    assert auth_mailbox.messages() == []


def test_sending_without_login_is_refused_when_auth_is_required(auth_mailbox: Mailbox) -> None:
    with client(auth_mailbox) as smtp, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        smtp.send_message(mail())
    assert refused.value.smtp_code == 530
    assert auth_mailbox.messages() == []


def test_without_auth_configured_no_auth_is_offered(mailbox: Mailbox) -> None:
    with client(mailbox) as smtp:
        smtp.ehlo()
        assert "auth" not in smtp.esmtp_features
        with pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.login(USER, PASSWORD)


# ---- size limit ---------------------------------------------------------------------------------------


def test_a_message_over_the_size_limit_is_refused() -> None:
    with Mailbox(max_message_bytes=2000) as box, client(box) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "2000"
        big = mail(subject="too big", body=("y" * 70 + "\n") * 40)  # about 2.9 kB
        # smtplib declares SIZE= on MAIL FROM, so the server refuses before any data is sent.
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            smtp.send_message(big)
        assert declared.value.smtp_code == 552
        # Without a declared size the whole message is read, then refused at the end of DATA.
        assert smtp.mail("DoNotReply@portal.localhost")[0] == 250
        assert smtp.rcpt("consumer@example.test")[0] == 250
        code, _ = smtp.data(big.as_bytes(policy=email.policy.SMTP))
        assert code == 552
        smtp.send_message(mail(subject="small enough"))  # the session goes on
        assert [m.subject for m in box.messages()] == ["small enough"]


# ---- the web page and JSON ----------------------------------------------------------------------------


def test_messages_json_lists_newest_first_and_filters_by_recipient(mailbox: Mailbox) -> None:
    send(mailbox, mail(to="ada@example.test", subject="one", body="Open https://portal.test/a now.\n"))
    send(mailbox, mail(to="bob@example.test", subject="two"))

    everything = requests.get(f"{mailbox.web_url}/messages.json", timeout=10)
    assert everything.status_code == 200
    assert everything.headers["Content-Type"] == "application/json"
    assert [m["subject"] for m in everything.json()["messages"]] == ["two", "one"]

    filtered = requests.get(f"{mailbox.web_url}/messages.json", params={"to": "ADA@example.test"}, timeout=10).json()
    [one] = filtered["messages"]
    assert one["id"] == 1
    assert one["envelope_to"] == ["ada@example.test"]
    assert one["from"] == "API Portal <DoNotReply@portal.localhost>"
    assert one["to"] == "ada@example.test"
    assert one["text"] == "Open https://portal.test/a now.\n"
    assert one["links"] == ["https://portal.test/a"]
    assert datetime.fromisoformat(one["received_at"]).tzinfo is not None
    assert "raw" not in one


def test_one_message_as_json_and_404_for_unknown(mailbox: Mailbox) -> None:
    send(mailbox, mail(subject="hello"))
    found = requests.get(f"{mailbox.web_url}/messages/1", timeout=10)
    assert found.status_code == 200
    assert found.json()["subject"] == "hello"
    assert found.json()["raw"].startswith("From: API Portal")

    missing = requests.get(f"{mailbox.web_url}/messages/2", timeout=10)
    assert missing.status_code == 404
    assert "error" in missing.json()
    for path in ("/messages/abc", "/nothing-here"):
        response = requests.get(f"{mailbox.web_url}{path}", timeout=10)
        assert response.status_code == 404
        assert "error" in response.json()


def test_the_page_is_read_only(mailbox: Mailbox) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = requests.request(method, f"{mailbox.web_url}/messages.json", data=b"x" * 100, timeout=10)
        assert response.status_code == 405, method
        assert response.headers["Allow"] == "GET, HEAD"
    head = requests.head(f"{mailbox.web_url}/", timeout=10)
    assert head.status_code == 200
    assert head.content == b""


def test_the_page_lists_messages_newest_first_with_clickable_links(mailbox: Mailbox) -> None:
    send(mailbox, mail(to="ada@example.test", subject="Older one"))
    send(
        mailbox,
        mail(
            to="bob@example.test",
            subject="Reset your password",
            body="Reset: https://portal.test/reset?token=abc&user=1\n",
        ),
    )

    page = requests.get(f"{mailbox.web_url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    text = page.text
    assert text.index("Reset your password") < text.index("Older one")
    assert '<a href="https://portal.test/reset?token=abc&amp;user=1" rel="noreferrer">' in text
    assert "bob@example.test" in text
    assert "UTC</time>" in text

    only_ada = requests.get(f"{mailbox.web_url}/", params={"to": "ada@example.test"}, timeout=10).text
    assert "Older one" in only_ada
    assert "Reset your password" not in only_ada


def test_html_in_a_mail_is_escaped_on_the_page(mailbox: Mailbox) -> None:
    send(
        mailbox,
        mail(
            to="ada@example.test",
            subject="<script>alert('subject')</script>",
            body='<img src=x onerror=alert(1)> & <b>bold</b>\nhttps://portal.test/x?a="><script>alert(2)</script>\n',
        ),
    )
    page = requests.get(f"{mailbox.web_url}/", timeout=10)
    text = page.text
    assert "<script>" not in text
    assert "<img" not in text
    assert "<b>bold" not in text
    assert "&lt;script&gt;alert(&#x27;subject&#x27;)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in text
    # The URL stops at the quote, so nothing of the attack reaches the href.
    assert '<a href="https://portal.test/x?a=" rel="noreferrer">' in text
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none' covers scripts
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


# ---- life cycle, addresses, CLI ----------------------------------------------------------------------


def test_stop_frees_both_ports() -> None:
    box = Mailbox().start()
    smtp_port, web_url = box.smtp_port, box.web_url
    web_port = int(web_url.rsplit(":", 1)[1])
    send(box, mail())
    assert requests.get(web_url, timeout=10).status_code == 200
    box.stop()

    for port in (smtp_port, web_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with Mailbox(smtp_port, web_port) as again:  # the same ports can be listened on again at once
        assert (again.smtp_port, again.web_url) == (smtp_port, web_url)
        send(again, mail(subject="after restart"))
        assert [m.subject for m in again.messages()] == ["after restart"]


def test_given_ports_are_used_and_app_settings_point_at_them() -> None:
    smtp_port, web_port = two_free_ports()
    with Mailbox(smtp_port, web_port, auth=(USER, PASSWORD)) as box:
        assert box.smtp_host == "127.0.0.1"
        assert box.smtp_port == smtp_port
        assert box.web_url == f"http://127.0.0.1:{web_port}"
        assert box.app_settings() == {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "SMTP_USERNAME": USER,
            "SMTP_PASSWORD": PASSWORD,
            "SMTP_STARTTLS": "false",
        }


def test_bad_arguments_and_unstarted_addresses() -> None:
    with pytest.raises(ValueError, match="auth"):
        Mailbox(auth=(USER, ""))
    with pytest.raises(ValueError, match="max_messages"):
        Mailbox(max_messages=0)
    with pytest.raises(ValueError, match="max_message_bytes"):
        Mailbox(max_message_bytes=0)
    with pytest.raises(RuntimeError):
        _ = Mailbox().smtp_port
    with pytest.raises(RuntimeError):
        _ = Mailbox().web_url


def test_cli_serves_until_sigterm() -> None:
    smtp_port, web_port = two_free_ports()
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.mailbox", "--smtp-port", str(smtp_port), "--web-port", str(web_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(web_port, timeout=20, alive=lambda: process.poll() is None)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.send_message(mail(subject="from the CLI test"))
        listed = requests.get(f"http://127.0.0.1:{web_port}/messages.json", timeout=10).json()
        assert [m["subject"] for m in listed["messages"]] == ["from the CLI test"]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert f"127.0.0.1:{smtp_port}" in out
    assert f"http://127.0.0.1:{web_port}/" in out
    assert "stopped" in out


def test_cli_rejects_a_user_without_password() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emulators.mailbox", "--user", "u"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert "--password" in result.stderr
    assert "Traceback" not in result.stderr
