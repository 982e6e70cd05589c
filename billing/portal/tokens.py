"""Short-lived signed tokens (sessions, CSRF, form bindings) without another secret.

Keys are derived from the delegation validation key with HMAC and a purpose label, so a token
made for one purpose (e.g. CSRF) is never accepted for another (e.g. a session). A token is
base64url(JSON payload) + "." + base64url(HMAC-SHA256); the payload carries its expiry. Pure code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any


class TokenError(Exception):
    """The token is malformed, forged, for another purpose, or expired."""


def derive_key(master: bytes, purpose: str) -> bytes:
    return hmac.new(master, b"portal-token:" + purpose.encode("utf-8"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, master: bytes, purpose: str) -> None:
        self.purpose = purpose
        self._key = derive_key(master, purpose)

    def sign(self, payload: dict[str, Any], *, now: float, ttl_seconds: int) -> str:
        body = json.dumps({**payload, "exp": int(now) + ttl_seconds}, separators=(",", ":"), sort_keys=True)
        encoded = _b64(body.encode("utf-8"))
        return f"{encoded}.{self._mac(encoded)}"

    def verify(self, token: str, *, now: float) -> dict[str, Any]:
        encoded, dot, mac = token.partition(".")
        if not dot or not encoded or not mac:
            raise TokenError("malformed token")
        if not hmac.compare_digest(self._mac(encoded).encode("ascii"), mac.encode("utf-8", "replace")):
            raise TokenError("bad token signature")
        try:
            payload = json.loads(_unb64(encoded))
        except (ValueError, binascii.Error) as exc:
            raise TokenError("malformed token") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            raise TokenError("malformed token")
        if payload["exp"] <= now:
            raise TokenError("token expired")
        return payload

    def _mac(self, encoded: str) -> str:
        return _b64(hmac.new(self._key, encoded.encode("ascii"), hashlib.sha256).digest())
