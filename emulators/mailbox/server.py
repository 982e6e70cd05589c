"""`Mailbox`: a real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives, plus a page to read it."""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import threading
from collections.abc import Awaitable
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from emulators.mailbox.store import MailMessage, MessageStore, extract_links
from emulators.mailbox.web import PageHandler

LOOPBACK = "127.0.0.1"
DEFAULT_MAX_MESSAGES = 1000
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB: the app's mails are a few KiB; this only stops runaway input
_GREETING_HOST = "mailbox.localhost"  # without it aiosmtpd calls socket.getfqdn() (a DNS lookup) per connection

# aiosmtpd logs these WARNINGs on every connection / every login: the first because auth is on without
# TLS (its one-time UserWarning saying so stays visible; the README states the risk), the second from its
# own code setting a deprecated attribute. Dropping the repeats keeps `make run` readable.
_REPEATED_LOG_WARNINGS = frozenset(
    {
        "auth_required == True but auth_require_tls == False",
        "Session.login_data is deprecated and will be removed in version 2.0",
    }
)


class _DropRepeatedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _REPEATED_LOG_WARNINGS


logging.getLogger("mail.log").addFilter(_DropRepeatedWarnings())


class _Handler:
    """aiosmtpd handler: every message that completes DATA goes into the store."""

    def __init__(self, store: MessageStore) -> None:
        self._store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._store.add(envelope.mail_from or "", envelope.rcpt_tos, envelope.original_content or b"")
        return "250 Message accepted for delivery"


class _PreboundController(Controller):
    """A Controller serving on a socket we bound ourselves: port 0 then needs no free-port guess (no race),
    and the real port is known before aiosmtpd's start-up self-test connects to it."""

    def __init__(self, handler: _Handler, sock: socket.socket, **smtp_kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **smtp_kwargs)
        self._sock = sock

    def factory(self) -> SMTP:
        # Hand the session its loop: without one, SMTP() looks it up inside warnings.catch_warnings() +
        # simplefilter("error"), which swaps the process-wide warning filters from this thread on every
        # connection (racing the main thread's filters, and re-showing each warning every time).
        return SMTP(self.handler, loop=self.loop, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        # BaseController documents _create_server as the method subclasses override to bind the listener.
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As asyncio's create_server does: a restart on the same port must not wait out TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
    except OSError:
        sock.close()
        raise
    return sock


class Mailbox:
    """An SMTP server on 127.0.0.1 that keeps every accepted message, with a read-only web page.

    `auth=(user, password)` makes SMTP AUTH (PLAIN, LOGIN) mandatory before MAIL FROM; None accepts
    anyone and offers no AUTH. Ports of 0 pick free ones at start(); a restart reuses the same ports.
    """

    def __init__(
        self,
        smtp_port: int = 0,
        web_port: int = 0,
        *,
        auth: tuple[str, str] | None = None,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        verbose: bool = False,
    ) -> None:
        if auth is not None and (len(auth) != 2 or not all(isinstance(x, str) and x for x in auth)):
            raise ValueError("auth must be None or a (user name, password) pair of non-empty strings")
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be at least 1, not {max_message_bytes}")
        self._store = MessageStore(max_messages)
        self._smtp_port = smtp_port
        self._web_port = web_port
        self._auth = auth
        self._max_message_bytes = max_message_bytes
        self._verbose = verbose
        self._controller: _PreboundController | None = None
        self._web: ThreadingHTTPServer | None = None
        self._web_thread: threading.Thread | None = None

    # ---- addresses ------------------------------------------------------------------------------
    @property
    def smtp_host(self) -> str:
        return LOOPBACK

    @property
    def smtp_port(self) -> int:
        if not self._smtp_port:
            raise RuntimeError("the mailbox has not been started, so its SMTP port is not chosen yet")
        return self._smtp_port

    @property
    def web_url(self) -> str:
        if not self._web_port:
            raise RuntimeError("the mailbox has not been started, so its web port is not chosen yet")
        return f"http://{LOOPBACK}:{self._web_port}"

    def app_settings(self) -> dict[str, str]:
        """The app's SMTP settings (billing/config.py) pointing at this mailbox: no STARTTLS locally."""
        user, password = self._auth or ("", "")
        return {
            "SMTP_HOST": self.smtp_host,
            "SMTP_PORT": str(self.smtp_port),
            "SMTP_USERNAME": user,
            "SMTP_PASSWORD": password,
            "SMTP_STARTTLS": "false",
        }

    # ---- reading the mail -----------------------------------------------------------------------
    def messages(self, to: str | None = None) -> list[MailMessage]:
        """Kept messages, oldest first; with `to`, only those with that envelope recipient (any case)."""
        return self._store.messages(to)

    def latest(self, to: str) -> MailMessage | None:
        found = self._store.messages(to)
        return found[-1] if found else None

    def wait_for(self, to: str, *, after_id: int = 0, timeout: float = 10.0) -> MailMessage:
        """The oldest message to `to` with an id above `after_id`, waiting up to `timeout` s for it to arrive.

        For mail sent by another process (the app): no polling loop or sleep in the test. TimeoutError if none.
        """
        return self._store.wait_for(to, after_id=after_id, timeout=timeout)

    def clear(self) -> None:
        """Forget every message; ids keep counting up, so an old id never names a new message."""
        self._store.clear()

    @staticmethod
    def links(message: MailMessage) -> list[str]:
        """The http(s) URLs in the message's text body, in order."""
        return extract_links(message.text)

    # ---- life cycle -----------------------------------------------------------------------------
    def start(self) -> Mailbox:
        if self._controller is not None:
            return self
        controller = self._start_smtp()
        try:
            self._start_web()
        except BaseException:
            controller.stop()
            raise
        self._controller = controller
        return self

    def _start_smtp(self) -> _PreboundController:
        sock = _bind(self._smtp_port)
        smtp_kwargs: dict[str, Any] = {"data_size_limit": self._max_message_bytes, "server_hostname": _GREETING_HOST}
        if self._auth is not None:
            # Local only: there is no TLS on the loopback mailbox, so AUTH must be allowed in clear text
            # (aiosmtpd refuses it with 538 otherwise). In Azure the app logs in to ACS after STARTTLS.
            smtp_kwargs.update(auth_required=True, auth_require_tls=False, authenticator=self._authenticate)
        controller = _PreboundController(_Handler(self._store), sock, **smtp_kwargs)
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)  # aiosmtpd leaves the clean-up of a failed start() to the caller
            sock.close()
            raise
        self._smtp_port = controller.port
        return controller

    def _start_web(self) -> None:
        handler = type(
            "MailboxPageHandler",
            (PageHandler,),
            {"store": self._store, "smtp_address": f"{LOOPBACK}:{self._smtp_port}", "verbose": self._verbose},
        )
        server = ThreadingHTTPServer((LOOPBACK, self._web_port), handler)
        server.daemon_threads = True
        self._web_port = int(server.server_address[1])
        self._web = server
        self._web_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="mailbox-web", daemon=True
        )
        self._web_thread.start()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self._auth is not None
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = (x.encode() for x in self._auth)
        # Both compared, constant time: the answer must not tell which of the two was wrong.
        ok = hmac.compare_digest(auth_data.login, user) & hmac.compare_digest(auth_data.password, password)
        return AuthResult(success=bool(ok), handled=False, auth_data=auth_data if ok else None)

    def stop(self) -> None:
        """Stop both servers and close their listening sockets. Messages are kept for a restart."""
        if self._web is not None:
            self._web.shutdown()
            self._web.server_close()
            self._web = None
        if self._web_thread is not None:
            self._web_thread.join(timeout=5)
            self._web_thread = None
        if self._controller is not None:
            self._controller.stop()  # cancels the sessions, closes the listener and joins the loop's thread
            self._controller = None

    def __enter__(self) -> Mailbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
