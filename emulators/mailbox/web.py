"""The mailbox's read-only web page and JSON views, served with the standard library's http.server."""

from __future__ import annotations

import html
import json
import re
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulators.mailbox.store import MailMessage, MessageStore, url_spans

_MESSAGE_PATH = re.compile(r"/messages/(\d{1,18})")
_MAX_DISCARD = 1 << 20  # read at most this much of a refused request's body before closing

# Mails are untrusted input shown in a browser: everything is escaped, and the policy forbids scripts,
# frames and remote content even if something slipped through.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # confirmation links carry tokens; do not leak the page URL either
    "Cache-Control": "no-store",
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 60rem; }
article { border: 1px solid #ccc; border-radius: 6px; padding: 0.5rem 1rem; margin: 1rem 0; }
h2 { font-size: 1.1rem; margin: 0.5rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0; }
dt { font-weight: bold; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: 0.5rem; }
"""


def linkify(text: str) -> str:
    """`text` HTML-escaped, with each http(s) URL made a link (href escaped too)."""
    out: list[str] = []
    position = 0
    for start, end in url_spans(text):
        url = text[start:end]
        out.append(html.escape(text[position:start]))
        out.append(f'<a href="{html.escape(url, quote=True)}" rel="noreferrer">{html.escape(url)}</a>')
        position = end
    out.append(html.escape(text[position:]))
    return "".join(out)


def render_page(messages: list[MailMessage], smtp_address: str, to: str | None) -> str:
    esc = html.escape
    shown = f" to {esc(to)}" if to else ""
    articles = []
    for m in messages:
        articles.append(
            f'<article id="message-{m.id}"><h2>{esc(m.subject) or "(no subject)"}</h2><dl>'
            f"<dt>To</dt><dd>{esc(', '.join(m.envelope_to))}</dd>"
            f"<dt>From</dt><dd>{esc(m.from_header or m.envelope_from)}</dd>"
            f'<dt>Received</dt><dd><time datetime="{m.received_at.isoformat()}">'
            f"{m.received_at:%Y-%m-%d %H:%M:%S} UTC</time></dd></dl>"
            f"<pre>{linkify(m.text)}</pre>"
            f'<p><a href="/messages/{m.id}">JSON with the raw message</a></p></article>'
        )
    body = "\n".join(articles) if articles else "<p>No messages yet.</p>"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Mailbox ({len(messages)})</title><style>{_STYLE}</style></head><body>"
        f"<h1>Mailbox</h1><p>{len(messages)} message(s){shown}, newest first. SMTP server: "
        f'{esc(smtp_address)}. Reload to see new mail. <a href="/messages.json">JSON</a></p>\n{body}\n</body></html>\n'
    )


class PageHandler(BaseHTTPRequestHandler):
    """GET /, GET /messages.json?to=, GET /messages/<id>; HEAD of the same; 405 for other methods."""

    # HTTP/1.0: one request per connection, so stop() leaves no keep-alive thread blocked on a socket.
    protocol_version = "HTTP/1.0"
    server_version = "Mailbox/1.0"
    store: MessageStore  # set on the subclass made per mailbox
    smtp_address = ""
    verbose = False

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._get()

    def do_HEAD(self) -> None:  # RFC 9110 §9.1: general-purpose servers MUST support GET and HEAD
        self._get()

    def _refuse(self) -> None:
        self._discard_body()
        self._send(
            405,
            _json_bytes({"error": f"method {self.command} not allowed; this page is read-only"}),
            "application/json",
            {"Allow": "GET, HEAD"},
        )

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    def _get(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        to = query["to"][0] if query.get("to") else None
        if url.path == "/":
            messages = self.store.messages(to)[::-1]
            self._send(200, render_page(messages, self.smtp_address, to).encode(), "text/html; charset=utf-8")
        elif url.path == "/messages.json":
            messages = self.store.messages(to)[::-1]
            self._send(200, _json_bytes({"messages": [m.as_json() for m in messages]}), "application/json")
        elif (match := _MESSAGE_PATH.fullmatch(url.path)) and (found := self.store.get(int(match[1]))):
            self._send(200, _json_bytes(found.as_json(include_raw=True)), "application/json")
        elif match:
            self._send(
                404, _json_bytes({"error": f"no message {match[1]} (unknown, cleared or evicted)"}), "application/json"
            )
        else:
            self._send(404, _json_bytes({"error": f"no page {url.path}; see / and /messages.json"}), "application/json")

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": content_type, **_SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _discard_body(self) -> None:
        # Closing with unread request bytes makes the kernel reset the connection, and the client could
        # lose the 405 answer; read a bounded body first.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < length <= _MAX_DISCARD:
            self.rfile.read(length)


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, indent=2, ensure_ascii=False).encode()
