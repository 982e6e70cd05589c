"""The development host's HTTP server: FunctionApp HTTP routes plus the admin invoke endpoint."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from devhost.indexing import indexed_functions
from devhost.routes import RouteTemplate
from devhost.triggers import invoke_non_http

log = logging.getLogger("devhost")
ROUTE_PREFIX = "api"
MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's own request size limit


@dataclass(frozen=True)
class HttpRoute:
    name: str
    template: RouteTemplate
    methods: frozenset[str]  # empty: any method
    arg_name: str
    handler: Callable[..., Any]


def http_routes(app: func.FunctionApp) -> list[HttpRoute]:
    routes = []
    for function in indexed_functions(app):
        trigger = function.get_trigger()
        if trigger.type != "httpTrigger":
            continue
        route = getattr(trigger, "route", None) or function.get_function_name()
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in (getattr(trigger, "methods", None) or []))
        routes.append(
            HttpRoute(
                function.get_function_name(),
                RouteTemplate.compile(route.strip("/")),
                methods,
                trigger.name,
                function.get_user_function(),
            )
        )
    # Literal routes win over templated ones, as in the Functions host.
    routes.sort(key=lambda r: (r.template.template.count("{"), -len(r.template.template)))
    return routes


def call_function(handler: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    result = handler(**kwargs)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


class DevHost:
    def __init__(self, app: func.FunctionApp, *, host: str = "127.0.0.1", port: int = 7071) -> None:
        self.app = app
        self.routes = http_routes(app)
        self.functions = {f.get_function_name(): f for f in indexed_functions(app)}
        self._server = ThreadingHTTPServer((host, port), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DevHost:
        self._thread = threading.Thread(target=self._server.serve_forever, name="devhost", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def dispatch_http(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> func.HttpResponse:
        parts = urlsplit(raw_path)
        path = parts.path.strip("/")
        if not (path == ROUTE_PREFIX or path.startswith(ROUTE_PREFIX + "/")):
            return _plain(404, "not found")
        path = path[len(ROUTE_PREFIX) :].strip("/")
        allowed: set[str] = set()
        for route in self.routes:
            params = route.template.match(path)
            if params is None:
                continue
            if route.methods and method not in route.methods:
                allowed |= route.methods
                continue
            url = f"http://{headers.get('host', '127.0.0.1')}{raw_path}"
            request = func.HttpRequest(
                method,
                url,
                headers=headers,
                params=dict(parse_qsl(parts.query, keep_blank_values=True)),
                route_params=params,
                body=body,
            )
            result: func.HttpResponse = call_function(route.handler, {route.arg_name: request})
            return result
        if allowed:
            return _plain(405, "method not allowed", {"Allow": ", ".join(sorted(allowed))})
        return _plain(404, "not found")


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(text, status_code=status, headers=headers, mimetype="text/plain")


def _handler_class(host: DevHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "devhost"
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK stall every keep-alive answer by about 40 ms.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._send(_plain(413, "request body too large"))
                return
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            # As Azure's front end does: the caller's address and port are appended to any
            # X-Forwarded-For the caller sent, so the app can trust only the last entry.
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            sent = headers.get("x-forwarded-for", "")
            headers["x-forwarded-for"] = f"{sent}, {peer}" if sent else peer
            try:
                if self.path.startswith("/admin/functions/") and self.command == "POST":
                    response = self._admin_invoke(body)
                else:
                    response = host.dispatch_http(self.command, self.path, headers, body)
            except Exception:
                # As the Functions host does: an unhandled error is a bare 500, details only in the log.
                log.exception("function failed: %s %s", self.command, self.path.split("?")[0])
                response = _plain(500, "internal server error")
            self._send(response)

        def _admin_invoke(self, body: bytes) -> func.HttpResponse:
            name = self.path[len("/admin/functions/") :].split("?")[0].strip("/")
            function = host.functions.get(name)
            if function is None:
                return _plain(404, f"no function named '{name}'")
            try:
                payload = json.loads(body or b"{}")
            except json.JSONDecodeError:
                return _plain(400, 'body must be JSON: {"input": "..."}')
            invoke_non_http(function, str(payload.get("input", "")))
            return func.HttpResponse(status_code=202)

        def _send(self, response: func.HttpResponse) -> None:
            payload = response.get_body() or b""
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            if response.mimetype and "content-type" not in {k.lower() for k in response.headers.keys()}:  # noqa: SIM118 - HttpResponseHeaders iterates items
                self.send_header("Content-Type", f"{response.mimetype}; charset={response.charset or 'utf-8'}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    return Handler
