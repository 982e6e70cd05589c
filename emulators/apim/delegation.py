"""Delegation URLs exactly as the APIM developer portal builds them.

sig = base64(HMAC-SHA512(key = base64decode(validationKey), message)), where message is
salt + "\n" + returnUrl (SignIn, SignUp), salt + "\n" + productId + "\n" + userId (Subscribe),
salt + "\n" + subscriptionId (Unsubscribe, Renew), salt + "\n" + userId (ChangePassword,
ChangeProfile, CloseAccount, SignOut). See Microsoft's "How to delegate user registration and
product subscription" (api-management-howto-setup-delegation).

Written independently of billing/portal/delegation.py on purpose: the emulator plays APIM, and a
shared implementation would let a mistake in the app's signing pass every test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import quote, urlencode

_FIELDS = {
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
OPERATIONS = tuple(_FIELDS)


def signature(key_b64: str, salt: str, *values: str) -> str:
    key = base64.b64decode(key_b64)
    message = "\n".join((salt, *values)).encode("utf-8")
    return base64.b64encode(hmac.new(key, message, hashlib.sha512).digest()).decode("ascii")


def delegation_url(base_url: str, key_b64: str, operation: str, *, salt: str | None = None, **values: str) -> str:
    """`{base_url}?operation=...&<fields>&salt=...&sig=...` for one delegated operation."""
    if operation not in _FIELDS:
        raise ValueError(f"unknown delegation operation {operation!r}; one of {', '.join(OPERATIONS)}")
    fields = _FIELDS[operation]
    missing = [f for f in fields if not values.get(f)]
    if missing:
        raise ValueError(f"{operation} needs {', '.join(missing)}")
    salt = salt or secrets.token_hex(16)
    query = [("operation", operation), *((f, values[f]) for f in fields), ("salt", salt)]
    query.append(("sig", signature(key_b64, salt, *(values[f] for f in fields))))
    separator = "&" if "?" in base_url else "?"
    return base_url + separator + urlencode(query, quote_via=quote)
