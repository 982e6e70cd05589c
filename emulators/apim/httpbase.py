"""A small threaded HTTP(S) server on loopback that hands each request to a plain function."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devstack.ports import LOOPBACK

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str  # without the query string, percent-decoding left to the router
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str  # scheme://host:port of this server, for links we hand back

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body)

    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for part in (self.header("cookie") or "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                jar[name] = value
        return jar


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        merged = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, json.dumps(payload).encode(), merged)

    @classmethod
    def html(cls, text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, text.encode(), {"Content-Type": "text/html; charset=utf-8", **(headers or {})})

    @classmethod
    def redirect(cls, location: str, headers: dict[str, str] | None = None) -> Response:
        return cls(302, b"", {"Location": location, **(headers or {})})


Handler = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: Handler
    base_url: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Port probes and clients that hang up mid-handshake are normal here; no tracebacks on stderr.
        log.debug("connection from %s failed", client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; no 40 ms stalls
    timeout = 60  # idle keep-alive connections do not hold a thread forever
    server: _Server

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            # The TLS handshake runs here, in the connection's own thread, so a slow or silent client
            # cannot stall the accept loop.
            self.connection.do_handshake()

    def _handle(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Response.json({"error": {"code": "RequestTooLarge", "message": "body too large"}}, 413))
            return
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=split.path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=self.server.base_url,
        )
        try:
            response = self.server.app(request)
        except Exception:  # a bug in the emulator must not kill the connection silently
            log.exception("emulator handler failed for %s %s", self.command, split.path)
            response = Response.json(
                {"error": {"code": "InternalServerError", "message": "emulator internal error"}}, 500
            )
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        body = b"" if self.command == "HEAD" else response.body
        self.send_header("Content-Length", str(len(response.body) if self.command != "HEAD" else 0))
        self.end_headers()
        if body:
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        # Query strings may carry keys or tokens: log the path only.
        log.debug("%s %s -> %s", self.command, urlsplit(self.path).path, args[1] if len(args) > 1 else "")


class LoopbackServer:
    """Serves `app` on 127.0.0.1:port in a background thread, optionally over TLS."""

    def __init__(self, app: Handler, port: int, *, tls: tuple[str, str] | None = None) -> None:
        self._server = _Server((LOOPBACK, port), _RequestHandler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile=tls[0], keyfile=tls[1])
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            scheme = "https"
        self.port = int(self._server.server_address[1])
        self._server.app = app
        self._server.base_url = f"{scheme}://{LOOPBACK}:{self.port}"
        # A short poll interval keeps stop() quick; the loop is idle between polls.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"apim-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return self._server.base_url

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
