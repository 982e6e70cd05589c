"""Device cookies (OWASP, "Slow Down Online Guessing Attacks with Device Cookies").

A browser that signed in to an account gets a signed cookie naming that account's current
credentials and a random nonce. Its later password checks count against the nonce's own allowance,
not the account's (and all of an account's cookies together have one too), so a stranger's
guessing, which locks the account for browsers without the cookie, does not lock out its owner; and
a stolen cookie has an allowance of its own. A password change retires every cookie issued before
it. Pure code (signing only).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from billing.portal.records import DeviceToken, credential_tag
from billing.portal.tokens import Signer, TokenError
from billing.portal.web import WebRequest

DEVICE_COOKIE = "portal_device"
DEVICE_TTL = 180 * 24 * 3600


class DeviceCookies:
    def __init__(self, keys: Sequence[bytes], *, secure: bool) -> None:
        self._signer = Signer(keys, "device")
        self._secure = "; Secure" if secure else ""

    def issue(self, email: str, password_hash: str, now: float) -> str:
        """The Set-Cookie value of a new device cookie for the account (after a correct password).

        It names the account's current credentials, so a password change or reset retires every
        device cookie issued before it.
        """
        payload = {"a": credential_tag(email, password_hash), "n": secrets.token_urlsafe(16)}
        token = self._signer.sign(payload, now=now, ttl_seconds=DEVICE_TTL)
        return f"{DEVICE_COOKIE}={token}; Path=/api/portal; Max-Age={DEVICE_TTL}; HttpOnly; SameSite=Lax{self._secure}"

    def read(self, req: WebRequest, now: float) -> DeviceToken | None:
        """The request's device cookie if it is genuine and unexpired (the account is checked later)."""
        raw = req.cookies.get(DEVICE_COOKIE, "")
        if not raw:
            return None
        try:
            payload = self._signer.verify(raw, now=now)
        except TokenError:
            return None
        credential, nonce = payload.get("a"), payload.get("n")
        if not isinstance(credential, str) or not isinstance(nonce, str):
            return None
        return DeviceToken(credential, nonce)
