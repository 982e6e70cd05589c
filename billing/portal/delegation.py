"""APIM delegation requests: which fields each operation signs, and checking the signature.

APIM signs every delegated link (Microsoft's "How to delegate user registration and product
subscription"): sig = base64(HMAC-SHA512(key = base64decode(validation key), message)) where the
message is the salt and the operation's fields joined by "\\n". Pure code: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

# Operation -> the query fields that APIM puts in the signed message, in order.
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "SignIn": ("returnUrl",),
    "SignUp": ("returnUrl",),
    "Subscribe": ("productId", "userId"),
    "Unsubscribe": ("subscriptionId",),
    "Renew": ("subscriptionId",),
    "ChangePassword": ("userId",),
    "ChangeProfile": ("userId",),
    "CloseAccount": ("userId",),
    "SignOut": ("userId",),
}
OPERATIONS = tuple(SIGNED_FIELDS)


class DelegationError(Exception):
    """A delegation request that is not what APIM sends; `status` is the HTTP answer (400 or 401)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class DelegationRequest:
    operation: str
    fields: Mapping[str, str]  # the signed fields only, e.g. {"productId": ..., "userId": ...}

    def get(self, name: str) -> str:
        return self.fields[name]


def decode_key(key_b64: str) -> bytes:
    """The validation key's bytes; a key that is not base64 is a configuration error."""
    try:
        key = base64.b64decode(key_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("APIM_DELEGATION_VALIDATION_KEY is not base64 (copy it from the APIM portal)") from exc
    if not key:
        raise ValueError("APIM_DELEGATION_VALIDATION_KEY is empty")
    return key


def signature(key: bytes, salt: str, *values: str) -> str:
    message = "\n".join((salt, *values)).encode("utf-8")
    return base64.b64encode(hmac.new(key, message, hashlib.sha512).digest()).decode("ascii")


def verify(key: bytes, query: Mapping[str, str]) -> DelegationRequest:
    """The request if APIM signed it; DelegationError (401 for a bad signature) otherwise.

    The signature is checked before any field is interpreted, so nothing else runs for a forgery.
    """
    operation = query.get("operation", "")
    if operation not in SIGNED_FIELDS:
        raise DelegationError(
            400, f"unknown delegation operation {operation!r}; expected one of {', '.join(OPERATIONS)}"
        )
    names = SIGNED_FIELDS[operation]
    salt, sig = query.get("salt", ""), query.get("sig", "")
    if not salt or not sig:
        raise DelegationError(401, "the request is not signed: salt and sig are required")
    missing = [n for n in names if not query.get(n)]
    if missing:
        raise DelegationError(401, f"the signed fields {', '.join(missing)} are missing")
    values = [query[n] for n in names]
    expected = signature(key, salt, *values)
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8", "replace")):
        raise DelegationError(401, "the signature does not match: this link was not issued by the developer portal")
    return DelegationRequest(operation, dict(zip(names, values, strict=True)))


def is_relative_return_url(url: str) -> bool:
    """True for a path on the portal itself ("/docs?x=1"), never another site.

    Refused: absolute URLs, scheme-relative "//host", backslashes (browsers read "/\\host" as
    "//host"), control characters, and anything not starting with a single "/".
    """
    if not url.startswith("/") or url.startswith("//"):
        return False
    if "\\" in url or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return False
    # A scheme before the first slash cannot occur once the URL starts with "/", but an encoded
    # "//" or "\\", or an encoded control character (browsers drop tabs and newlines, so "/%09/host"
    # becomes "//host"), could be decoded by the portal: refuse those too.
    lowered = url.lower()
    if any(s in lowered for s in ("%2f%2f", "%5c", "/%2f")):
        return False
    return re.search(r"%(?:[01][0-9a-f]|7f)", lowered) is None


def product_id_from(value: str) -> str:
    """APIM sends the product's name or its id path ("/products/x" or a full resource id)."""
    marker = "/products/"
    index = value.lower().rfind(marker)
    return value[index + len(marker) :] if index >= 0 else value
