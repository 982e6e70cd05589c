"""The mailbox's messages: parsed once on arrival, kept in memory (newest N), safe to share across threads."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import parseaddr
from typing import Any

# http(s) URLs in plain text. Whitespace, double quotes and angle brackets delimit URIs in text (RFC 3986
# Appendix C) and never occur in one unescaped; ending at ' and ` too is a guess (mails quote 'like this').
_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?"  # a sentence may end right after a link: "Open https://x/y."
_CLOSERS = {")": "(", "]": "["}  # strip only when unbalanced, so https://x/wiki/A_(b) keeps its ")"


def _strippable(text: str, start: int, end: int) -> bool:
    last = text[end - 1]
    if last in _CLOSERS:
        return text.count(_CLOSERS[last], start, end) < text.count(last, start, end)
    return last in _TRAILING_PUNCTUATION


def url_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each http(s) URL in `text`, in order, without trailing sentence punctuation."""
    spans: list[tuple[int, int]] = []
    for match in _URL.finditer(text):
        start, end = match.span()
        while end > start and _strippable(text, start, end):
            end -= 1
        if text[start:end].rstrip("/").lower() not in ("http:", "https:"):  # a bare "https://" is no link
            spans.append((start, end))
    return spans


def extract_links(text: str) -> list[str]:
    """The http(s) URLs in `text`, in order of appearance (repeats kept)."""
    return [text[start:end] for start, end in url_spans(text)]


def normalize_address(address: str) -> str:
    """`Name <User@Example.COM>` or `<user@example.com>` -> `user@example.com`, for comparing recipients."""
    _, addr = parseaddr(address)
    return (addr or address).strip().strip("<>").lower()


@dataclass(frozen=True)
class MailMessage:
    """One accepted message: the SMTP envelope, a few parsed headers, the text body and the raw bytes."""

    id: int
    envelope_from: str  # MAIL FROM
    envelope_to: tuple[str, ...]  # RCPT TO, in the order given
    from_header: str  # the From: header, RFC 2047 words decoded ("" when absent)
    to_header: str  # the To: header, decoded ("" when absent)
    subject: str  # decoded ("" when absent)
    received_at: datetime  # when the server accepted it (UTC)
    text: str  # the text/plain body, transfer encoding and charset decoded, lines ending in "\n"
    raw: bytes = field(repr=False)  # exactly what came after DATA, dot-stuffing removed

    def as_json(self, *, include_raw: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "envelope_from": self.envelope_from,
            "envelope_to": list(self.envelope_to),
            "from": self.from_header,
            "to": self.to_header,
            "subject": self.subject,
            "received_at": self.received_at.isoformat(),
            "text": self.text,
            "links": extract_links(self.text),
        }
        if include_raw:
            data["raw"] = self.raw.decode("utf-8", "replace")
        return data


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # the header parser of policy.default can raise on rare malformed values; keep the mail
        return ""
    return "" if value is None else str(value)


def _text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown or lying charset: show what we can rather than drop the mail
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content.replace("\r\n", "\n") if isinstance(content, str) else ""


@dataclass(frozen=True)
class _Parsed:
    from_header: str
    to_header: str
    subject: str
    text: str


def _parse(raw: bytes) -> _Parsed:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)  # policy.default builds EmailMessage objects
    return _Parsed(_header(message, "From"), _header(message, "To"), _header(message, "Subject"), _text_body(message))


class MessageStore:
    """The newest `max_messages` messages. Ids keep counting up across clear() and eviction."""

    def __init__(self, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        self._changed = threading.Condition()  # its lock guards everything below; wait_for() waits on it
        self._messages: deque[MailMessage] = deque(maxlen=max_messages)  # the oldest drops off when full
        self._last_id = 0

    def add(self, envelope_from: str, envelope_to: Iterable[str], raw: bytes) -> MailMessage:
        parsed = _parse(raw)  # outside the lock: a 1 MiB mail must not stall readers
        with self._changed:
            self._last_id += 1
            message = MailMessage(
                id=self._last_id,
                envelope_from=envelope_from,
                envelope_to=tuple(envelope_to),
                from_header=parsed.from_header,
                to_header=parsed.to_header,
                subject=parsed.subject,
                received_at=datetime.now(UTC),
                text=parsed.text,
                raw=raw,
            )
            self._messages.append(message)
            self._changed.notify_all()
        return message

    def messages(self, to: str | None = None) -> list[MailMessage]:
        wanted = None if to is None else normalize_address(to)
        with self._changed:
            return [m for m in self._messages if wanted is None or _addressed_to(m, wanted)]

    def get(self, message_id: int) -> MailMessage | None:
        with self._changed:
            return next((m for m in self._messages if m.id == message_id), None)

    def clear(self) -> None:
        with self._changed:
            self._messages.clear()

    def wait_for(self, to: str, *, after_id: int, timeout: float) -> MailMessage:
        wanted = normalize_address(to)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((m for m in self._messages if m.id > after_id and _addressed_to(m, wanted)), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no message to {to} after id {after_id} within {timeout}s")
                self._changed.wait(remaining)


def _addressed_to(message: MailMessage, wanted: str) -> bool:
    return any(normalize_address(rcpt) == wanted for rcpt in message.envelope_to)
