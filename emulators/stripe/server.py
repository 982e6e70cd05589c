"""The HTTP server, its request pipeline (faults, auth, idempotency, routing), and `StripeEmulator`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import traceback
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from emulators.stripe import meter_errors, pages, schedules
from emulators.stripe.core import API_VERSION, Config, Core
from emulators.stripe.faults import FaultSettings
from emulators.stripe.render import expand_paths, render
from emulators.stripe.resources import (
    catalog,
    checkout,
    customers,
    events_v2,
    invoices,
    meters,
    misc,
    portal,
    subscriptions,
)
from emulators.stripe.resources.misc import add_endpoint
from emulators.stripe.routes import Request, match
from emulators.stripe.store import random_token
from emulators.stripe.wire import StripeError, parse_form, validate

_RESOURCES = (
    catalog,
    checkout,
    customers,
    events_v2,
    invoices,
    meters,
    misc,
    portal,
    subscriptions,
    schedules,
)  # register routes
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
# Config fields that POST /_emulator/settings may change at run time.
_SETTINGS = ("search_lag_seconds", "meter_error_window_seconds", "idempotency_ttl", "finalize_after")
# The Dashboard's invoice finalization grace period: "You can set a delay of up to 72 hours (3 days)."
# (docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period)
MAX_FINALIZE_AFTER = 72 * 3600


def check_finalize_after(value: object) -> int:
    """The grace period in whole seconds, or ValueError saying what Stripe allows."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FINALIZE_AFTER:
        raise ValueError(
            f"finalize_after (the invoice finalization grace period) must be whole seconds from 0 to "
            f"{MAX_FINALIZE_AFTER} (72 hours), not {value!r}"
        )
    return value


class WebhookEndpoint(NamedTuple):
    id: str
    secret: str


def _redact(key: str) -> str:
    return f"{key[:8]}****{key[-4:]}" if len(key) > 12 else "****"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small JSON answers must not wait for delayed ACKs
    server_version = "StripeEmulator/1.0"
    core: Core  # set on the subclass made per emulator
    verbose = False

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # ---- plumbing -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        headers = {
            "Content-Type": "application/json",
            "Request-Id": f"req_{random_token(14)}",
            "Stripe-Version": API_VERSION,
            **(extra or {}),
        }
        self._send(status, json.dumps(payload, indent=2).encode(), headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        body = self._body()
        try:
            if path.startswith(("/v1/", "/v2/")):
                self._api(method, path, url.query, body)
            elif path.startswith("/_emulator/"):
                self._control(method, path, url.query, body)
            else:
                self._page(method, path, body)
        except StripeError as exc:
            extra = {} if exc.should_retry is None else {"Stripe-Should-Retry": str(exc.should_retry).lower()}
            self._json(exc.status, exc.body(), extra)
        except Exception as exc:  # a bug in the emulator: answer like Stripe's 500, keep the detail for /health
            self.core.scheduler.errors.append("".join(traceback.format_exception(exc))[-2000:])
            self._json(
                500,
                StripeError(f"The emulator failed: {type(exc).__name__}: {exc}", status=500, type="api_error").body(),
            )

    # ---- the API --------------------------------------------------------------------------------
    def _authenticate(self, path: str) -> None:
        header = self.headers.get("Authorization", "")
        key = ""
        if header.startswith("Bearer "):
            key = header[7:].strip()
        elif header.startswith("Basic "):
            try:
                key = base64.b64decode(header[6:]).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        if path == "/v2/billing/meter_event_stream":
            expires = self.core.meter_sessions.get(key)
            if expires is None or expires < self.core.now():
                raise StripeError(
                    "The meter event session token is missing, invalid or expired; create a new "
                    "session with POST /v2/billing/meter_event_session.",
                    status=401,
                    type="invalid_request_error",
                    code="billing_meter_event_session_expired",
                )
            return
        if not key:
            raise StripeError(
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                status=401,
            )
        if key != self.core.config.api_key:
            raise StripeError(f"Invalid API Key provided: {_redact(key)}", status=401, code="api_key_invalid")

    def _api(self, method: str, path: str, query: str, body: bytes) -> None:  # noqa: PLR0912
        core = self.core
        core.faults.before_request()
        self._authenticate(path)
        version = self.headers.get("Stripe-Version")
        if version and not _VERSION.match(version):
            raise StripeError(f"Invalid Stripe API version: {version}", param="Stripe-Version")
        v2 = path.startswith("/v2/")
        body_json: Any = None
        if method == "POST":
            text = body.decode("utf-8", "replace")
            if v2:
                try:
                    body_json = json.loads(text) if text.strip() else {}
                except json.JSONDecodeError:
                    raise StripeError("The request body is not valid JSON.") from None
                params: dict[str, Any] = {}
            else:
                params = parse_form(text)
        else:
            params = parse_form(query)
        found = match(method, path)
        if found is None:
            raise StripeError(
                f"Unrecognized request URL ({method}: {path}). The emulator does not implement this endpoint.",
                status=404,
            )
        if found is False:
            raise StripeError(
                f"Unrecognized request URL ({method}: {path}): this path takes another HTTP method.", status=405
            )
        assert isinstance(found, tuple)
        handler, args = found
        idem_key = self.headers.get("Idempotency-Key") if method == "POST" else None
        fingerprint = hashlib.sha256(f"{method} {path} ".encode() + body).hexdigest()
        with core.store.lock:
            if idem_key and self._replayed(idem_key, fingerprint):
                return
            req = Request(core, method, path, args, params, body_json, dict(self.headers))
            try:
                result = handler(req)
                if method != "GET" and isinstance(result, dict):
                    core.touch(result)  # a write the search index sees later (events touch what they carry)
                status, payload = 200, render(core, result, expand_paths(params.get("expand")))
            except StripeError as exc:
                if not idem_key or exc.status != 402:
                    raise
                status, payload = exc.status, exc.body()
            encoded = json.dumps(payload, indent=2).encode()
            if idem_key:
                core.idempotency[idem_key] = (fingerprint, status, encoded, core.wall())
        self._send(
            status,
            encoded,
            {
                "Content-Type": "application/json",
                "Request-Id": f"req_{random_token(14)}",
                "Stripe-Version": API_VERSION,
            },
        )

    def _replayed(self, idem_key: str, fingerprint: str) -> bool:
        """Answer a reused Idempotency-Key with the first answer (True), unless it expired (False)."""
        core = self.core
        cached = core.idempotency.get(idem_key)
        if cached is not None and cached[3] <= core.wall() - core.config.idempotency_ttl:
            # "We generate a new request if a key is reused after the original is pruned."
            del core.idempotency[idem_key]
            cached = None
        if cached is None:
            return False
        if cached[0] != fingerprint:
            raise StripeError(
                "Keys for idempotent requests can only be used with the same parameters they were first "
                f"used with. Try using a key other than '{idem_key}' if you meant to execute a different "
                "request.",
                type="idempotency_error",
            )
        self._send(
            cached[1],
            cached[2],
            {"Content-Type": "application/json", "Idempotent-Replayed": "true", "Stripe-Version": API_VERSION},
        )
        return True

    # ---- control endpoints ------------------------------------------------------------------------
    def _control(self, method: str, path: str, query: str, body: bytes) -> None:
        core = self.core
        if self._emulation_control(method, path, body):
            return
        if path == "/_emulator/health" and method == "GET":
            self._json(200, {"status": "ok", "errors": core.scheduler.errors[-20:]})
        elif path == "/_emulator/faults" and method == "GET":
            self._json(200, core.faults.settings.as_dict())
        elif path == "/_emulator/faults" and method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of fault settings")
                core.faults.settings.update(changes)
            except ValueError as exc:
                self._json(400, {"error": {"type": "invalid_request_error", "message": str(exc)}})
                return
            core.faults.reseed()
            self._json(200, core.faults.settings.as_dict())
        elif path == "/_emulator/webhooks/pending" and method == "GET":
            self._json(200, {"pending": core.deliverer.pending()})
        elif path == "/_emulator/webhooks" and method == "GET":
            self._json(200, core.deliverer.describe())
        elif path == "/_emulator/webhook_endpoints" and method == "POST":
            try:
                spec = json.loads(body or b"{}")
                url = spec["url"]
            except (ValueError, KeyError, TypeError):
                self._json(
                    400,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": 'Send JSON {"url": ..., "secret": optional, "enabled_events": optional list}.',
                        }
                    },
                )
                return
            with core.store.lock:
                endpoint = add_endpoint(core, url, spec.get("enabled_events") or ["*"], spec.get("secret"))
            self._json(200, {"id": endpoint["id"], "url": url, "secret": endpoint["_secret"]})
        else:
            self._json(
                404,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "message": f"Unknown control endpoint {method} {path}; see README.md.",
                    }
                },
            )

    def _emulation_control(self, method: str, path: str, body: bytes) -> bool:
        """Settings, the emulator's clock, pending meter error reports, portal settings; False: not one of these."""
        core = self.core
        if path == "/_emulator/settings" and method in ("GET", "POST"):
            self._settings(method, body)
        elif path == "/_emulator/clock/advance" and method == "POST":
            try:
                seconds = float(json.loads(body or b"{}")["seconds"])
                core.advance_wall_clock(seconds)
            except (ValueError, KeyError, TypeError) as exc:
                self._json(
                    400,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": f'Send JSON {{"seconds": n >= 0}} ({exc}).',
                        }
                    },
                )
                return True
            self._json(200, {"now": core.wall()})
        elif path == "/_emulator/meter_errors/flush" and method == "POST":
            with core.store.lock:
                sent = meter_errors.flush(core)
            self._json(200, {"sent": [e["id"] for e in sent]})
        elif path == "/_emulator/billing_portal/default_configuration" and method == "POST":
            try:
                spec = json.loads(body or b"{}")
                if not isinstance(spec, dict):
                    raise ValueError("the body must be a JSON object")
                with core.store.lock:
                    config = portal.save_settings(core, spec or portal.DASHBOARD_DEFAULTS)
            except (ValueError, StripeError) as exc:
                self._json(400, {"error": {"type": "invalid_request_error", "message": str(exc)}})
                return True
            self._json(200, render(core, config, []))
        else:
            return False
        return True

    def _settings(self, method: str, body: bytes) -> None:
        """Runtime settings: GET reads them, POST patches them with JSON."""
        config = self.core.config
        if method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of settings")
                for name, value in changes.items():
                    if name not in _SETTINGS:
                        raise ValueError(f"unknown setting {name!r}; known: {', '.join(_SETTINGS)}")
                    if name == "finalize_after":
                        check_finalize_after(value)
                    elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                        raise ValueError(f"{name} must be a number >= 0")
                for name, value in changes.items():
                    setattr(config, name, value)
            except ValueError as exc:
                self._json(400, {"error": {"type": "invalid_request_error", "message": str(exc)}})
                return
        self._json(200, {name: getattr(config, name) for name in _SETTINGS})

    # ---- hosted pages -------------------------------------------------------------------------------
    def _page(self, method: str, path: str, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        with self.core.store.lock:
            if m := re.fullmatch(r"/c/pay/([^/]+)", path):
                status, headers, doc = pages.checkout_page(self.core, m[1], method, text)
            elif m := re.fullmatch(r"/i/([^/]+)", path):
                status, headers, doc = pages.invoice_page(self.core, m[1], method, text)
            elif m := re.fullmatch(r"/p/session/([^/]+)(?:/(cancel|update|payment_method))?", path):
                status, headers, doc = pages.portal_page(self.core, m[1], method, text, m[2] or "")
            elif path == "/":
                status, headers, doc = 200, {"Content-Type": "text/plain"}, "Stripe emulator\n"
            else:
                status, headers, doc = 404, {"Content-Type": "text/plain"}, "Not found\n"
        self._send(status, doc.encode(), headers)


class StripeEmulator:
    """A Stripe emulator on 127.0.0.1, served from background threads of this process."""

    def __init__(
        self,
        port: int = 0,
        *,
        api_key: str = "sk_test_emulator",
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        faults: FaultSettings | None = None,
        config: Config | None = None,
        host: str = "127.0.0.1",
        verbose: bool = False,
        search_lag_seconds: float | None = None,
        meter_error_window_seconds: float | None = None,
        portal_settings: dict[str, Any] | None = None,
    ) -> None:
        """`search_lag_seconds`, `meter_error_window_seconds` and `portal_settings` override `config`'s.

        Their defaults are Stripe's: search lags a minute, and the customer portal has no default
        configuration until its settings are saved (pass `portal.DASHBOARD_DEFAULTS` or your own).
        """
        self.config = config or Config()
        self.config.api_key = api_key
        if search_lag_seconds is not None:
            self.config.search_lag_seconds = search_lag_seconds
        if meter_error_window_seconds is not None:
            self.config.meter_error_window_seconds = meter_error_window_seconds
        if portal_settings is not None:
            self.config.portal_settings = portal_settings
        self.core = Core(self.config, faults or FaultSettings())
        if self.config.portal_settings is not None:
            self.save_portal_settings(self.config.portal_settings)
        self.host = host
        self.port = port
        self._webhook = (webhook_url, webhook_secret)
        self.webhook_secret = webhook_secret
        self._verbose = verbose
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_key(self) -> str:
        return self.config.api_key

    def start(self) -> StripeEmulator:
        handler = type("Handler", (_Handler,), {"core": self.core, "verbose": self._verbose})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.core.base_url = self.base_url
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripe-emulator-http", daemon=True
        )
        self._thread.start()
        self.core.deliverer.start()
        self.core.scheduler.start_ticker()
        url, secret = self._webhook
        if url:
            self.webhook_secret = self.add_webhook_endpoint(url, secret).secret
        return self

    def add_webhook_endpoint(
        self, url: str, secret: str | None = None, enabled_events: list[str] | None = None
    ) -> WebhookEndpoint:
        # Without an explicit secret, reuse the one given at construction so app_settings() stays right.
        with self.core.store.lock:
            endpoint = add_endpoint(self.core, url, enabled_events or ["*"], secret or self.webhook_secret)
        if self.webhook_secret is None:
            self.webhook_secret = endpoint["_secret"]
        return WebhookEndpoint(endpoint["id"], endpoint["_secret"])

    def add_event_destination(
        self, url: str, enabled_events: list[str], event_payload: str = "thin", name: str = "emulator"
    ) -> WebhookEndpoint:
        """A webhook event destination (what `POST /v2/core/event_destinations` makes): (id, signing secret)."""
        with self.core.store.lock:
            destination = events_v2.add_destination(self.core, name, url, enabled_events, event_payload)
        return WebhookEndpoint(destination["id"], destination["_secret"])

    def save_portal_settings(self, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """Save the customer portal settings as in the Dashboard: the default configuration.

        `settings` has the shape of `billing_portal.configurations.create` parameters; None saves
        the Dashboard's initial settings (`portal.DASHBOARD_DEFAULTS`).
        """
        with self.core.store.lock:
            return portal.save_settings(self.core, settings or portal.DASHBOARD_DEFAULTS)

    def save_invoice_finalization_grace_period(self, seconds: int) -> None:
        """The Dashboard's Invoice settings, "Invoice finalization grace period": how long drafts of
        automatic collection stay drafts (`automatically_finalizes_at`); 0 to 72 hours, default 1 hour.
        Drafts made before keep the time they were given."""
        with self.core.store.lock:
            self.config.finalize_after = check_finalize_after(seconds)

    def advance_wall_clock(self, seconds: float) -> None:
        """Move the emulator's own clock forward (see `Core.advance_wall_clock`); test clocks stay put."""
        self.core.advance_wall_clock(seconds)

    def flush_meter_error_reports(self) -> list[dict[str, Any]]:
        """Send the pending meter error reports of the v2 stream now; the thin events sent."""
        with self.core.store.lock:
            return meter_errors.flush(self.core)

    def client(self, **options: Any) -> Any:
        """A `stripe.StripeClient` whose every base address points here."""
        import stripe  # noqa: PLC0415 - only callers of client() need the SDK

        options.setdefault("max_network_retries", 0)
        return stripe.StripeClient(
            self.api_key,
            base_addresses={
                "api": self.base_url,
                "files": self.base_url,
                "connect": self.base_url,
                "meter_events": self.base_url,
            },
            **options,
        )

    def bulk_create_customers(self, specs: Iterable[tuple[str, dict[str, str]]]) -> list[str]:
        """Seed many customers at once for load tests: (email, metadata) pairs in, their new ids out, in order.

        Each is made by the `POST /v1/customers` handler itself, so the object, its id, what
        `customers.search` finds and the `customer.created` event are those of `customers.create`
        with the same email and metadata, without 33,000 HTTP requests. All specs are checked
        before any customer is made; a bad one raises ValueError naming it.
        """
        core = self.core
        with core.store.lock:  # one request's worth of locking, as the HTTP pipeline holds it per request
            params = []
            for n, spec in enumerate(specs):
                try:
                    email, meta = spec
                    params.append(validate({"email": email, "metadata": meta}, customers.CUSTOMER_FIELDS))
                except (TypeError, ValueError):
                    raise ValueError(f"specs[{n}] must be an (email, metadata dict) pair, not {spec!r}") from None
                except StripeError as exc:
                    raise ValueError(f"specs[{n}]: {exc.message}") from None
            return [customers.create_customer(Request(core, "POST", "/v1/customers", (), p))["id"] for p in params]

    def wait_for_webhooks_idle(self, timeout: float = 30) -> bool:
        """Block until every queued delivery was answered 2xx or given up; TimeoutError otherwise."""
        if not self.core.deliverer.wait_idle(timeout):
            raise TimeoutError(f"{self.core.deliverer.pending()} webhook deliveries still pending after {timeout}s")
        return True

    def app_settings(self) -> dict[str, str]:
        return {
            "STRIPE_API_KEY": self.api_key,
            "STRIPE_API_BASE": self.base_url,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret or "",
        }

    def stop(self) -> None:
        self.core.scheduler.stop()
        self.core.deliverer.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StripeEmulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
