"""Short-lived signed tokens (sessions, CSRF, form bindings, device cookies).

They are signed with the portal's own session keys (PORTAL_SESSION_KEYS), not with APIM's delegation
key, so replacing the delegation key signs nobody out. The keys are a ring, newest first: a token is
signed with the newest and accepted under any, so a rotation (new key first, old one kept second
until the longest token it signed has expired) voids nothing. Each key is turned into one per purpose
with HMAC and a label, so a token made for one purpose (e.g. CSRF) is never accepted for another
(e.g. a session). A token is base64url(JSON payload) + "." + base64url(HMAC-SHA256); the payload
carries its expiry. Pure code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

MIN_KEY_BYTES = 32  # 256 bits, as for the delegation key
MAX_KEYS = 3  # the current key and at most two still accepted: a rotation, not a history


class TokenError(Exception):
    """The token is malformed, forged, for another purpose, or expired."""


def derive_key(master: bytes, purpose: str) -> bytes:
    return hmac.new(master, b"portal-token:" + purpose.encode("utf-8"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_session_keys(text: str) -> tuple[bytes, ...]:
    """PORTAL_SESSION_KEYS: base64 keys, newest first, comma-separated; ValueError names what is wrong."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(
            "PORTAL_SESSION_KEYS is empty: set one base64 key of at least 256 bits (openssl rand -base64 64)"
        )
    if len(parts) > MAX_KEYS:
        raise ValueError(
            f"PORTAL_SESSION_KEYS holds {len(parts)} keys: at most {MAX_KEYS} (the new one first, "
            "then the ones still accepted during a rotation)"
        )
    keys = []
    for position, part in enumerate(parts, start=1):
        try:
            key = base64.b64decode(part, validate=True)
        except (ValueError, binascii.Error):
            raise ValueError(f"PORTAL_SESSION_KEYS key {position} is not base64") from None
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(
                f"PORTAL_SESSION_KEYS key {position} has {len(key) * 8} bits: at least {MIN_KEY_BYTES * 8} are needed"
            )
        keys.append(key)
    if len(set(keys)) != len(keys):
        raise ValueError("PORTAL_SESSION_KEYS names the same key twice")
    return tuple(keys)


class Signer:
    """Signs with the first key of the ring and accepts a token signed with any of them."""

    def __init__(self, masters: Sequence[bytes], purpose: str) -> None:
        if not masters:
            raise ValueError("a signer needs at least one key")
        self.purpose = purpose
        self._keys = [derive_key(master, purpose) for master in masters]

    def sign(self, payload: dict[str, Any], *, now: float, ttl_seconds: int) -> str:
        body = json.dumps({**payload, "exp": int(now) + ttl_seconds}, separators=(",", ":"), sort_keys=True)
        encoded = _b64(body.encode("utf-8"))
        return f"{encoded}.{self._mac(self._keys[0], encoded)}"

    def verify(self, token: str, *, now: float) -> dict[str, Any]:
        encoded, dot, mac = token.partition(".")
        if not dot or not encoded or not mac or not encoded.isascii():
            raise TokenError("malformed token")
        given = mac.encode("utf-8", "replace")
        if not any(hmac.compare_digest(self._mac(key, encoded).encode("ascii"), given) for key in self._keys):
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

    @staticmethod
    def _mac(key: bytes, encoded: str) -> str:
        return _b64(hmac.new(key, encoded.encode("ascii"), hashlib.sha256).digest())
