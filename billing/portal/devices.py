"""Device cookies (OWASP, "Slow Down Online Guessing Attacks with Device Cookies").

A browser that signed in to an account gets a signed cookie naming that account and a random
nonce. Its later password checks count against the nonce's own allowance, not the account's, so a
stranger's guessing, which locks the account for browsers without the cookie, does not lock out its
owner; and a stolen cookie has an allowance of its own too. Pure code (signing only).
"""

from __future__ import annotations

import hashlib
import secrets

from billing.portal.records import normalise_email
from billing.portal.tokens import Signer, TokenError
from billing.portal.web import WebRequest

DEVICE_COOKIE = "portal_device"
DEVICE_TTL = 180 * 24 * 3600


def _account_tag(email: str) -> str:
    return hashlib.sha256(normalise_email(email).encode("utf-8")).hexdigest()[:32]


class DeviceCookies:
    def __init__(self, master: bytes, *, secure: bool) -> None:
        self._signer = Signer(master, "device")
        self._secure = "; Secure" if secure else ""

    def issue(self, email: str, now: float) -> str:
        """The Set-Cookie value of a new device cookie for the account (after a correct password)."""
        payload = {"a": _account_tag(email), "n": secrets.token_urlsafe(16)}
        token = self._signer.sign(payload, now=now, ttl_seconds=DEVICE_TTL)
        return (f"{DEVICE_COOKIE}={token}; Path=/api/portal; Max-Age={DEVICE_TTL}; HttpOnly; "
                f"SameSite=Lax{self._secure}")  # fmt: skip

    def nonce(self, req: WebRequest, email: str, now: float) -> str | None:
        """The nonce of the request's device cookie if it is genuine, unexpired and for this account."""
        raw = req.cookies.get(DEVICE_COOKIE, "")
        if not raw:
            return None
        try:
            payload = self._signer.verify(raw, now=now)
        except TokenError:
            return None
        nonce = payload.get("n")
        if payload.get("a") != _account_tag(email) or not isinstance(nonce, str):
            return None
        return nonce
