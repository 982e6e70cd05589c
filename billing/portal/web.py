"""Requests, responses, pages and the session/CSRF cookie of the portal, independent of the Functions SDK.

One cookie (`portal_session`) carries a signed {csrf nonce, user id}; forms carry a CSRF token
signed for that nonce (signed double submit), so every POST proves it came from a page of ours.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from billing.portal.tokens import Signer, TokenError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
SESSION_COOKIE = "portal_session"
SESSION_TTL = 8 * 3600
CSRF_TTL = 2 * 3600

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))


@dataclass(frozen=True)
class WebRequest:
    method: str
    query: Mapping[str, str]
    form: Mapping[str, str]
    cookies: Mapping[str, str]
    accept: str = ""
    client: str = "unknown"  # the caller's address as the front end reports it (billing.portal.clients)

    @property
    def wants_html(self) -> bool:
        return "text/html" in self.accept


@dataclass
class WebResponse:
    status: int
    body: str
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)  # Set-Cookie values, one header each

    def with_cookie(self, cookie: str) -> WebResponse:
        self.cookies.append(cookie)
        return self


@dataclass(frozen=True)
class Session:
    nonce: str
    uid: str | None


class Sessions:
    """Reads and issues the session cookie and CSRF tokens."""

    def __init__(self, keys: Sequence[bytes], *, secure: bool) -> None:
        self._cookie = Signer(keys, "session")
        self._csrf = Signer(keys, "csrf")
        self.secure = secure

    def read(self, req: WebRequest, now: float) -> Session | None:
        raw = req.cookies.get(SESSION_COOKIE, "")
        if not raw:
            return None
        try:
            payload = self._cookie.verify(raw, now=now)
        except TokenError:
            return None
        nonce, uid = payload.get("n"), payload.get("u")
        if not isinstance(nonce, str) or (uid is not None and not isinstance(uid, str)):
            return None
        return Session(nonce, uid)

    def ensure(self, req: WebRequest, now: float) -> tuple[Session, str | None]:
        """The current session, or a new anonymous one and the Set-Cookie value that starts it."""
        current = self.read(req, now)
        if current is not None:
            return current, None
        return self.start(None, now)

    def start(self, uid: str | None, now: float) -> tuple[Session, str]:
        # A fresh nonce on every sign-in: a nonce planted before sign-in is worthless after it.
        session = Session(secrets.token_urlsafe(16), uid)
        token = self._cookie.sign({"n": session.nonce, "u": uid}, now=now, ttl_seconds=SESSION_TTL)
        return session, self._set_cookie(token, SESSION_TTL)

    def clear_cookie(self) -> str:
        return self._set_cookie("", 0)

    def _set_cookie(self, value: str, max_age: int) -> str:
        secure = "; Secure" if self.secure else ""
        return f"{SESSION_COOKIE}={value}; Path=/api; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"

    def csrf_token(self, session: Session, now: float) -> str:
        return self._csrf.sign({"n": session.nonce}, now=now, ttl_seconds=CSRF_TTL)

    def check_csrf(self, req: WebRequest, now: float) -> Session | None:
        """The session if the POST carries a CSRF token made for its cookie; None otherwise."""
        session = self.read(req, now)
        token = req.form.get("csrf_token", "")
        if session is None or not token:
            return None
        try:
            payload = self._csrf.verify(token, now=now)
        except TokenError:
            return None
        ok = isinstance(payload.get("n"), str) and secrets.compare_digest(payload["n"], session.nonce)
        return session if ok else None


def render(template: str, status: int = 200, cookie: str | None = None, **context: Any) -> WebResponse:
    body = _env.get_template(template).render(**context)
    headers = {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        # No form-action: the subscribe form's answer redirects to Stripe's own (or the emulator's) host.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    }
    return WebResponse(status, body, headers=headers, cookies=[cookie] if cookie else [])


def redirect(location: str, cookie: str | None = None) -> WebResponse:
    headers = {"Location": location, "Cache-Control": "no-store"}
    return WebResponse(303, "", "text/plain; charset=utf-8", headers, [cookie] if cookie else [])


def expired_form(
    req: WebRequest, portal_url: str, again: str = "Go back to the developer portal and start again."
) -> WebResponse:
    """A form whose CSRF token is missing, forged or expired: 403, and what to do instead."""
    return problem(
        req, 403, "csrf", f"This form has expired or did not come from this site. {again}", portal_url=portal_url
    )


def problem(req: WebRequest, status: int, code: str, message: str, *, portal_url: str, title: str = "") -> WebResponse:
    """An error: a short page for browsers, JSON for API-style callers. Never a traceback or a secret."""
    if req.wants_html:
        return render(
            "message.html",
            status,
            title=title or _TITLES.get(status, "Something went wrong"),
            paragraphs=[message],
            portal_url=portal_url,
            link_url=portal_url,
            link_text="Back to the developer portal",
        )
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
    return WebResponse(status, body, "application/json", {"Cache-Control": "no-store"})


def too_many(response: WebResponse, retry_after: int) -> WebResponse:
    """The answer with the Retry-After header that a 429 or 503 carries."""
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


_TITLES = {
    400: "This request is not valid",
    401: "This link is not valid",
    403: "This form has expired",
    404: "Not found",
    409: "Already done",
    429: "Too many attempts",
    503: "Not available yet",
}
